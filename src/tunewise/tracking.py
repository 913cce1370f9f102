"""Experiment tracking through the trackers' own clients (MLflow, TensorBoard, Weights & Biases).

``train.report_to`` names trackers. The Trainer gets them (its integrations log the loss, the
learning rate and its arguments as they happen); tunewise adds what no Trainer knows, once the
run is measured: the config, the before/after metrics with their bootstrap intervals, the
memory estimate next to the measured peak, the trainable parameters, and the model card,
metrics.json and training curve as files. A budget sweep is one parent run with one child run
per point and the planner's recommendation.

- **MLflow**: ``mlflow``'s fluent API and ``MlflowClient``; the store is ``MLFLOW_TRACKING_URI``
  (a server, ``sqlite:///mlflow.db``, ``file:./mlruns``; unset: MLflow's default) and the
  experiment ``MLFLOW_EXPERIMENT_NAME`` (unset: MLflow's default experiment). tunewise opens the
  run before training so the Trainer's MLflow callback logs into the same run.
- **TensorBoard**: ``SummaryWriter`` event files in the run folder's ``runs/`` (or
  ``TENSORBOARD_LOGGING_DIR`` when set), next to the Trainer's.
- **Weights & Biases**: ``wandb.init`` / ``summary`` / ``save`` (not tested here: no account).

Other names transformers knows (``comet_ml``, ``clearml``, ...) go to the Trainer only.
Nothing here is imported until a run names a tracker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunewise.errors import TunewiseError, did_you_mean

if TYPE_CHECKING:
    from rich.console import Console

    from tunewise.config import RunConfig

# name -> (modules that must import: any of them, the exact pip install); the names are transformers' report_to names
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "mlflow": (("mlflow",), 'pip install "tunewise[mlflow]"'),
    "tensorboard": (("tensorboard", "tensorboardX"), 'pip install "tunewise[tensorboard]"'),
    "wandb": (("wandb",), 'pip install "tunewise[wandb]"'),
    "comet_ml": (("comet_ml",), "pip install comet-ml"),
    "neptune": (("neptune",), "pip install neptune"),
    "clearml": (("clearml",), "pip install clearml"),
    "codecarbon": (("codecarbon",), "pip install codecarbon"),
    "dvclive": (("dvclive",), "pip install dvclive"),
    "swanlab": (("swanlab",), "pip install swanlab"),
    "trackio": (("trackio",), "pip install trackio"),
    "dagshub": (("dagshub",), "pip install dagshub mlflow"),
    "azure_ml": (("azureml.core",), "pip install azureml-core"),
}
TENSORBOARD_DIR = "runs"  # in the run folder, as the Trainer names its TensorBoard folder
TRACKERS_FILE = "tunewise-trackers.json"  # in a run's work folder: the runs --resume continues


# ---------------------------------------------------------------------------------------------
# config: which trackers, and are they installed

def check_report_to(value: Any) -> list[str]:
    """``train.report_to`` as a list of tracker names: ``none``/empty -> ``[]``, ``"a,b"`` -> ``["a", "b"]``.

    Raises:
        TunewiseError: an unknown name (with the closest known one), or ``all``.
    """
    if value is None:
        return []
    names = [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)
    out: list[str] = []
    for name in names:
        if not isinstance(name, str):
            raise TunewiseError(f"train.report_to: expected tracker names, got {name!r}")
        name = name.strip().lower()
        if name in ("", "none"):
            continue
        if name == "all":
            raise TunewiseError("train.report_to: 'all' depends on what happens to be installed; name the trackers, "
                                "e.g. [mlflow, tensorboard]")
        if name not in TRACKERS:
            raise TunewiseError(f"train.report_to: unknown tracker '{name}'{did_you_mean(name, list(TRACKERS))}; "
                                f"known: {', '.join(TRACKERS)} (or none)")
        if name not in out:
            out.append(name)
    return out


def _installed(name: str) -> bool:
    modules, _ = TRACKERS[name]
    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):  # a parent package missing (azureml.core)
            continue
    return False


def check_installed(report_to: list[str]) -> None:
    """Fail before any work when a named tracker is not installed.

    Raises:
        TunewiseError: one line with the exact ``pip install``.
    """
    for name in report_to:
        if not _installed(name):
            raise TunewiseError(f"train.report_to: {name} is not installed; {TRACKERS[name][1]} "
                                f"(or drop {name} from train.report_to)")


# ---------------------------------------------------------------------------------------------
# values: flat names every tracker accepts

def clean_key(key: str) -> str:
    """A metric or parameter name MLflow accepts (letters, digits, ``_-. :/``): ``mrr@20`` -> ``mrr_20``,
    as the Trainer's MLflow callback names the metrics it logs into the same run."""
    return re.sub(r"[^0-9A-Za-z_\-. :/]", "_", key)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def run_params(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as ``config.<dotted key>`` parameters (values as text)."""
    return {clean_key(f"config.{k}"): str(v)[:6000] for k, v in _flatten(config).items()}


def run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """What the Trainer does not know, from a run's metrics.json, as flat numeric metrics.

    ``before/<m>``, ``after/<m>``, ``gain/<m>`` with ``gain/<m>/low|high`` (the paired
    bootstrap interval), ``relative_gain/<m>`` with its interval, ``p_value/<m>``;
    ``memory/estimated_peak_mib`` and ``memory/measured_peak_mib``; ``params/trainable`` and
    ``params/total``; ``train/*`` and ``eval/*`` seconds.
    """
    out: dict[str, Any] = {}
    for phase in ("before", "after"):
        for name, value in (metrics.get(phase) or {}).items():
            out[f"{phase}/{name}"] = value
    for name, u in (metrics.get("uncertainty") or {}).items():
        if not isinstance(u, dict):
            continue
        out.update({f"gain/{name}": u.get("difference"), f"gain/{name}/low": u.get("abs_low"),
                    f"gain/{name}/high": u.get("abs_high"), f"relative_gain/{name}": u.get("relative"),
                    f"relative_gain/{name}/low": u.get("rel_low"), f"relative_gain/{name}/high": u.get("rel_high"),
                    f"p_value/{name}": u.get("p_value")})
    memory = metrics.get("memory") or {}
    if memory.get("estimated_bytes") is not None:
        out["memory/estimated_peak_mib"] = memory["estimated_bytes"] / 2**20
    if memory.get("measured_bytes", memory.get("peak_bytes")) is not None:
        out["memory/measured_peak_mib"] = memory.get("measured_bytes", memory.get("peak_bytes")) / 2**20
    out["memory/estimate_error_pct"] = memory.get("error_pct")
    strategy = metrics.get("strategy") or {}
    out["params/trainable"] = strategy.get("trainable_params")
    out["params/total"] = strategy.get("total_params")
    out["params/trainable_fraction"] = strategy.get("trainable_fraction")
    train = metrics.get("train") or {}
    for key in ("seconds", "samples_per_second", "steps", "epochs", "examples"):
        out[f"train/{key}"] = train.get(key)
    for key, value in (metrics.get("eval") or {}).items():
        out[f"eval/{key}"] = value
    return {clean_key(k): v for k, v in ((k, _finite(v)) for k, v in out.items()) if v is not None}


def run_tags(metrics: dict[str, Any]) -> dict[str, str]:
    strategy = metrics.get("strategy") or {}
    tags = {"tunewise.task": metrics.get("task"), "tunewise.base_model": metrics.get("base_model"),
            "tunewise.strategy": strategy.get("name"), "tunewise.primary_metric": metrics.get("primary_metric")}
    return {k: str(v) for k, v in tags.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# one fine-tuning run

def history_recorder() -> Any:
    """A TrainerCallback that keeps the Trainer's ``state.log_history`` (the training curve).

    Every task hands tunewise's callbacks to its Trainer, so the history comes back without
    any task returning its Trainer.
    """
    from transformers.trainer_callback import TrainerCallback

    class LogHistory(TrainerCallback):
        """Copies ``state.log_history`` when training ends (``history``: one dict per log)."""

        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []

        def on_train_end(self, args, state, control, **kwargs):  # noqa: D102 - see the class docstring
            self.history = [dict(entry) for entry in state.log_history]

    return LogHistory()


def _summary_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboardX only
        from tensorboardX import SummaryWriter
    return SummaryWriter(log_dir=str(log_dir))


@dataclass
class RunTracker:
    """The trackers of one ``fit``: opened before training (the Trainer logs into the same
    MLflow / W&B run), given the measured metrics at the end (:meth:`finish`), then closed.

    ``seconds`` is the time spent in tunewise's own tracking calls (the overhead to report).
    """

    names: list[str]
    run_dir: Path  # where the run's files are now (the staging folder)
    published: Path  # where they will be (the output folder)
    config: dict[str, Any]
    console: Console | None = None
    seconds: float = 0.0
    recorder: Any = None
    mlflow_run_id: str | None = None
    tensorboard_dir: Path | None = None
    wandb_run: Any = None
    wandb_owned: bool = False
    resume_from: Path | None = None  # an interrupted run's work folder: its tracked runs continue
    _env: dict[str, str | None] = field(default_factory=dict)

    @property
    def callbacks(self) -> list[Any]:
        """Callbacks for the Trainer: the log-history recorder behind the training curve."""
        if self.recorder is None:
            self.recorder = history_recorder()
        return [self.recorder]

    def start(self) -> None:
        began = time.perf_counter()
        name = self.published.name
        if "mlflow" in self.names:
            import mlflow

            try:
                if experiment := os.environ.get("MLFLOW_EXPERIMENT_NAME"):
                    mlflow.set_experiment(experiment)
                earlier = self._earlier_run("mlflow_run_id")
                if earlier is not None:  # --resume: the interrupted attempt's run goes on (one run, one curve)
                    run = mlflow.start_run(run_id=earlier, nested=mlflow.active_run() is not None)
                else:
                    run = mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None)
            except mlflow.exceptions.MlflowException as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise TunewiseError(f"train.report_to: mlflow could not open a run in {mlflow.get_tracking_uri()} ({first}); "
                                    "check MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME") from None
            self.mlflow_run_id = run.info.run_id
        if "tensorboard" in self.names:
            # the Trainer's TensorBoard callback reads this variable; a user's own value wins
            self._env["TENSORBOARD_LOGGING_DIR"] = os.environ.get("TENSORBOARD_LOGGING_DIR")
            self.tensorboard_dir = Path(self._env["TENSORBOARD_LOGGING_DIR"] or self.run_dir / TENSORBOARD_DIR)
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.tensorboard_dir)
        if "wandb" in self.names:  # not tested here (no account): the package's documented calls only
            import wandb

            self.wandb_owned = wandb.run is None  # a run the caller opened is theirs to finish
            self.wandb_run = wandb.run or wandb.init(name=name, config={"tunewise": self.config})
        self.seconds += time.perf_counter() - began

    def _earlier_run(self, key: str) -> str | None:
        """The interrupted attempt's run id (``--resume``), if its tracker still knows it."""
        if self.resume_from is None or not (self.resume_from / TRACKERS_FILE).is_file():
            return None
        try:
            value = json.loads((self.resume_from / TRACKERS_FILE).read_text(encoding="utf-8")).get(key)
        except ValueError:
            return None
        if not isinstance(value, str) or not value:
            return None
        if key == "mlflow_run_id":
            import mlflow

            try:
                mlflow.MlflowClient().get_run(value)
            except mlflow.exceptions.MlflowException:  # another tracking store, or the run was deleted: start a new one
                return None
        return value

    def remember(self, work_folder: Path | None) -> None:
        """Note the tracked runs in the run's work folder, so that ``--resume`` continues them."""
        if work_folder is None or self.mlflow_run_id is None:
            return
        from tunewise.files import write_json

        write_json(Path(work_folder) / TRACKERS_FILE, {"mlflow_run_id": self.mlflow_run_id})

    def finish(self, metrics: dict[str, Any]) -> None:
        """Write the training curve into the run folder and log the run's numbers and files.

        Args:
            metrics: what was written to the run's ``metrics.json`` (already in ``run_dir``).
        """
        from tunewise.report.curves import CURVE_FILE, plot_training_curve

        history = self.recorder.history if self.recorder is not None else []
        plot_training_curve(history, self.run_dir / CURVE_FILE, metric=metrics.get("primary_metric"))
        if not self.names:
            return
        began = time.perf_counter()
        values = run_metrics(metrics)
        step = int((metrics.get("train") or {}).get("steps") or 0)
        files = [self.run_dir / f for f in ("metrics.json", "config.yaml", "README.md", CURVE_FILE)]
        files = [f for f in files if f.is_file()]
        if self.mlflow_run_id is not None:
            import mlflow

            mlflow.log_params(run_params(self.config))
            mlflow.log_metrics(values, step=step)
            mlflow.set_tags(run_tags(metrics))
            for path in files:
                mlflow.log_artifact(str(path))
        if self.tensorboard_dir is not None:
            import yaml

            writer = _summary_writer(self.tensorboard_dir)
            try:
                for key, value in values.items():
                    writer.add_scalar(f"tunewise/{key}", value, step)
                writer.add_text("tunewise/config", "```yaml\n" + yaml.safe_dump(self.config, sort_keys=False) + "```", step)
            finally:
                writer.close()
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)
            self.wandb_run.config.update({"tunewise": self.config}, allow_val_change=True)
            for path in files:
                self.wandb_run.save(str(path), base_path=str(self.run_dir), policy="now")
        self.seconds += time.perf_counter() - began
        if self.console is not None:
            self.console.print(f"tracking: {self.where()} ({self.seconds:.1f} s)", soft_wrap=True, markup=False, highlight=False)

    def where(self) -> str:
        """Where the run went, for the console: MLflow run and store, TensorBoard folder, W&B URL."""
        parts = []
        if self.mlflow_run_id is not None:
            import mlflow

            parts.append(f"mlflow run {self.mlflow_run_id} in {mlflow.get_tracking_uri()}")
        if self.tensorboard_dir is not None:
            folder = self.tensorboard_dir
            if folder.is_relative_to(self.run_dir):
                folder = self.published / folder.relative_to(self.run_dir)
            parts.append(f"tensorboard --logdir {folder}")
        if self.wandb_run is not None:
            parts.append(f"wandb {getattr(self.wandb_run, 'url', None) or self.wandb_run.id}")
        return "; ".join(parts)

    def close(self, status: str) -> None:
        """End the runs tunewise opened (``FINISHED``, ``FAILED`` or ``KILLED``) and restore the environment."""
        began = time.perf_counter()
        for key, value in self._env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._env.clear()
        if self.mlflow_run_id is not None:
            import mlflow

            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.mlflow_run_id:
                mlflow.end_run(status=status)
            else:
                mlflow.MlflowClient().set_terminated(self.mlflow_run_id, status=status)
        if self.wandb_run is not None and self.wandb_owned:
            self.wandb_run.finish(exit_code=0 if status == "FINISHED" else 1)
        self.seconds += time.perf_counter() - began


@contextlib.contextmanager
def track_fit(config: RunConfig, run_dir: Path, published: Path, console: Console | None = None, *,
              resume_from: Path | None = None) -> Iterator[RunTracker]:
    """Open the run's trackers for the block; ``tracker.finish(metrics)`` inside it logs the results.

    With no tracker named, only the training curve is written (by ``finish``).

    Args:
        run_dir: the folder the run's files are written to (the staging folder).
        published: the output folder they will be published as.
        console: where the line naming the tracked run goes.
        resume_from: ``--resume``: the interrupted run's work folder; the MLflow run it opened
            continues (:meth:`RunTracker.remember` noted it there).
    """
    tracker = RunTracker(list(config.train.report_to), Path(run_dir), Path(published), config.to_dict(), console,
                         resume_from=resume_from)
    status = "FAILED"
    try:
        tracker.start()
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close(status)


# ---------------------------------------------------------------------------------------------
# a budget sweep: one parent run, one child run per point

def sweep_trackers(config: RunConfig) -> tuple[RunConfig, list[str]]:
    """Split a sweep's trackers from the config its points train with.

    The points' Trainers report to nothing (dozens of short runs, in temporary folders, maybe
    on Ray workers); :func:`log_sweep` logs the sweep once it is measured. Leaving the
    trackers out also keeps them out of the result store's fingerprint: adding MLflow to a
    sweep does not make its finished points stale.

    Returns:
        (the config without ``train.report_to``, the tracker names).

    Raises:
        TunewiseError: a named tracker is not installed (before any work).
    """
    import dataclasses

    names = list(config.train.report_to)
    check_installed(names)
    if not names:
        return config, []
    return dataclasses.replace(config, train=dataclasses.replace(config.train, report_to=[])), names


def _point_name(point: Any) -> str:
    if point.kind == "time":
        return f"time curve: {point.size} items, seed {point.seed}"
    return f"{point.size} items, seed {point.seed}"


def _sweep_metrics(result: Any) -> list[tuple[str, float, int]]:
    """(key, value, step) of the sweep's summaries: per size (step = items) and per epoch of the time curve."""
    rows: list[tuple[str, Any, int]] = [("metric_before", result.metric_before, 0)]
    for r in result.data_summary:
        rows += [("data/mean_metric", r.mean_metric, r.size), ("data/mean_improvement", r.mean_rel_improvement, r.size),
                 ("data/std_improvement", r.std, r.size), ("data/roi_per_item", r.roi, r.size),
                 ("data/marginal_roi_per_item", r.marginal_roi, r.size), ("data/train_seconds", r.mean_seconds, r.size)]
    for i, r in enumerate(result.time_summary):
        rows += [("time/mean_metric", r.mean_metric, i), ("time/train_seconds", r.mean_seconds, i),
                 ("time/epoch", r.epoch, i)]
    return [(clean_key(k), v, step) for k, v, step in ((k, _finite(v), s) for k, v, s in rows) if v is not None]


def _point_values(point: Any) -> dict[str, float]:
    values = {"metric_before": point.metric_before, "metric_after": point.metric_after,
              "train_seconds": point.train_seconds, "eval_seconds": point.eval_seconds}
    for key in ("steps", "epochs", "samples_per_second"):
        values[key] = (point.extra or {}).get(key)
    for name, value in ((point.extra or {}).get("metrics") or {}).items():
        values[f"after/{name}"] = value
    return {clean_key(k): v for k, v in ((k, _finite(v)) for k, v in values.items()) if v is not None}


def log_sweep(names: list[str], config: RunConfig, result: Any, console: Console | None = None) -> float:
    """Log a finished budget sweep: a parent run (config, summaries per size and epoch, the
    recommendation, the report's files) and one child run per point (a time curve: one child
    with a value per evaluation step).

    Args:
        names: the trackers (from :func:`sweep_trackers`).
        config: the sweep's config.
        result: the :class:`~tunewise.budget.results.BudgetResult`.
        console: where the line naming the tracked run goes.

    Returns:
        Seconds spent logging.
    """
    if not names:
        return 0.0
    began = time.perf_counter()
    out = Path(result.output_dir)
    params = run_params(config.to_dict())
    summary = _sweep_metrics(result)
    recommendation = result.recommendation.text
    groups: dict[tuple[str, int, int, int], list[Any]] = {}
    for i, p in enumerate(result.points):  # data points: one child each; a time run's points: one child together
        groups.setdefault((p.kind, p.size, p.seed, -1 if p.kind == "time" else i), []).append(p)
    files = [f for f in (out / "summary.json", out / "report.html", *sorted(out.glob("*.png"))) if f.is_file()]
    parts = []
    if "mlflow" in names:
        import mlflow
        from mlflow.entities import Metric, Param, RunTag

        if experiment := os.environ.get("MLFLOW_EXPERIMENT_NAME"):
            mlflow.set_experiment(experiment)
        with mlflow.start_run(run_name=f"budget: {out.name}", nested=mlflow.active_run() is not None) as parent:
            mlflow.log_params(params)
            client = mlflow.MlflowClient()
            now = int(time.time() * 1000)
            client.log_batch(parent.info.run_id, metrics=[Metric(k, v, now, s) for k, v, s in summary])
            mlflow.set_tags({"tunewise.task": config.task, "tunewise.kind": "budget sweep", "tunewise.metric": result.metric,
                             "tunewise.recommendation": recommendation[:5000], "tunewise.backend": result.backend})
            mlflow.log_text(recommendation, "recommendation.txt")
            for path in files:
                mlflow.log_artifact(str(path))
            experiment_id = parent.info.experiment_id
            for points in groups.values():
                first = points[0]
                child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id},
                                          run_name=_point_name(first))
                metrics = []
                for p in points:
                    step = int((p.extra or {}).get("step") or 0) if p.kind == "time" else 0
                    metrics += [Metric(k, v, now, step) for k, v in _point_values(p).items()]
                    if p.epoch is not None:
                        metrics.append(Metric("epoch", float(p.epoch), now, step))
                client.log_batch(child.info.run_id, metrics=metrics,
                                 params=[Param("kind", first.kind), Param("size", str(first.size)), Param("seed", str(first.seed))],
                                 tags=[RunTag("tunewise.kind", "budget point")])
                client.set_terminated(child.info.run_id)
            parts.append(f"mlflow run {parent.info.run_id} with {len(groups)} child runs in {mlflow.get_tracking_uri()}")
    if "tensorboard" in names:
        folder = Path(os.environ.get("TENSORBOARD_LOGGING_DIR") or out / TENSORBOARD_DIR)
        writer = _summary_writer(folder)
        try:
            for key, value, step in summary:
                writer.add_scalar(f"budget/{key}", value, step)
            for p in result.points:
                step = int((p.extra or {}).get("step") or 0) if p.kind == "time" else p.size
                writer.add_scalar(f"points/{p.kind}/seed{p.seed}/metric_after", p.metric_after, step)
            writer.add_text("budget/recommendation", recommendation)
        finally:
            writer.close()
        parts.append(f"tensorboard --logdir {folder}")
    if "wandb" in names:  # not tested here (no account)
        import wandb

        run = wandb.init(name=f"budget: {out.name}", job_type="budget", config={"tunewise": config.to_dict()}, reinit=True)
        table = wandb.Table(columns=["kind", "size", "seed", "epoch", "metric_after", "train_seconds"],
                            data=[[p.kind, p.size, p.seed, p.epoch, p.metric_after, p.train_seconds] for p in result.points])
        run.log({"points": table})
        run.summary.update({k: v for k, v, _ in summary if not k.startswith(("data/", "time/"))})
        run.summary["recommendation"] = recommendation
        run.finish()
        parts.append(f"wandb {getattr(run, 'url', None) or run.id}")
    seconds = time.perf_counter() - began
    if console is not None:
        console.print(f"tracking: {'; '.join(parts)} ({seconds:.1f} s)", soft_wrap=True, markup=False, highlight=False)
    return seconds
