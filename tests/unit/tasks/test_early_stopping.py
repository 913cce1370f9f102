"""Early stopping and best-checkpoint selection on every task and strategy (tasks.training)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rich.console import Console

from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.run import fit

from tiny_models import json_rows, lm_config, write_jsonl

QUIET = Console(quiet=True)
EARLY = ("train.early_stopping_patience=1", "data.validation_fraction=0.3")


def _check_record(m: dict, metric: str, *, epochs: int) -> dict:
    """What every early-stopped run reports: the step kept, its validation score, why."""
    record = m["early_stopping"]
    assert record is not None and record["metric"] == metric
    assert record == m["train"]["best"]
    evaluations = [h for h in m["train"]["history"] if "eval_runtime" in h]
    assert record["evaluations"] == len(evaluations) >= 1
    assert 1 <= record["best_step"] <= record["stopped_at_step"] <= record["planned_steps"]
    assert 0 < record["best_epoch"] <= epochs
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    scores = {h["step"]: h[key] for h in evaluations}
    assert record["value"] == pytest.approx(scores[record["best_step"]])  # the kept step is the one that scored it
    assert record["reason"].startswith(("validation ", "trained all"))
    return record


def test_image_search_early_stops_on_validation_search(tiny_resnet, tmp_path):
    from test_task_image import _cfg, image_folder

    folder = image_folder(tmp_path / "imgs", n_per_class=10)
    m = fit(_cfg("image-search", tiny_resnet, folder, tmp_path / "out", "train.epochs=3", *EARLY), console=QUIET).metrics
    assert m["data"]["validation_items"] >= 6
    record = _check_record(m, "mrr@20", epochs=3)
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"- early stopping: kept step {record['best_step']} (epoch {record['best_epoch']}" in card


def test_clip_early_stops_on_validation_captions(tiny_clip, tmp_path):
    from test_task_clip import caption_file

    data = caption_file(tmp_path / "d", n_per_colour=8)
    cfg = load_config(None, ["task=clip", f"model={tiny_clip}", f"data.train={data}", f"output_dir={tmp_path / 'out'}",
                             "train.epochs=3", "train.batch_size=6", "train.learning_rate=1e-3", "eval.k=[1, 5]",
                             "data.eval_fraction=0.25", *EARLY])
    m = fit(cfg, console=QUIET).metrics
    assert m["data"]["validation_pairs"] == 7 and m["data"]["train_examples"] == 17
    _check_record(m, "mrr@20", epochs=3)


def test_causal_lm_early_stops_on_held_out_loss(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    cfg = lm_config(tmp_path, tiny_llama, data, strategy="full", train__epochs=3, train__early_stopping_patience=1,
                    train__early_stopping_metric="eval_loss", data__validation_fraction=0.25)
    m = fit(cfg, console=QUIET).metrics
    assert m["data"]["validation_examples"] == 8 and m["data"]["train_examples"] == 24
    record = _check_record(m, "eval_loss", epochs=3)
    losses = [h["eval_loss"] for h in m["train"]["history"] if "eval_runtime" in h]
    assert record["value"] == pytest.approx(min(losses))  # lower is better


@pytest.mark.slow
def test_causal_lm_early_stops_on_a_generation_metric(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    cfg = lm_config(tmp_path, tiny_llama, data, strategy="lora", train__epochs=2, train__early_stopping_patience=1,
                    data__validation_fraction=0.25)
    m = fit(cfg, console=QUIET).metrics
    record = _check_record(m, "format_valid", epochs=2)  # eval.primary: generations of the validation prompts
    assert all("eval_exact_match" in h for h in m["train"]["history"] if "eval_runtime" in h)
    assert record["value"] == pytest.approx(max(h["eval_format_valid"] for h in m["train"]["history"] if "eval_runtime" in h))


def test_an_unknown_early_stopping_metric_fails_before_any_work(tmp_path, tiny_llama):
    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    cfg = lm_config(tmp_path, tiny_llama, data, strategy="full", train__early_stopping_patience=1,
                    train__early_stopping_metric="bleu")
    with pytest.raises(TunewiseError, match="train.early_stopping_metric: 'bleu' is not a metric of task causal-lm"):
        fit(cfg, console=QUIET)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("task", ["embedding", "classification", "image-classification", "image-search", "clip"])
def test_head_strategy_early_stops_on_every_task(task, tmp_path, request, monkeypatch, tiny_st_model):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    common = [f"output_dir={tmp_path / 'out'}", "train.epochs=3", "strategy=head", *EARLY]
    if task == "embedding":
        from conftest import make_pairs

        data = write_jsonl(tmp_path / "pairs.jsonl", make_pairs())
        cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={data}", "train.batch_size=8", *common])
        metric = "mrr@20"
    elif task == "classification":
        from test_task_classification import _texts_file

        data = _texts_file(tmp_path / "texts.jsonl")
        cfg = load_config(None, ["task=classification", f"model={request.getfixturevalue('tiny_bert')}",
                                 f"data.train={data}", "train.batch_size=8", "data.eval_fraction=0.25", *common])
        metric = "accuracy"
    elif task == "clip":
        from test_task_clip import caption_file

        data = caption_file(tmp_path / "d", n_per_colour=8)
        cfg = load_config(None, ["task=clip", f"model={request.getfixturevalue('tiny_clip')}", f"data.train={data}",
                                 "train.batch_size=6", "eval.k=[1, 5]", "data.eval_fraction=0.25", *common])
        metric = "mrr@20"
    else:
        from test_task_image import _cfg, image_folder

        folder = image_folder(tmp_path / "imgs", n_per_class=10)
        extra = ["strategy={name: head, dim: 8}"] if task == "image-search" else []
        cfg = _cfg(task, request.getfixturevalue("tiny_resnet"), folder, tmp_path / "out", *common, *extra)
        metric = "mrr@20" if task == "image-search" else "accuracy"
    m = fit(cfg, console=QUIET).metrics
    assert m["strategy"]["name"] == "head"
    _check_record(m, metric, epochs=3)


def test_the_record_says_why_training_stopped():
    from tunewise.tasks.training import early_stopping_record

    cfg = load_config(None, ["train.early_stopping_patience=2"])
    history = [{"eval_val_mrr@20": v, "eval_runtime": 0.1, "step": s, "epoch": s / 10}
               for s, v in ((10, 0.3), (20, 0.5), (30, 0.4), (40, 0.45))]

    def trainer(global_step: int, max_steps: int, best: int):
        return SimpleNamespace(state=SimpleNamespace(best_metric=0.5, best_global_step=best, global_step=global_step,
                                                     max_steps=max_steps, log_history=history))

    stopped = early_stopping_record(trainer(40, 100, 20), cfg, "mrr@20")
    assert stopped["stopped_early"] and stopped["best_step"] == 20 and stopped["best_epoch"] == 2.0
    assert stopped["reason"] == ("validation mrr@20 did not improve for 2 evaluations after step 20; "
                                 "stopped at step 40 of 100 and restored step 20")
    ran = early_stopping_record(trainer(40, 40, 20), cfg, "mrr@20")
    assert not ran["stopped_early"] and ran["reason"] == ("trained all 40 steps; validation mrr@20 was best at step 20, "
                                                          "which was restored")
    assert early_stopping_record(trainer(40, 40, 20), load_config(None, []), "mrr@20") is None  # not on: no record


def test_minutes_checkpoints_and_early_stopping_do_not_mix(tmp_path):
    from tunewise.checkpoints import RUN_FILE
    from tunewise.tasks.training import schedule_kwargs

    (tmp_path / RUN_FILE).write_text("{}")  # a run's work folder
    with pytest.raises(TunewiseError, match="train.checkpoint_every: with early stopping, checkpoints follow the validation"):
        load_config(None, ["train.early_stopping_patience=1", "train.checkpoint_every=10min"])
    minutes = schedule_kwargs(load_config(None, ["train.checkpoint_every=10min"]), tmp_path)
    assert minutes["save_strategy"] == "no" and not minutes["save_only_model"]  # the CheckpointClock saves
    steps = schedule_kwargs(load_config(None, ["train.early_stopping_patience=1", "train.checkpoint_every=7"]), tmp_path,
                            best_metric="eval_accuracy")
    assert steps["eval_strategy"] == steps["save_strategy"] == "steps" and steps["eval_steps"] == steps["save_steps"] == 7
    assert steps["load_best_model_at_end"] and not steps["save_only_model"]
    # outside a work folder (budget points): nothing resumable is written
    plain = schedule_kwargs(load_config(None, []), tmp_path / "elsewhere")
    assert plain["save_strategy"] == "no" and plain["save_only_model"]
