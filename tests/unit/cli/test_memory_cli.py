"""``tunewise memory`` on the command line: tables, --json, advice, and one-line errors."""

from __future__ import annotations

import json

import pytest
import typer
from transformers import BertConfig
from typer.testing import CliRunner

from tunewise.cli.memory import register

LLAMA2_7B = ["--family", "decoder", "--hidden-size", "4096", "--num-layers", "32", "--num-heads", "32",
             "--intermediate-size", "11008", "--vocab-size", "32000"]


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # a second entry point keeps `memory` a sub-command, as in the real app
        pass

    return app


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000).save_pretrained(folder)
    return str(folder)


def invoke(app, *args: str):
    return CliRunner().invoke(app, ["memory", *args])


def test_json_breakdown_adds_up(app, tiny_bert):
    result = invoke(app, "--model", tiny_bert, "--batch-size", "8", "--seq-len", "32", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)["estimate"]
    parts = ["weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "overhead_bytes"]
    assert sum(est[k] for k in parts) == est["total_bytes"]
    assert est["inputs"]["texts_per_example"] == 2  # embedding pairs: anchor + positive
    # 2.5 x the fp32 model size: params (168,128 for this BertConfig) * 4 bytes * 2.5
    assert est["rule_of_thumb_bytes"] == int(2.5 * 4 * 168_128)


def test_table_shows_components_rule_and_verdict(app, tiny_bert):
    result = invoke(app, "--model", tiny_bert, "--device", "cpu", "--device-memory", "64GiB")
    assert result.exit_code == 0, result.output
    for text in ("weights", "gradients", "optimizer states", "activations", "framework overhead", "2.5 x model size", "fits in 64.00 GiB"):
        assert text in result.stdout


def test_does_not_fit_lists_changes_best_first(app):
    result = invoke(app, *LLAMA2_7B, "--task", "causal_lm", "--batch-size", "4", "--seq-len", "1024", "--device-memory", "24GB", "--json")
    assert result.exit_code == 0, result.output
    advice = json.loads(result.stdout)["advice"]
    assert advice["fits"] is False
    assert advice["alternatives"] and all(a["total_bytes"] <= advice["usable_bytes"] for a in advice["alternatives"])
    assert any("QLoRA" in a["change"] for a in advice["alternatives"])
    table = invoke(app, *LLAMA2_7B, "--task", "causal_lm", "--batch-size", "4", "--seq-len", "1024", "--device-memory", "24GB")
    assert "does not fit" in table.stdout and "Changes that fit, best first" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "error: batch-size: must be a positive integer"),
        (["--device-memory", "lots"], "error: --device-memory: cannot read 'lots'"),
        (["--device-memory=-5GB"], "error: --device-memory: must be positive"),
        (["--device-memory", "24"], "error: --device-memory: '24' has no unit"),
        (["--strategy", "lorra"], "error: strategy: unknown 'lorra' (did you mean 'lora'?)"),
        (["--precision", "4bit"], "error: precision: 4-bit weights cannot be trained directly"),
        (["--strategy", "lora", "--lora-targets", "q,value"], "error: lora-targets: unknown 'value'"),
        (["--strategy", "lora", "--lora-targets", ","], "error: --lora-targets: empty"),
        (["--strategy", "lora", "--lora-dropout", "1.5"], "error: lora-dropout: must be in [0, 1)"),
    ],
)
def test_bad_input_is_one_line_exit_2(app, tiny_bert, args, message):
    result = invoke(app, "--model", tiny_bert, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_unknown_architecture_names_missing_fields_then_accepts_flags(app, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "mystery", "hidden_size": 256, "vocab_size": 5000}')
    result = invoke(app, "--model", str(tmp_path))
    assert result.exit_code == 2
    assert "missing n_layers, heads, intermediate" in result.stderr and "--num-layers N --num-heads N --intermediate-size N" in result.stderr
    fixed = invoke(app, "--model", str(tmp_path), "--num-layers", "4", "--num-heads", "4", "--intermediate-size", "1024", "--json", "--device", "cpu")
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["estimate"]["params"] > 0


def test_missing_folder_is_one_line_error(app, tmp_path):
    result = invoke(app, "--model", str(tmp_path / "nope" / "deeper"))
    assert result.exit_code == 2 and result.stderr.startswith("error: model:")
