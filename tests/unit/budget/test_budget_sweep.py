"""The budget sweep end to end on a tiny random model: nested subsets, data and time sweeps,
the report, SIGKILL and resume, a changed config, and bad input through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.budget import run_budget
from tunewise.budget.store import ResultStore
from tunewise.cli.app import app
from tunewise.errors import TunewiseError

runner = CliRunner()
SIZES = [6, 12, 24, 48]  # make_pairs(60) with eval_fraction 0.2 leaves 48 training pairs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: a tiny model's matmuls only pay thread hand-offs on a shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    from conftest import make_pairs

    path = tmp_path_factory.mktemp("budget-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(60)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def config(tiny_st_model, data_file) -> dict:
    # A high learning rate so that the tiny model moves in one short epoch.
    return {"model": tiny_st_model, "data": {"train": str(data_file)}, "seed": 3,
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}


@pytest.fixture(scope="module")
def swept(config, tmp_path_factory):
    """One small data + time sweep, shared by the tests that only read its results."""
    from tunewise.tasks.embedding import EmbeddingTask

    calls: list[tuple[int, list[int]]] = []
    original = EmbeddingTask.subset

    def spy(self, data, indices):
        calls.append((len(indices), list(indices)))
        return original(self, data, indices)

    EmbeddingTask.subset = spy
    try:
        out = tmp_path_factory.mktemp("budget") / "sweep"
        result = run_budget(config, sizes=SIZES, seeds=2, epochs=2, eval_steps=3, output_dir=out,
                            price_per_hour=1.5, target=0.9, validate=False)
    finally:
        EmbeddingTask.subset = original
    return result, calls


def test_data_sweep_uses_nested_seeded_subsets(swept):
    result, calls = swept
    data_calls = calls[: len(SIZES) * 2]  # data jobs run first, smallest size first
    by_size = {}
    for size, indices in data_calls:
        by_size.setdefault(size, []).append(set(indices))
    assert sorted(by_size) == SIZES and all(len(v) == 2 for v in by_size.values())
    for seed in range(2):
        subsets = [by_size[s][seed] for s in SIZES]
        assert all(a < b for a, b in zip(subsets, subsets[1:]))  # strictly nested per seed
    assert by_size[12][0] != by_size[12][1]  # another seed, another draw
    assert len(calls) == len(SIZES) * 2 + 1 and calls[-1][0] == 48  # + the time run


def test_data_and_time_sweeps_produce_points_and_report(swept):
    result, _ = swept
    data = [p for p in result.points if p.kind == "data"]
    time_pts = [p for p in result.points if p.kind == "time"]
    assert sorted({(p.size, p.seed) for p in data}) == [(s, k) for s in SIZES for k in range(2)]
    assert {p.metric_before for p in result.points} == {result.metric_before}  # "before" evaluated once
    # 48 pairs / batch 8 = 6 steps per epoch: evaluations at steps 3, 6 (epoch 1), 9, 12 (epoch 2)
    assert [p.epoch for p in time_pts] == [0.5, 1.0, 1.5, 2.0]
    assert all(p.size == 48 for p in time_pts) and time_pts[-1].extra["final"]
    seconds = [p.train_seconds for p in time_pts]
    assert seconds == sorted(seconds) and all(p.eval_seconds > 0 for p in time_pts)
    assert [r.size for r in result.data_summary] == SIZES and all(r.n == 2 for r in result.data_summary)
    assert result.forecast is not None and result.target is not None
    assert result.recommendation.text and result.cost["money"] > 0

    html = result.report_path.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 5  # items, ROI, seconds, ROI/s, forecast
    assert "Recommendation" in html and "Labels for target 0.9" in html
    assert sorted(p.name for p in (result.output_dir / "plots").glob("*.png")) == [
        "forecast.png", "improvement_vs_items.png", "improvement_vs_seconds.png", "roi_vs_items.png",
        "roi_vs_seconds.png"]
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    assert summary["metric"] == "mrr@20" and len(summary["data"]) == len(SIZES)
    assert summary["recommendation"]["text"] == result.recommendation.text


def test_rerun_of_a_finished_sweep_runs_nothing_and_writes_the_same_report(swept, config):
    result, _ = swept
    before = json.loads(result.summary_path.read_text(encoding="utf-8"))
    again = run_budget(config, sizes=SIZES, seeds=2, epochs=2, eval_steps=3, output_dir=result.output_dir,
                       price_per_hour=1.5, target=0.9)
    assert again.ran == 0 and again.reused == len(result.points)
    assert json.loads(again.summary_path.read_text(encoding="utf-8")) == before


def test_changed_config_is_refused(swept, config):
    result, _ = swept
    changed = {**config, "train": {**config["train"], "learning_rate": 5e-4}}
    with pytest.raises(TunewiseError, match="different config.*--fresh"):
        run_budget(changed, sizes=SIZES, seeds=2, epochs=2, eval_steps=3, output_dir=result.output_dir)
    with pytest.raises(TunewiseError, match="different config"):  # a changed time sweep, too
        run_budget(config, sizes=SIZES, seeds=2, epochs=3, eval_steps=3, output_dir=result.output_dir)


def _cli_args(config: dict, out: Path) -> list[str]:
    return ["budget", "--model", config["model"], "--train", config["data"]["train"], "--seed", "3",
            "--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "train.learning_rate=0.001",
            "--sizes", "6,12,24", "--seeds", "2", "--no-time", "-o", str(out)]


def test_sigkill_then_rerun_runs_only_missing_points(config, tmp_path):
    out = tmp_path / "killed"
    store_file = out / "results.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tunewise.cli.app", *_cli_args(config, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if store_file.exists() and len(store_file.read_text().splitlines()) >= 2:  # header + 1 point
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    lines_before = [line for line in store_file.read_text().splitlines()[1:] if line.strip()]
    fingerprint = json.loads(store_file.read_text().splitlines()[0])["fingerprint"]
    done = len(ResultStore(store_file, fingerprint).points())
    assert 1 <= done < 6

    result = runner.invoke(app, _cli_args(config, out))
    assert result.exit_code == 0, result.output
    assert f"{6 - done} runs now (local backend), {done} points reused" in " ".join(result.output.split())
    keys = [(p["size"], p["seed"]) for p in map(json.loads, store_file.read_text().splitlines()[1:]) if p]
    assert sorted(keys) == [(s, k) for s in (6, 12, 24) for k in range(2)]  # none ran twice
    assert store_file.read_text().splitlines()[1:len(lines_before) + 1] == lines_before  # old lines untouched


@pytest.mark.parametrize("extra, message", [
    (["--sizes", "6,12", "--target", "0.5"], "error: --sizes: --target needs a forecast"),
    (["--sizes", "6,12,24", "--target", "75"], "error: --target: must be a metric value in [0, 1]"),
    (["--sizes", "6,x"], "error: --sizes: 'x' is not a whole number"),
    (["--sizes", "6,12,24", "--forecast-sizes", "1000"], "error: --forecast-sizes: [1000] outside 1..240"),
    (["--sizes", "6,12,48", "--validate"], "error: --validate: fits only on sizes up to a quarter"),
    (["--seeds", "0"], "error: --seeds: must be a whole number of at least 1"),
    (["--sizes", "6,12,24", "--knee-drop", "2"], "error: --knee-drop: must be a fraction in (0, 1)"),
    (["--backend", "spark"], "error: --backend: unknown backend 'spark'"),
])
def test_bad_input_is_one_line_and_exit_2(config, tmp_path, extra, message):
    args = ["budget", "--model", config["model"], "--train", config["data"]["train"], "-o", str(tmp_path / "o"), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert "Traceback" not in result.output and not (tmp_path / "o" / "results.jsonl").exists()


def test_report_options_are_checked_before_the_data_is_read(tmp_path):
    missing = {"data": {"train": str(tmp_path / "missing.jsonl")}}  # reading it would fail with data.train
    for option, message in (({"drop": 70}, r"--knee-drop: must be a fraction in \(0, 1\)"),
                            ({"price_per_hour": -1}, "--price-per-hour"), ({"target": 75}, "--target")):
        with pytest.raises(TunewiseError, match=message):
            run_budget(missing, output_dir=tmp_path / "o", **option)
    assert not (tmp_path / "o").exists()


def test_sizes_above_the_data_are_capped_with_a_warning(config, tmp_path):
    from tunewise.budget.plan import plan_sweep
    from tunewise.config import load_config

    plan = plan_sweep(48, load_config(None), sizes=[6, 12, 500], seeds=1)
    assert plan.sizes == [6, 12, 48]
    assert plan.warnings == ["--sizes: 500 is larger than the 48 labeled items available; capped to 48"]


def test_ray_backend_without_ray_names_the_pip_command(config, tmp_path, monkeypatch):
    from tunewise.budget import backends

    monkeypatch.setattr(backends, "is_ray_available", lambda: False)
    result = runner.invoke(app, ["budget", "--model", config["model"], "--train", config["data"]["train"],
                                 "--backend", "ray", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == 'error: --backend ray needs Ray: pip install "tunewise[ray]"'


def test_interrupted_sweep_is_one_line_exit_130_and_keeps_points(config, tmp_path, monkeypatch):
    from tunewise.budget import sweep

    real = sweep.run_job
    calls = {"n": 0}

    def interrupt_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_job", interrupt_second)
    out = tmp_path / "int"
    result = runner.invoke(app, _cli_args(config, out))
    assert result.exit_code == 130  # as Ctrl-C anywhere else (SIGTERM: 143)
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith("error: interrupted; every finished point is kept in")
    assert len((out / "results.jsonl").read_text().splitlines()) == 2  # header + the finished point


def test_head_strategy_sweep_goes_through_the_strategy_train_hook(config, tmp_path, monkeypatch):
    # head replaces the task's training with its own Trainer over cached features; the time
    # curve must still see every epoch and the data points must still improve the same model.
    from tunewise.strategies.head import pooled_text as head

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))  # cold
    encoded: list[str] = []
    original = head.encode_body
    monkeypatch.setattr(head, "encode_body", lambda model, texts, batch: (encoded.extend(texts), original(model, texts, batch))[1])
    cfg = {**config, "strategy": {"name": "head", "head_lr": 0.01}}
    result = run_budget(cfg, sizes=[12, 24, 48], seeds=1, epochs=2, output_dir=tmp_path / "head")
    # the whole sweep (baseline, 3 sizes, time curve, every evaluation) ran the backbone once per text
    assert encoded and len(encoded) == len(set(encoded))
    assert [p.epoch for p in result.points if p.kind == "time"] == [1.0, 2.0]
    assert {p.extra["strategy"] for p in result.points} == {"head"}
    assert len(result.data_summary) == 3


def test_each_size_has_a_paired_interval_over_the_evaluation_items(swept):
    """The per-item scores kept by the sweep give each size the interval a single fit gets."""
    from tunewise.budget.intervals import BEFORE_FILE, size_intervals
    from tunewise.evaluate.uncertainty import paired_interval

    result, _ = swept
    before = json.loads((result.output_dir / BEFORE_FILE).read_text())["items"]
    assert sum(before) / len(before) == pytest.approx(result.metric_before)
    rows = result.size_intervals
    assert [r["size"] for r in rows] == SIZES and all(r["seeds"] == 2 and r["n"] == len(before) for r in rows)
    for r in rows:
        mean = next(s.mean_metric for s in result.data_summary if s.size == r["size"])
        assert r["difference"] == pytest.approx(mean - result.metric_before, abs=1e-9)
        assert r["abs_low"] <= r["difference"] <= r["abs_high"] and 0 <= r["p_value"] <= 1
    # the same numbers as the paired bootstrap of one run, on the seeds' mean per-item scores
    pts = [p for p in result.points if p.kind == "data" and p.size == SIZES[-1]]
    mean_after = [sum(col) / len(pts) for col in zip(*(p.extra["items"] for p in pts))]
    direct = paired_interval(before, mean_after, seed=3 + SIZES[-1])
    assert rows[-1]["abs_low"] == pytest.approx(direct["abs_low"]) and rows[-1]["p_value"] == pytest.approx(direct["p_value"])
    summary = json.loads(result.summary_path.read_text(encoding="utf-8"))
    assert [r["size"] for r in summary["data_intervals"]] == SIZES
    assert "paired over the" in (result.output_dir / "summary.md").read_text(encoding="utf-8")
    assert size_intervals(result.points, None) == [] and size_intervals(result.points, before[:-1]) == []


def test_a_point_killed_mid_training_continues_from_its_checkpoint(config, tmp_path, monkeypatch):
    """A sweep killed inside a point's second epoch reruns that point from its epoch-1 checkpoint, and the
    point ends where an uninterrupted sweep's does; its checkpoints go once it is stored."""
    from transformers import TrainerCallback

    import tunewise.budget.sweep as sweep_module
    import tunewise.run as run_module

    monkeypatch.setattr(sweep_module, "POINT_CHECKPOINT_SECONDS", 0.0)  # the tiny model's points take under a second
    cfg = {**config, "train": {**config["train"], "epochs": 2}}
    whole = run_budget(cfg, sizes=[12, 48], seeds=1, time_sweep=False, output_dir=tmp_path / "whole")
    original = run_module.train_with_strategy

    class Kill(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            if state.epoch and state.epoch >= 1 and args.num_train_epochs == 2 and state.max_steps == 12:
                raise KeyboardInterrupt  # 48 pairs / batch 8 = 6 steps an epoch: the largest point's 2nd epoch

    monkeypatch.setattr(run_module, "train_with_strategy",
                        lambda *a, callbacks=None, **kw: original(*a, callbacks=[*(callbacks or []), Kill()], **kw))
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_budget(cfg, sizes=[12, 48], seeds=1, time_sweep=False, output_dir=out)
    folder = out / ".points" / "data-48-seed0"
    assert [p.name for p in folder.glob("checkpoint-*")] == ["checkpoint-6"]
    monkeypatch.setattr(run_module, "train_with_strategy", original)
    resumed = run_budget(cfg, sizes=[12, 48], seeds=1, time_sweep=False, output_dir=out)
    a = next(p for p in whole.points if p.size == 48)
    b = next(p for p in resumed.points if p.size == 48)
    assert b.extra["resumed_from_step"] == 6 and "resumed_from_step" not in a.extra
    assert b.metric_after == a.metric_after and b.extra["steps"] == a.extra["steps"] == 12
    assert b.train_seconds > 0 and not folder.exists()


def test_target_above_one_is_refused_for_scores_but_not_for_lower_is_better_metrics():
    """--target 5 is a perplexity or loss to get down to, not a percentage of a [0, 1] score."""
    from tunewise.budget.sweep import _bounded, _check_options
    from tunewise.config import load_config

    with pytest.raises(TunewiseError, match=r"--target: must be a metric value in \[0, 1\]; got 75 \(for 75% write 0.75\)"):
        _check_options(price_per_hour=None, target=75, drop=0.05, bounded=True)
    _check_options(price_per_hour=None, target=5.0, drop=0.05, bounded=False)
    with pytest.raises(TunewiseError, match="of 0 or more; got -1"):
        _check_options(price_per_hour=None, target=-1, drop=0.05, bounded=False)
    assert _bounded(load_config(None, values={"task": "embedding"}))
    assert not _bounded(load_config(None, values={"task": "speech-recognition"}))  # primary: WER


def test_a_point_expected_to_train_briefly_is_not_checkpointed(config, tmp_path, monkeypatch):
    """Once the sweep knows its pace, a data point expected to train for under POINT_CHECKPOINT_SECONDS
    trains without checkpoints (a kill reruns it whole); the first point, of unknown pace, checkpoints."""
    from transformers import TrainerCallback

    import tunewise.budget.sweep as sweep_module
    import tunewise.run as run_module

    saved: list[tuple[int, str]] = []
    original = run_module.train_with_strategy

    class Saves(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            saved.append((state.max_steps, args.output_dir))

    monkeypatch.setattr(run_module, "train_with_strategy",
                        lambda *a, callbacks=None, **kw: original(*a, callbacks=[*(callbacks or []), Saves()], **kw))
    cfg = {**config, "train": {**config["train"], "epochs": 2}}
    run_budget(cfg, sizes=[12, 48], seeds=1, time_sweep=False, output_dir=tmp_path / "short")
    assert [steps for steps, _ in saved] == [4, 4]  # 12 pairs / batch 8: 2 steps an epoch, one save each; 48: none
    assert all("data-12-seed0" in folder for _, folder in saved)
    saved.clear()
    monkeypatch.setattr(sweep_module, "POINT_CHECKPOINT_SECONDS", 0.0)
    run_budget(cfg, sizes=[12, 48], seeds=1, time_sweep=False, output_dir=tmp_path / "long")
    assert [steps for steps, _ in saved] == [4, 4, 12, 12]
    assert not sweep_module._POINT_PACE  # forgotten once the sweep ends
