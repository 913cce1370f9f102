"""Checkpoints that survive a kill, and resuming from them (``tunewise fit --resume``).

A run's output folder is staged (:func:`tunewise.outputs.staged_dir`): nothing that looks like
a result appears until the run has finished. Checkpoints cannot live in the staging folder (it
is removed when a run fails), so a run that checkpoints trains in a hidden *work folder* beside
its output folder, ``.<name>.checkpoints/``. It holds:

| file | written | what for |
|---|---|---|
| ``tunewise-run.json`` | when training starts | the run's config fingerprint (``--resume`` with a changed config is refused) |
| ``checkpoint-N/`` | by the Trainer (``save_strategy``) | weights (safetensors), optimizer, scheduler, RNG states, trainer state |
| ``checkpoint-N/tunewise-checkpoint.json`` | after the Trainer wrote the rest | marks it complete: file sizes, step, seconds |
| ``heartbeat.json`` | at most every few seconds while training | how far the killed run got: the seconds lost |

The checkpoints are the HF Trainer's own (``resume_from_checkpoint`` restores the optimizer,
the scheduler, the RNG states and the data position); the Trainer writes optimizer, scheduler and
RNG states with ``torch.save`` and loads them back with ``torch.load(weights_only=True)``, which
unpickles tensors and plain containers only, never code. Weights are safetensors.

The Trainer writes a checkpoint in place, so a kill can leave a partial one: a checkpoint
without its ``tunewise-checkpoint.json``, with a file of another size or an unreadable
safetensors header is skipped (and removed), and the one before it is used.

A training loop opts in by its ``workdir``: :func:`is_work_folder` is true only for a folder
:func:`open_work_folder` made, so the budget planner's temporary folders never checkpoint.
:mod:`tunewise.tasks.training` turns that into Trainer arguments (:func:`checkpoint_kwargs`)
and resumes (:func:`train_resumable`); every task goes through them.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.files import write_json

RUN_FILE = "tunewise-run.json"
DONE_FILE = "tunewise-checkpoint.json"
HEARTBEAT_FILE = "heartbeat.json"
HEARTBEAT_SECONDS = 5.0  # how often a training run notes how far it got (the seconds lost are exact to this)
# Options that may change between a killed run and its resumption: they do not change what is trained.
RESUME_FREE_KEYS = ("overwrite", "train.checkpoint_every", "train.keep_checkpoints", "train.device", "train.check_memory",
                    "train.cpu_allocator", "train.report_to", "eval.examples")


@dataclass(frozen=True)
class Every:
    """``train.checkpoint_every`` parsed: ``epoch``, ``steps`` (N), ``minutes`` (N) or ``off``."""

    unit: str
    value: float = 0.0

    @property
    def text(self) -> str:
        if self.unit == "steps":
            return str(int(self.value))
        if self.unit == "minutes":
            return f"{self.value:g}min"
        return self.unit


def parse_every(value: Any) -> Every:
    """Parse ``train.checkpoint_every``: ``epoch``, ``off``, a number of steps or ``<N>min``.

    Raises:
        TunewiseError: anything else, in one line naming the option.
    """
    if value is False:  # YAML reads a bare `off` (or `no`) as false
        return Every("off")
    text = str(value).strip().lower()
    if text in ("epoch", "off"):
        return Every(text)
    if re.fullmatch(r"\d+", text) and int(text) > 0:
        return Every("steps", int(text))
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:min|m|minutes?)", text)
    if match and float(match.group(1)) > 0:
        return Every("minutes", float(match.group(1)))
    raise TunewiseError(f"train.checkpoint_every: '{value}' is not epoch, off, a number of steps (e.g. 500) "
                        "or minutes (e.g. 10min)")


def work_folder(output_dir: str | Path) -> Path:
    """The hidden folder beside ``output_dir`` where a run's checkpoints live until it finishes."""
    out = Path(output_dir).expanduser()
    return out.parent / f".{out.name}.checkpoints"


def is_work_folder(path: str | Path | None) -> bool:
    """True for a folder :func:`open_work_folder` made (a training loop checkpoints there)."""
    return path is not None and (Path(path) / RUN_FILE).is_file()


# ----------------------------------------------------------------------------------------
# What may not change between a killed run and its resumption


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("columns", "strategy"):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _stamp(path: str) -> str:
    """Size and modification time of a data file (a folder: of its files): cheap, and a changed file shows."""
    p = Path(path).expanduser()
    if p.is_file():
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        return f"{len(files)}:{sum(f.stat().st_size for f in files)}:{max((f.stat().st_mtime_ns for f in files), default=0)}"
    return "missing"


