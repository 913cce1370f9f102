"""``tunewise compare``: specs, validation before any run, the table; CLI errors for strategy commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunewise.cli.app import app
from tunewise.compare import compare, markdown_table, parse_strategy, plan, versus_best
from tunewise.config import load_config
from tunewise.errors import TunewiseError


def test_parse_strategy_specs():
    assert parse_strategy("full") == {"name": "full"}
    assert parse_strategy("lora:rank=4,alpha=8,target_modules=[query]") == {
        "name": "lora", "rank": 4, "alpha": 8, "target_modules": ["query"]}
    with pytest.raises(TunewiseError, match="expected NAME:key=value"):
        parse_strategy("lora:rank")


def test_every_strategy_is_validated_before_any_run(tmp_path):
    cfg = load_config(None)
    with pytest.raises(TunewiseError, match="did you mean 'lora'"):
        plan(cfg, ["full", "lroa"])
    labels = [label for label, _ in plan(cfg, ["lora", "lora:rank=4", "lora"])]
    assert labels == ["lora", "lora-rank4", "lora-2"]


def test_markdown_table_shows_the_columns():
    row = {"strategy": "lora", "metric": "mrr@20", "before": 0.25, "after": 0.3, "relative_improvement": 0.2,
           "trainable_params": 1000, "trainable_fraction": 0.01, "seconds": 12.0, "samples_per_second": 33.3,
           "peak_mib": 512.0}
    table = markdown_table([row])
    assert "| lora | 0.2500 | 0.3000 | +20.0% | 1,000 (1.00%) | 12.0 | 33.3 | 512.0 |" in table


def test_versus_best_tests_each_strategy_against_the_best_on_paired_items():
    rows = [{"strategy": s, "after": a} for s, a in (("head", 0.5), ("full", 0.9), ("lora", 0.85), ("old", 0.1))]
    best = [1.0] * 90 + [0.0] * 10
    items = {"head": [1.0] * 50 + [0.0] * 50, "full": best, "lora": best[:85] + [0.0] * 5 + best[90:], "old": None}
    versus_best(rows, items, higher_is_better=True, confidence=0.95, resamples=1000, seed=0)
    head, full, lora, old = rows
    assert full["best"] and full["vs_best"] is None
    assert head["vs_best"]["difference"] == pytest.approx(-0.4) and head["vs_best"]["significant"]
    # lora lost 5 of 100 items and gained none: sign flips of 5 non-zero differences, p = 2/32 (sampled)
    assert lora["vs_best"]["p_value"] == pytest.approx(2 / 32, abs=0.02) and not lora["vs_best"]["significant"]
    assert old["vs_best"] is None  # a run without per-item scores is not tested
    table = markdown_table([{**r, "metric": "mrr@20", "before": 0.1, "relative_improvement": 1.0, "trainable_params": 1,
                             "trainable_fraction": 1.0, "seconds": 1.0, "samples_per_second": 1.0, "peak_mib": None}
                            for r in rows])
    assert "| best |" in table and "| -0.4000 (p = 0.002, differs) |" in table
    assert "| -0.0500 (p = 0.0659, not significant) |" in table and table.rstrip().endswith("| n/a |")


def test_compare_runs_each_strategy_on_the_same_data(tiny_st_model, pairs_file, tmp_path):
    from rich.console import Console

    cfg = load_config(None, values={"model": tiny_st_model, "data.train": str(pairs_file), "train.epochs": 1,
                                    "train.batch_size": 8, "eval.k": [1, 10]})
    result = compare(cfg, ["head", "partial:frozen_layers=1"], tmp_path / "cmp", console=Console(quiet=True))
    rows = result["rows"]
    assert [r["strategy"] for r in rows] == ["head", "partial-frozen_layers1"]
    assert rows[0]["before"] == rows[1]["before"]  # same data, same evaluation
    assert rows[0]["trainable_params"] < rows[1]["trainable_params"]
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert len(saved["rows"]) == 2 and (tmp_path / "cmp" / "compare.md").is_file()
    # each gain has its interval; the non-best strategy is tested against the best on the same queries
    assert all(r["interval"]["abs_low"] <= r["interval"]["difference"] <= r["interval"]["abs_high"] for r in rows)
    assert sum(r["best"] for r in rows) == 1
    other = next(r for r in rows if not r["best"])
    assert 0 < other["vs_best"]["p_value"] <= 1 and other["vs_best"]["difference"] <= 0
    assert "| vs best |" in result["markdown"] and "95% CI" in result["markdown"]


runner = CliRunner()


@pytest.mark.parametrize("args, message", [
    (["fit", "--strategy", "lroa"], "did you mean 'lora'"),
    (["fit", "--strategy", "head", "--set", "strategy.layer_decay=0.9"], "strategy.layer_decay: does not apply"),
    (["fit", "--strategy", "lora", "--set", "strategy.interpolate=[0,2]"], "alpha must be in [0, 1]"),
    (["compare", "--strategy", "full", "--strategy", "parital"], "did you mean 'partial'"),
])
def test_cli_bad_strategy_input_exits_2_with_one_line_and_writes_nothing(args, message, tmp_path, pairs_file):
    out = tmp_path / "out"
    result = runner.invoke(app, [*args, "--train", str(pairs_file), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_lora_missing_target_and_partial_depth(tiny_st_model, pairs_file, tmp_path):
    for setting, message in (("strategy={name: lora, target_modules: [qury]}", "strategy.target_modules: 'qury'"),
                             ("strategy={name: partial, frozen_layers: 7}", "strategy.frozen_layers: 7 is more")):
        out = tmp_path / "o"
        result = runner.invoke(app, ["fit", "--model", tiny_st_model, "--train", str(pairs_file), "-o", str(out),
                                     "--set", setting, "--set", "eval.k=[1,10]"])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
        assert not out.exists()


def test_cli_interpolate_and_merge_errors(tmp_path):
    result = runner.invoke(app, ["interpolate", str(tmp_path), "--alphas", "0,1.5"])
    assert result.exit_code == 2 and "alpha must be in [0, 1]" in result.output
    result = runner.invoke(app, ["merge", str(tmp_path), "-o", str(tmp_path / "m")])
    assert result.exit_code == 2 and "has no adapter/tunewise_adapter.json" in result.output
    assert not (tmp_path / "m").exists()


def _fake_metrics(cfg) -> dict:
    """What row_of reads from a run's metrics.json."""
    return {"primary_metric": "mrr@20", "before": {"mrr@20": 0.2}, "after": {"mrr@20": 0.3},
            "relative_improvement": {"mrr@20": 0.5},
            "strategy": {"trainable_params": 10, "total_params": 20, "trainable_fraction": 0.5},
            "train": {"seconds": 1.0, "samples_per_second": 2.0}, "memory": {"peak_mib": 1.0, "method": "test"}}


