"""Experiment tracking: a real local MLflow store (sqlite) and TensorBoard event files, read back."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import tunewise
from tunewise import tracking
from tunewise.config import load_config
from tunewise.errors import TunewiseError


@pytest.fixture()
def mlflow_store(tmp_path, monkeypatch):
    """A fresh sqlite MLflow store with an experiment whose artifacts stay under tmp_path."""
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("tunewise-test", artifact_location=str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tunewise-test")
    client = mlflow.MlflowClient(uri)
    yield client, client.get_experiment_by_name("tunewise-test").experiment_id
    mlflow.set_tracking_uri(None)


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def config(tiny_st_model, pairs_file, tmp_path, *extra: str):
    return load_config(None, [f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}",
                              "train.epochs=2", "train.batch_size=8", "train.learning_rate=1e-3", "eval.examples=1",
                              "eval.resamples=200", *extra])


# ---- config


@pytest.mark.parametrize(("value", "expected"), [
    (None, []), ("none", []), ([], []), ("mlflow", ["mlflow"]), ("mlflow, TensorBoard", ["mlflow", "tensorboard"]),
    (["tensorboard", "mlflow", "tensorboard"], ["tensorboard", "mlflow"]),
])
def test_report_to_is_a_list_of_tracker_names(value, expected):
    assert tracking.check_report_to(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("mlfow", "unknown tracker 'mlfow' (did you mean 'mlflow'?)"),
    ("all", "name the trackers"),
    ([3], "expected tracker names"),
])
def test_bad_report_to_is_one_line_naming_the_key(value, message):
    with pytest.raises(TunewiseError, match="train.report_to") as err:
        tracking.check_report_to(value)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_tracker_names_are_the_trainer_s_report_to_names():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(tracking.TRACKERS) <= set(INTEGRATION_TO_CALLBACK)


def test_config_key_and_override():
    cfg = load_config(None, ["train.report_to=[mlflow,tensorboard]"])
    assert cfg.train.report_to == ["mlflow", "tensorboard"]
    assert load_config(None).train.report_to == []


def test_a_sweep_s_points_report_to_nothing_and_keep_their_fingerprint():
    cfg = load_config(None, ["train.report_to=tensorboard"])
    stripped, names = tracking.sweep_trackers(cfg)
    assert names == ["tensorboard"] and stripped.train.report_to == []
    assert stripped.to_dict() == load_config(None).to_dict()  # the same store fingerprint as without a tracker
    assert cfg.train.report_to == ["tensorboard"]  # the caller's config is left alone


def test_metrics_flatten_intervals_memory_and_parameters():
    metrics = {"before": {"mrr@20": 0.25}, "after": {"mrr@20": 0.45, "nan": float("nan")},
               "uncertainty": {"mrr@20": {"difference": 0.2, "abs_low": 0.1, "abs_high": 0.3, "relative": 0.8,
                                          "rel_low": 0.4, "rel_high": 1.3, "p_value": 0.001}},
               "memory": {"estimated_bytes": 3 * 2**20, "measured_bytes": 4 * 2**20, "error_pct": -25.0},
               "strategy": {"trainable_params": 10, "total_params": 40, "trainable_fraction": 0.25},
               "train": {"seconds": 2.5, "steps": 12}, "eval": {"seconds_before": 1.0}}
    values = tracking.run_metrics(metrics)
    assert values["before/mrr_20"] == 0.25 and values["after/mrr_20"] == 0.45 and "after/nan" not in values
    assert (values["gain/mrr_20/low"], values["gain/mrr_20"], values["gain/mrr_20/high"]) == (0.1, 0.2, 0.3)
    assert (values["relative_gain/mrr_20/low"], values["relative_gain/mrr_20/high"]) == (0.4, 1.3)
    assert values["memory/estimated_peak_mib"] == 3.0 and values["memory/measured_peak_mib"] == 4.0
    assert values["params/trainable"] == 10 and values["params/total"] == 40 and values["train/steps"] == 12


# ---- bad input: a tracker that is not installed


def test_a_tracker_that_is_not_installed_stops_fit_before_any_work(tiny_st_model, pairs_file, tmp_path, monkeypatch):
    from tunewise.cli.app import app

    monkeypatch.setitem(tracking.TRACKERS, "mlflow", (("tunewise_no_such_module",), 'pip install "tunewise[mlflow]"'))
    for command in (["fit"], ["budget", "--sizes", "12,24", "--seeds", "1"]):
        result = CliRunner().invoke(app, [*command, "--train", str(pairs_file), "--model", tiny_st_model,
                                          "-o", str(tmp_path / "out"), "--set", "train.report_to=[tensorboard,mlflow]"])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == ['error: train.report_to: mlflow is not installed; pip install "tunewise[mlflow]" '
                         "(or drop mlflow from train.report_to)"], result.stderr
        assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


# ---- a real run, read back


def test_fit_logs_to_mlflow_and_tensorboard(tiny_st_model, pairs_file, tmp_path, mlflow_store):
    client, experiment = mlflow_store
    result = tunewise.fit(config(tiny_st_model, pairs_file, tmp_path, "train.report_to=[mlflow,tensorboard]"))
    out = result.output_dir
    metrics = json.loads((out / "metrics.json").read_text())

    runs = client.search_runs([experiment])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    logged = run.data.metrics
    # tunewise's numbers: before/after with the bootstrap interval, memory, trainable parameters
    assert logged["before/mrr_20"] == pytest.approx(metrics["before"]["mrr@20"])
    assert logged["after/mrr_20"] == pytest.approx(metrics["after"]["mrr@20"])
    interval = metrics["uncertainty"]["mrr@20"]
    assert logged["gain/mrr_20/low"] == pytest.approx(interval["abs_low"])
    assert logged["gain/mrr_20/high"] == pytest.approx(interval["abs_high"])
    assert logged["p_value/mrr_20"] == pytest.approx(interval["p_value"])
    assert logged["memory/measured_peak_mib"] == pytest.approx(metrics["memory"]["measured_bytes"] / 2**20)
    assert logged["memory/estimated_peak_mib"] == pytest.approx(metrics["memory"]["estimated_bytes"] / 2**20)
    assert logged["params/trainable"] == metrics["strategy"]["trainable_params"] > 0
    # ... next to the Trainer's own, in the same run: the loss of each epoch
    losses = sorted((h.step, h.value) for h in client.get_metric_history(run.info.run_id, "loss"))
    assert [step for step, _ in losses] == [6, 12]  # 48 pairs / batch 8 = 6 steps an epoch
    params = run.data.params
    assert params["config.train.learning_rate"] == "0.001" and params["config.model"] == tiny_st_model
    assert params["config.train.report_to"] == "['mlflow', 'tensorboard']"
    assert "learning_rate" in params  # the Trainer's arguments
    assert run.data.tags["tunewise.task"] == "embedding" and run.data.tags["tunewise.primary_metric"] == "mrr@20"
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "README.md", "training_curve.png"} <= files

    events = scalars(out / "runs")
    assert events["tunewise/after/mrr_20"][0][1] == pytest.approx(metrics["after"]["mrr@20"])
    assert events["tunewise/gain/mrr_20/low"][0][1] == pytest.approx(interval["abs_low"])
    assert events["tunewise/after/mrr_20"][0][0] == metrics["train"]["steps"]
    assert events["train/loss"] == [(step, pytest.approx(value)) for step, value in losses]  # the Trainer's, same folder
    assert (out / "training_curve.png").stat().st_size > 1000


def test_a_failed_run_is_marked_failed(tiny_st_model, pairs_file, tmp_path, mlflow_store, monkeypatch):
    client, experiment = mlflow_store
    from tunewise.tasks.embedding import EmbeddingTask

    def broken(self, *args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(EmbeddingTask, "evaluate", broken)
    monkeypatch.setattr("tunewise.run.evaluate_before", lambda *a: type("R", (), {"metrics": {"mrr@20": 0.1}, "seconds": 0.0})())
    with pytest.raises(RuntimeError, match="evaluation broke"):
        tunewise.fit(config(tiny_st_model, pairs_file, tmp_path, "train.report_to=mlflow", "train.epochs=1"))
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FAILED"
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_budget_sweep_is_one_parent_run_with_a_child_per_point(tiny_st_model, pairs_file, tmp_path, mlflow_store):
    from tunewise.budget import run_budget

    client, experiment = mlflow_store
    cfg = config(tiny_st_model, pairs_file, tmp_path, "train.report_to=[mlflow,tensorboard]", "train.epochs=1")
    result = run_budget(cfg, sizes=[12, 24, 48], seeds=1, epochs=2, output_dir=tmp_path / "sweep")
    runs = client.search_runs([experiment])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1  # the points' Trainers reported nowhere
    parent = parents[0]
    assert parent.data.tags["tunewise.recommendation"] == result.recommendation.text
    assert parent.data.params["config.train.report_to"] == "[]"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    data_points = [p for p in result.points if p.kind == "data"]
    time_points = [p for p in result.points if p.kind == "time"]
    assert len(children) == len(data_points) + 1  # the time curve is one child with a value per evaluation
    by_name = {c.info.run_name: c for c in children}
    for p in data_points:
        assert by_name[f"{p.size} items, seed {p.seed}"].data.metrics["metric_after"] == pytest.approx(p.metric_after)
    curve = by_name[f"time curve: {time_points[0].size} items, seed 0"]
    assert len(client.get_metric_history(curve.info.run_id, "metric_after")) == len(time_points)
    sizes = [step for step, _ in scalars(tmp_path / "sweep" / "runs")["budget/data/mean_metric"]]
    assert sizes == [12, 24, 48]
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_an_mlflow_store_that_cannot_open_a_run_is_one_line(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://store")
    mlflow.set_tracking_uri("nosuchscheme://store")
    try:
        cfg = load_config(None, ["train.report_to=mlflow", f"output_dir={tmp_path / 'run'}"])
        with pytest.raises(TunewiseError) as err:
            with tracking.track_fit(cfg, tmp_path / "staging", tmp_path / "run"):
                pytest.fail("the block must not run")
    finally:
        mlflow.set_tracking_uri(None)
    message = str(err.value)
    assert message.startswith("train.report_to: mlflow could not open a run in nosuchscheme://store (")
    assert "check MLFLOW_TRACKING_URI" in message and "\n" not in message


def test_resumed_fit_continues_the_interrupted_mlflow_run(tiny_st_model, pairs_file, tmp_path, mlflow_store):
    """Ctrl-C after the first epoch's checkpoint, then --resume: one MLflow run holds the whole curve."""
    from transformers import TrainerCallback

    client, experiment = mlflow_store

    class Interrupt(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step > 6:
                raise KeyboardInterrupt

    cfg = config(tiny_st_model, pairs_file, tmp_path, "train.report_to=[mlflow]")
    with pytest.raises(KeyboardInterrupt):
        tunewise.fit(cfg, callbacks=[Interrupt()])
    (first,) = client.search_runs([experiment])
    assert first.info.status == "KILLED"
    result = tunewise.fit(config(tiny_st_model, pairs_file, tmp_path, "train.report_to=[mlflow]"), resume=True)
    runs = client.search_runs([experiment])
    assert [r.info.run_id for r in runs] == [first.info.run_id], "the resumed attempt logs into the same run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["after/mrr_20"] == pytest.approx(result.metrics["after"]["mrr@20"])
    losses = sorted(h.step for h in client.get_metric_history(run.info.run_id, "loss"))
    assert losses == [6, 12]  # epoch 1 from the first attempt, epoch 2 from the resumed one