def config_fingerprint(config: Any) -> dict[str, Any]:
    """Every config key that changes what is trained (dotted, JSON-safe), and the data files' stamps."""
    flat = {k: v for k, v in _flat(json.loads(json.dumps(config.to_dict(), default=str))).items()
            if k not in RESUME_FREE_KEYS}
    for key in ("data.train", "data.eval_queries", "data.eval_corpus", "data.eval_qrels"):
        if flat.get(key):
            flat[f"{key} (file contents)"] = _stamp(str(flat[key]))
    return flat


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs (or is only on one side)."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            if key.endswith("(file contents)"):
                lines.append(f"{key.removesuffix(' (file contents)')} (the file changed)")
            else:
                lines.append(f"{key}: {old.get(key, '<unset>')!r} -> {new.get(key, '<unset>')!r}")
    return lines


# ----------------------------------------------------------------------------------------
# Which checkpoint to resume from


def _step(path: Path) -> int:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def check_checkpoint(path: Path) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (None: it is complete)."""
    done = path / DONE_FILE
    if not done.is_file():
        return "partial (its writing was interrupted)"
    try:
        record = json.loads(done.read_text())
        files = dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {DONE_FILE}"
    for name, size in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} were written"
        if name.endswith(".safetensors"):
            try:
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as handle:
                    handle.keys()
            except Exception as err:  # noqa: BLE001 - any failure to parse the header means corrupt
                return f"{name} is not readable safetensors ({str(err).splitlines()[0][:80]})"
        if name.endswith(".json"):
            try:
                json.loads(f.read_text())
            except (OSError, ValueError):
                return f"{name} is not valid JSON"
    return None


@dataclass
class ResumePoint:
    """The checkpoint a run continues from, and what the interruption cost."""

    checkpoint: Path | None
    step: int = 0
    epoch: float = 0.0
    train_seconds: float = 0.0  # training seconds the checkpoint holds (all earlier attempts)
    seconds_lost: float = 0.0  # training seconds the killed run spent after it (redone now)
    skipped: list[str] = field(default_factory=list)  # one line per unusable checkpoint

    def as_dict(self, attempt: int) -> dict[str, Any]:
        """metrics.json ``resumed``."""
        return {"from_step": self.step, "from_epoch": round(self.epoch, 4), "attempt": attempt,
                "train_seconds_before": round(self.train_seconds, 3), "seconds_lost": round(self.seconds_lost, 3),
                "seconds_lost_note": f"training redone after the last checkpoint, to within {HEARTBEAT_SECONDS:g} s; "
                                     "start-up (loading, the 'before' evaluation) is not counted",
                "skipped_checkpoints": self.skipped}


def latest_checkpoint(folder: Path, *, remove_broken: bool = True) -> ResumePoint:
    """The newest complete checkpoint in ``folder``; broken newer ones are listed (and removed)."""
    point = ResumePoint(None)
    for path in sorted(folder.glob("checkpoint-*"), key=_step, reverse=True):
        why = check_checkpoint(path)
        if why is not None:
            point.skipped.append(f"{path.name}: {why}")
            if remove_broken:
                shutil.rmtree(path, ignore_errors=True)
            continue
        record = json.loads((path / DONE_FILE).read_text())
        point.checkpoint, point.step = path, int(record.get("step", _step(path)))
        point.epoch, point.train_seconds = float(record.get("epoch", 0.0)), float(record.get("train_seconds", 0.0))
        break
    beat = _read_json(folder / HEARTBEAT_FILE)
    if point.checkpoint is not None and beat and int(beat.get("step", 0)) >= point.step:
        point.seconds_lost = max(0.0, float(beat.get("train_seconds", 0.0)) - point.train_seconds)
    elif point.checkpoint is None and beat:
        point.seconds_lost = float(beat.get("train_seconds", 0.0))
    return point


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------------------
# The run's side: refuse early, open the folder before training, remove it after success


@dataclass
class Resume:
    """What ``fit`` decided about checkpoints before any work (see :func:`plan_resume`)."""

    folder: Path
    enabled: bool  # train.checkpoint_every is not off
    point: ResumePoint | None = None  # set when continuing
    attempt: int = 1
    notes: list[str] = field(default_factory=list)  # one line each, for the console

    @property
    def resumed(self) -> bool:
        return self.point is not None and self.point.checkpoint is not None


def plan_resume(output_dir: Path, config: Any, *, resume: bool, overwrite: bool) -> Resume:
    """Decide, before any work, whether a run starts over or continues from a checkpoint.

    Args:
        output_dir: the run's output folder (its work folder is beside it).
        config: the run config (its fingerprint must match the checkpoints').
        resume: ``--resume``: continue from the last complete checkpoint; with none, start over (and
            say so), so that a job script can always pass it.
        overwrite: ``--overwrite``: discard an interrupted run's checkpoints and start over.

    Raises:
        TunewiseError: checkpoints of an interrupted run exist and neither flag says what to do; or
            ``--resume`` with a config that differs from theirs (the changed keys are named).
    """
    folder = work_folder(output_dir)
    plan = Resume(folder, parse_every(config.train.checkpoint_every).unit != "off")
    run = _read_json(folder / RUN_FILE)
    point = latest_checkpoint(folder, remove_broken=False) if folder.is_dir() else ResumePoint(None)
    if point.checkpoint is None:
        if resume:
            plan.notes.append(f"--resume: no complete checkpoint in {folder}; starting from the beginning")
        return plan
    if not resume:
        if overwrite:
            plan.notes.append(f"--overwrite: discarding the checkpoints of an interrupted run in {folder}")
            return plan
        raise TunewiseError(f"output_dir: an interrupted run left checkpoints in {folder} (last: step {point.step}, "
                            f"epoch {point.epoch:g}); pass --resume to continue it, or --overwrite to start over")
    if run is None or "fingerprint" not in run:
        raise TunewiseError(f"--resume: {folder / RUN_FILE} is missing or unreadable, so the checkpoints cannot be "
                            "matched to this config; pass --overwrite to start over")
    changed = changed_keys(run["fingerprint"], config_fingerprint(config))
    if changed:
        shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise TunewiseError(f"--resume: the config differs from the interrupted run's ({shown}); resume with the same "
                            "config, or pass --overwrite instead of --resume to start over")
    plan.point = latest_checkpoint(folder, remove_broken=True)  # now remove the broken ones
    plan.attempt = int(run.get("attempt", 1)) + 1
    plan.notes += [f"checkpoint {line}; using the one before it" for line in plan.point.skipped]
    plan.notes.append(f"resuming from step {plan.point.step} (epoch {plan.point.epoch:g}) in {folder}; "
                      f"{plan.point.seconds_lost:.0f} s of training are redone")
    return plan


def open_work_folder(plan: Resume, config: Any) -> Path | None:
    """Make (or re-open) the work folder just before training; None when checkpoints are off.

    Anything of another, abandoned run there is removed unless this run continues from it.
    """
    if not plan.enabled and not plan.resumed:
        remove_work_folder(plan.folder)
        return None
    if not plan.resumed:
        remove_work_folder(plan.folder)
    plan.folder.mkdir(parents=True, exist_ok=True)
    write_json(plan.folder / RUN_FILE, {"fingerprint": config_fingerprint(config), "attempt": plan.attempt,
                                        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return plan.folder


def remove_work_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------
# The training loop's side (a TrainerCallback)


def mark_complete(path: Path, *, step: int, epoch: float, train_seconds: float) -> None:
    """Write ``tunewise-checkpoint.json`` into a checkpoint the Trainer has finished writing."""
    files = {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file() and f.name != DONE_FILE}
    write_json(path / DONE_FILE, {"step": step, "epoch": epoch, "train_seconds": round(train_seconds, 3),
                                  "saved_at": time.time(), "files": files})


@functools.cache
def _clock_class() -> type:
    # transformers' TrainerCallback imports its trainer stack: built on first use (see tasks.divergence)
    from transformers import TrainerCallback

    class CheckpointClock(TrainerCallback):
        """Marks each checkpoint complete, notes progress for the seconds lost, saves every N minutes."""

        def __init__(self, folder: Path, every: Every, seconds_before: float) -> None:
            self.folder, self.every, self.before = folder, every, seconds_before
            self.start = self.last_beat = self.last_save = time.monotonic()

        def seconds(self) -> float:
            return self.before + time.monotonic() - self.start

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = self.last_beat = self.last_save = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.monotonic()
            if now - self.last_beat >= HEARTBEAT_SECONDS and state.is_world_process_zero:
                self.last_beat = now
                write_json(self.folder / HEARTBEAT_FILE, {"step": state.global_step, "train_seconds": round(self.seconds(), 3)})
            if self.every.unit == "minutes" and now - self.last_save >= self.every.value * 60:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last_save = time.monotonic()
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if path.is_dir() and args.should_save:
                mark_complete(path, step=state.global_step, epoch=float(state.epoch or 0.0), train_seconds=self.seconds())
                write_json(self.folder / HEARTBEAT_FILE, {"step": state.global_step, "train_seconds": round(self.seconds(), 3)})

    return CheckpointClock


def checkpoint_clock(folder: Path, every: Every, seconds_before: float) -> Any:
    """The :class:`CheckpointClock` TrainerCallback for a work folder."""
    return _clock_class()(folder, every, seconds_before)
