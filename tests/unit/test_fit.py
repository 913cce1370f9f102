"""End-to-end runs on a tiny random model: outputs, losses, reproducibility, early stopping."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import tunewise
from tunewise.config import load_config
from tunewise.outputs import staged_dir


def run_config(tiny_st_model, pairs_file, tmp_path, *extra: str):
    return load_config(None, [
        f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}",
        "train.epochs=1", "train.batch_size=8", "train.learning_rate=1e-3", "eval.examples=2", *extra,
    ])


def test_fit_writes_a_loadable_model_with_metrics_and_card(tiny_st_model, pairs_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    cfg = run_config(tiny_st_model, pairs_file, tmp_path, "train.epochs=3")
    result = tunewise.fit(cfg)
    out = tmp_path / "run"
    assert result.output_dir == out
    model = SentenceTransformer(str(out))
    assert model.encode(["a roof question"]).shape == (1, 32)
    assert (out / "model.safetensors").is_file() and not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("before", "after", "relative_improvement", "config", "train", "memory", "versions", "examples"):
        assert key in metrics
    assert metrics["train"]["examples"] == 48 and metrics["train"]["seconds"] > 0
    assert metrics["train"]["samples_per_second"] > 0 and metrics["memory"]["peak_bytes"] > 0
    assert metrics["memory"]["method"].startswith("process peak resident")
    assert set(metrics["before"]) == {"mrr@20", "recall@20", "precision@20", "map@20", "ndcg@20", "hit_rate@20", "ndcg@10"}
    assert metrics["strategy"]["trainable_params"] == metrics["strategy"]["total_params"] > 0
    # The topic words make the task learnable: training must help a random model a lot.
    assert metrics["after"]["mrr@20"] > metrics["before"]["mrr@20"]
    card = (out / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "mrr@20 (primary)" in card
    assert "- loss: mnrl, learning rate 0.001, batch size 8" in card  # the embedding task lists its loss
    # uncertainty: a paired bootstrap interval and permutation test for every metric, per-query items
    assert set(metrics["uncertainty"]) == set(metrics["before"])
    primary = metrics["uncertainty"]["mrr@20"]
    assert primary.keys() >= {"abs_low", "abs_high", "rel_low", "rel_high", "p_value", "n", "confidence", "resamples"}
    assert primary["n"] == len(metrics["items"]["mrr@20"]["after"]) == metrics["data"]["eval_queries"]
    assert primary["abs_low"] <= primary["difference"] <= primary["abs_high"]
    assert primary["rel_low"] <= metrics["relative_improvement"]["mrr@20"] <= primary["rel_high"]
    assert 0 < primary["p_value"] <= 1
    assert set(metrics["items"]) == {"mrr@20"}  # only the primary metric's items, to keep the file small
    for side in ("before", "after"):
        items = metrics["items"]["mrr@20"][side]
        assert sum(items) / len(items) == pytest.approx(metrics[side]["mrr@20"], abs=1e-12)
    for name, interval in metrics["uncertainty"].items():  # every metric's items average to it
        assert interval["difference"] == pytest.approx(metrics["after"][name] - metrics["before"][name], abs=1e-9)
    assert "95% CI" in card and "paired permutation test" in card
    assert load_config(out / "config.yaml") == cfg
    assert not list(tmp_path.glob(".run.tmp-*"))


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_fit_is_reproducible_on_cpu(tiny_st_model, pairs_file, tmp_path):
    a = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "a"))
    b = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path / "b"))
    wa, wb = _weights(a.output_dir), _weights(b.output_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.after == b.after


@pytest.mark.parametrize("loss", ["cached_mnrl", "triplet", "cosent", "contrastive"])
def test_every_loss_trains(tiny_st_model, pairs_file, tmp_path, loss):
    result = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path, f"train.loss={loss}", "data.kind=triplets",
                                     "train.mini_batch_size=4"))
    assert result.metrics["config"]["train"]["loss"] == loss
    assert result.metrics["train"]["steps"] > 0


def test_triplet_loss_needs_negatives(tiny_st_model, pairs_file, tmp_path):
    with pytest.raises(tunewise.TunewiseError, match="needs triplets"):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path, "train.loss=triplet"))
    assert not (tmp_path / "run").exists()


def test_early_stopping_restores_best(tiny_st_model, pairs_file, tmp_path):
    result = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path, "train.epochs=4",
                                     "train.early_stopping_patience=1", "data.validation_fraction=0.2"))
    train = result.metrics["train"]
    assert train["history"], "the validation set was evaluated during training"
    assert train["best"] is not None and train["best"]["metric"] == "mrr@20"
    best = max(h["mrr@20"] for h in train["history"])
    assert train["best"]["value"] == pytest.approx(best)
    record = result.metrics["early_stopping"]  # the step kept and why
    assert record == train["best"] and record["best_step"] <= record["stopped_at_step"] <= 24 and record["reason"]
    assert not (result.output_dir / "_checkpoints").exists()
    assert not (tmp_path / ".run.checkpoints").exists()  # the resumable checkpoints are removed once published


def test_existing_output_dir_needs_overwrite(tiny_st_model, pairs_file, tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(tunewise.TunewiseError, match="already exists; choose another folder or pass --overwrite"):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path))


def test_evaluate_api(tiny_st_model, pairs_file, tmp_path):
    result = tunewise.evaluate(run_config(tiny_st_model, pairs_file, tmp_path))
    assert 0 <= result["metrics"]["mrr@20"] <= 1 and result["data"]["eval_queries"] == 12


def test_staged_dir_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dir(target) as staging:
        (staging / "metrics.json").write_text("{}")
        raise RuntimeError("crash mid-run")
    assert not target.exists() and not list(tmp_path.iterdir())


def test_staged_dir_replaces_existing(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with staged_dir(target) as staging:
        (staging / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_memory_estimate_beside_measurement(tiny_st_model, pairs_file, tmp_path):
    memory = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path)).metrics["memory"]
    assert memory["estimated_bytes"] > 0 and memory["measured_bytes"] == memory["peak_bytes"]
    assert memory["error_pct"] is not None and set(memory["estimate"]) >= {"weights_bytes", "activations_bytes"}


def test_run_that_cannot_fit_stops_before_training(tiny_st_model, pairs_file, tmp_path, monkeypatch):
    import importlib

    advise = importlib.import_module("tunewise.memory.advise")  # the package re-exports a function of that name
    monkeypatch.setattr(advise, "available_memory", lambda device="auto": (10 * 2**20, "test: 10 MiB free"))
    with pytest.raises(tunewise.TunewiseError, match=r"memory: the estimated peak .* exceeds .*train.check_memory=false"):
        tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path))
    assert not (tmp_path / "run").exists()
    # The override trains anyway and still records the estimate.
    result = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path, "train.check_memory=false"))
    assert result.metrics["memory"]["estimated_bytes"] > 10 * 2**20


def test_fit_and_the_budget_planner_share_one_relative_improvement():
    from tunewise import outputs, run
    from tunewise.budget import roi

    assert run.relative_improvement is roi.relative_improvement
    assert not hasattr(outputs, "relative_improvement")


def test_evaluate_before_scores_the_baseline_of_a_task_that_has_one():
    """One "before" step for fit, the sweep and the Ray worker: a baseline when the task has one."""
    from types import SimpleNamespace

    from tunewise.run import evaluate_before
    from tunewise.strategies import resolve_strategy

    cfg = load_config(None)
    strategy, options = resolve_strategy(cfg)

    class Plain:
        def evaluate(self, model, data, config):
            return f"evaluated {model}"

    class WithBaseline(Plain):
        def baseline(self, model, data, config):
            return f"baseline of {model}"

    assert evaluate_before(Plain(), "m", SimpleNamespace(), cfg, strategy, options) == "evaluated m"
    assert evaluate_before(WithBaseline(), "m", SimpleNamespace(), cfg, strategy, options) == "baseline of m"


def test_outputs_follow_the_umask_like_the_model_files(tiny_st_model, pairs_file, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        out = tunewise.fit(run_config(tiny_st_model, pairs_file, tmp_path)).output_dir
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()}
    for name in ("metrics.json", "config.yaml", "README.md", "model.safetensors"):
        assert modes[name] == 0o644, (name, oct(modes[name]))  # mkstemp's private 0600 is not kept
    assert out.stat().st_mode & 0o777 == 0o755