def test_failed_compare_leaves_nothing_so_the_corrected_rerun_runs(pairs_file, tmp_path, monkeypatch):
    from rich.console import Console

    from tunewise import run

    out = tmp_path / "cmp"
    wrong = load_config(None, values={"data.train": str(tmp_path / "missing.jsonl")})
    with pytest.raises(TunewiseError, match="data.train"):
        compare(wrong, ["full"], out, console=Console(quiet=True))
    assert not out.exists() and not list(tmp_path.glob(".cmp*"))
    # The corrected command, same folder, no --overwrite (fit stubbed: only the folder matters here).
    monkeypatch.setattr(run, "fit", lambda cfg, console=None: run.RunResult(Path(cfg.output_dir), _fake_metrics(cfg)))
    result = compare(load_config(None, values={"data.train": str(pairs_file)}), ["full"], out, console=Console(quiet=True))
    assert result["rows"][0]["after"] == 0.3 and (out / "compare.json").is_file()


def test_merge_refuses_to_overwrite_its_own_run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "tunewise_adapter.json").write_text('{"base_model": "x", "task": "embedding"}')
    (run_dir / "config.yaml").write_text("task: embedding\n")
    for target in (run_dir, tmp_path):  # the run itself, or a folder holding it
        result = runner.invoke(app, ["merge", str(run_dir), "-o", str(target), "--overwrite"])
        assert result.exit_code == 2, result.output
        assert "is (or contains) the run being merged" in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in run_dir.iterdir()) == ["adapter", "config.yaml"]  # untouched


