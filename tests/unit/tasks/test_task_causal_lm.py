"""The causal_lm task end to end on tiny random Llama and GPT-2 models built here (never downloaded)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tunewise.config import load_config
from tunewise.errors import TunewiseError

from tiny_models import CHATML, build_tiny_lm, json_rows, tiny_tokenizer, write_jsonl  # noqa: E402,F401
from tiny_models import lm_config as config  # noqa: E402

QUIET = Console(quiet=True)


# ---- config rules


def test_default_strategy_and_primary_metric_per_task():
    lm = load_config(values={"task": "causal_lm"})
    assert lm.task == "causal-lm"  # the old spelling is an alias
    assert lm.strategy == {"name": "lora"}  # LoRA unless a strategy is named
    assert lm.eval.primary == "exact_match"  # no format check: exact match decides
    assert load_config(values={"task": "causal_lm", "llm.format_check": "json"}).eval.primary == "format_valid"
    assert load_config(values={"task": "causal_lm", "strategy.name": "full"}).strategy == {"name": "full"}
    emb = load_config()
    assert emb.strategy == {"name": "full"} and emb.eval.primary == "mrr@20"
    assert load_config(values={"task": "causal_lm", "eval.primary": "answer_likelihood"}).eval.primary == "answer_likelihood"
    with pytest.raises(TunewiseError, match="task causal-lm reports format_valid, exact_match, answer_likelihood"):
        load_config(values={"task": "causal_lm", "eval.primary": "ndcg@10"})
    with pytest.raises(TunewiseError, match="format_valid needs a format check"):
        load_config(values={"task": "causal_lm", "eval.primary": "format_valid"})
    with pytest.raises(TunewiseError, match="not a metric of task 'embedding'"):
        load_config(values={"eval.primary": "exact_match"})
    with pytest.raises(TunewiseError, match="llm.use_chat_template"):
        load_config(values={"task": "causal_lm", "llm.use_chat_template": "sometimes"})


# ---- end to end


def test_fit_full_learns_the_format_and_saves_a_loadable_model(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM

    from tunewise.run import fit

    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    result = fit(config(tmp_path, tiny_llama, data, strategy="full", train__epochs=6), console=QUIET)
    m = result.metrics
    assert m["primary_metric"] == "format_valid"
    assert set(m["before"]) == {"exact_match", "format_valid", "answer_likelihood", "eval_loss", "perplexity"}
    assert m["before"]["answer_likelihood"] == pytest.approx(1 / m["before"]["perplexity"])
    assert m["after"]["eval_loss"] < m["before"]["eval_loss"]  # it learns
    assert m["after"]["perplexity"] < m["before"]["perplexity"]
    # per-example items: exact match and format validity (the token-weighted loss has none)
    assert set(m["uncertainty"]) == {"exact_match", "format_valid"}
    assert m["uncertainty"]["exact_match"]["n"] == len(m["items"]["format_valid"]["after"]) == 8

    # per-item scores average to the reported metrics: the paired intervals' point gain is after - before
    for name, interval in m["uncertainty"].items():
        assert interval["difference"] == pytest.approx(m["after"][name] - m["before"][name], abs=1e-9), name
    assert m["data"]["kind"] == "prompt_completion" and m["data"]["chat_template"] == "the model's chat template"
    assert m["data"]["train_examples"] == 32 and m["data"]["eval_prompts"] == 8 and m["data"]["truncated"] == 0
    ex = m["examples"]["after"][0]
    assert set(ex) == {"input", "expected", "output", "correct", "format_valid"}
    out = result.output_dir
    assert {"metrics.json", "config.yaml", "README.md", "config.json"} <= {p.name for p in out.iterdir()}
    assert "text-generation" in (out / "README.md").read_text()
    AutoModelForCausalLM.from_pretrained(out)
    again = load_config(out / "config.yaml")  # the published config reloads as is
    assert again.eval.primary == "format_valid" and again.strategy == {"name": "full"}


def only_x(text: str) -> bool:
    return set(text) <= {"x"}


def test_chat_data_packing_partial_and_a_python_check(tmp_path, tiny_llama):
    from tunewise.run import as_config, fit

    rows = [{"messages": [{"role": "system", "content": "short"}, {"role": "user", "content": f"say {i}"},
                          {"role": "assistant", "content": "x" * (5 + 10 * (i % 4))}]} for i in range(20)]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    cfg = as_config(config(tmp_path, tiny_llama, data, strategy="partial", train__epochs=1, llm__max_length=64,
                           llm__packing=True, data__eval_size=4))
    cfg.llm.format_check = only_x  # Python API only: a callable (YAML and --set cannot name one)
    result = fit(cfg, console=QUIET)
    report = result.metrics["data"]
    assert report["kind"] == "chat" and report["packing"] is True
    assert report["format_check"] == f"python:{__name__}.only_x"  # a Python callable, Python API only
    assert "format_valid" in result.metrics["after"]
    assert result.metrics["strategy"]["trainable_params"] < result.metrics["strategy"]["total_params"]
    # Character tokens: system turn 15, user turn 13-14, generation prompt 11 = 39-40 before the answer;
    # answers are 5/15/25/35 characters + <|im_end|> + newline, so those of 25 and 35 (10 of 20) pass 64.
    assert report["truncated"] == 10
    assert result.metrics["primary_metric"] == "format_valid"


def test_prompt_longer_than_context_is_an_error(tmp_path, tiny_llama):
    from tunewise.tasks.causal_lm import CausalLMTask

    rows = json_rows(10) + [{"prompt": "p" * 200, "completion": "{}"}]
    cfg = load_config(values={"task": "causal_lm", "model": tiny_llama,
                              "data.train": write_jsonl(tmp_path / "long.jsonl", rows), "llm.max_length": 64})
    with pytest.raises(TunewiseError, match="row 11: the prompt is .* tokens, longer than the context of 64"):
        CausalLMTask().prepare_data(cfg)


def test_gpt2_without_template_raw_and_fallback(tmp_path, tiny_gpt2):
    from tunewise.tasks.causal_lm import CausalLMTask

    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "yo"}]}] * 4)
    cfg = load_config(values={"task": "causal_lm", "model": tiny_gpt2, "data.train": chat, "data.eval_size": 1})
    with pytest.raises(TunewiseError, match="has no chat template and chat data was given; set llm.chat_template: simple"):
        CausalLMTask().prepare_data(cfg)
    cfg.llm.chat_template = "simple"
    data = CausalLMTask().prepare_data(cfg)
    assert data.report["chat_template"] == "fallback 'simple'"
    pc = write_jsonl(tmp_path / "pc.jsonl", json_rows(10))
    data = CausalLMTask().prepare_data(load_config(values={"task": "causal_lm", "model": tiny_gpt2, "data.train": pc}))
    assert data.report["chat_template"].startswith("none")


def test_lora_adapter_and_merged_model(tmp_path, tiny_llama):
    from tunewise.strategies import STRATEGIES

    if "lora" not in STRATEGIES:
        pytest.skip("strategies/lora.py is not in this tree yet")
    from transformers import AutoModelForCausalLM

    from tunewise.run import fit

    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    result = fit(config(tmp_path, tiny_llama, data, train__epochs=1, strategy={"name": "lora", "rank": 4}), console=QUIET)
    m = result.metrics
    assert m["strategy"]["name"] == "lora" and m["strategy"]["trainable_params"] < m["strategy"]["total_params"]
    adapter = json.loads((result.output_dir / "adapter" / "adapter_config.json").read_text())
    # causal LMs adapt every linear layer of the blocks by default (q/v alone learned no answers on the demo)
    assert set(adapter["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert m["memory"]["estimate"]["inputs"]["lora_targets"] == ["q", "k", "v", "o", "mlp_in", "mlp_out"]
    merged = AutoModelForCausalLM.from_pretrained(result.output_dir)  # merged (strategy merge: true)
    assert not hasattr(merged, "peft_config")
    assert (result.output_dir / "chat_template.jinja").is_file() or "chat_template" in (
        result.output_dir / "tokenizer_config.json").read_text()


# ---- bad input on the command line: one line, exit 2


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}, "missing 'role'"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}, "missing 'content'"),
    ({"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "unknown role 'bot'"),
    ({"prompt": "q", "completion": ""}, "empty completion"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, tiny_llama, record, message, capsys):
    from tunewise.cli.app import app

    good = json_rows(3)
    if "messages" in record:
        good = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
                for r in good]
    data = write_jsonl(tmp_path / "bad.jsonl", good + [record])
    with pytest.raises(SystemExit) as info:
        app(["fit", "--train", data, "--model", tiny_llama, "-o", str(tmp_path / "out"),
             "--set", "task=causal_lm", "--strategy", "full"], standalone_mode=True)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "row 4" in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_head_strategy_is_refused_for_a_causal_lm_with_the_reason():
    # refused when the config loads (the task declares it), before any data is read
    with pytest.raises(TunewiseError, match="strategy head: a causal LM's head is its vocabulary projection.*use lora"):
        load_config(values={"task": "causal_lm", "strategy.name": "head"})