def test_merged_causal_lm_carries_its_tokenizer_and_merges_from_any_directory(tmp_path, monkeypatch):
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.run import fit

    from tiny_models import build_tiny_lm, json_rows, write_jsonl
    from tiny_models import lm_config as config

    build_tiny_lm(tmp_path / "tiny-llama", "llama")
    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    monkeypatch.chdir(tmp_path)  # the base model given as a relative path
    cfg = config(tmp_path, "tiny-llama", data, train__epochs=1, strategy={"name": "lora", "rank": 4, "merge": False})
    run_dir = fit(cfg, console=Console(quiet=True)).output_dir
    info = json.loads((run_dir / "adapter" / "tunewise_adapter.json").read_text())
    assert Path(info["base_model"]) == tmp_path / "tiny-llama"  # stored absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["merge", str(run_dir), "-o", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = tmp_path / "merged"
    tokenizer = AutoTokenizer.from_pretrained(merged)  # the run's tokenizer (and chat template) came along
    assert tokenizer.chat_template and tokenizer("roof").input_ids
    assert AutoModelForCausalLM.from_pretrained(merged) is not None


def test_interpolate_names_general_for_a_missing_general_file(pairs_file, tmp_path):
    from tunewise.config import dump_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(dump_config(load_config(None, values={"data.train": str(pairs_file)})))
    result = runner.invoke(app, ["interpolate", str(run_dir), "--general", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --general: file not found") and "data.train" not in result.output


def test_compare_with_folds_shows_mean_std_and_pairs_strategies_on_pooled_items(tiny_st_model, pairs_file, tmp_path):
    from rich.console import Console

    cfg = load_config(None, values={"model": tiny_st_model, "data.train": str(pairs_file), "train.epochs": 1,
                                    "train.batch_size": 8, "eval.k": [1, 10], "eval.folds": 2})
    result = compare(cfg, ["head", "full"], tmp_path / "cmp", console=Console(quiet=True))
    rows = result["rows"]
    for r in rows:
        assert r["folds"]["k"] == 2 and r["folds"]["after"]["std"] is not None
        assert r["after"] == pytest.approx(r["folds"]["after"]["mean"])
        assert r["interval"]["n"] == 60  # pooled: every query of the 60 pairs, held out once
    assert rows[0]["before"] == pytest.approx(rows[1]["before"])  # the same folds for every strategy
    other = next(r for r in rows if not r["best"])
    assert other["vs_best"]["n"] == 60 and 0 < other["vs_best"]["p_value"] <= 1
    assert " ± " in result["markdown"] and "2-fold cross-validation" in (tmp_path / "cmp" / "compare.md").read_text()
    for label in ("head", "full"):
        assert (tmp_path / "cmp" / label / "folds.md").is_file()


def test_compare_refuses_a_k_the_data_cannot_fold_before_any_run(pairs_file, tmp_path):
    from rich.console import Console

    cfg = load_config(None, values={"data.train": str(pairs_file), "eval.folds": 100})
    with pytest.raises(TunewiseError, match="100 folds need at least 100"):
        compare(cfg, ["head", "full"], tmp_path / "cmp", console=Console(quiet=True))
    assert not (tmp_path / "cmp").exists()


def test_markdown_table_of_fold_rows():
    row = {"strategy": "head", "metric": "mrr@20", "before": 0.25, "after": 0.3, "relative_improvement": 0.2,
           "trainable_params": 1000, "trainable_fraction": 0.01, "seconds": 12.0, "samples_per_second": 33.3,
           "peak_mib": 512.0, "folds": {"k": 5, "before": {"mean": 0.25, "std": 0.01}, "after": {"mean": 0.3, "std": 0.02},
                                        "gain": {"mean": 0.05, "std": 0.015}}}
    assert "| head | 0.2500 ± 0.0100 | 0.3000 ± 0.0200 | +20.0% |" in markdown_table([row])
