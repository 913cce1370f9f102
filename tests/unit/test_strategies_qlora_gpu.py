"""QLoRA needs a CUDA GPU and bitsandbytes: these tests skip cleanly without either."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

require_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
require_bitsandbytes = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


@pytest.mark.gpu
@require_gpu
@require_bitsandbytes
def test_qlora_trains_a_4bit_base_and_writes_a_merged_model(tiny_st_model, pairs_file, tmp_path):
    from rich.console import Console
    from sentence_transformers import SentenceTransformer

    import tunewise

    result = tunewise.fit({"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {"train": str(pairs_file)},
                           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3}, "eval": {"k": [1, 10]},
                           "strategy": {"name": "qlora", "rank": 4, "alpha": 8}}, console=Console(quiet=True))
    m = result.metrics
    assert m["strategy"]["name"] == "qlora"
    assert 0 < m["strategy"]["trainable_params"] < m["strategy"]["total_params"]
    assert m["memory"]["method"] == "torch.cuda.max_memory_allocated"
    # the 4-bit base really was quantized while training
    history = m["train"]
    assert history["steps"] > 0
    out = result.output_dir
    info = json.loads((out / "adapter" / "tunewise_adapter.json").read_text())
    assert info["strategy"] == "qlora" and info["merged"] is True
    merged = SentenceTransformer(str(out), device="cuda")
    assert "Linear4bit" not in {type(mod).__name__ for mod in merged.modules()}
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    emb = merged.encode(["roof permit"], convert_to_tensor=True)
    assert torch.isfinite(emb).all()


@pytest.mark.gpu
@require_gpu
@require_bitsandbytes
def test_qlora_quantizes_linear_layers_to_nf4(tiny_st_model):
    from tunewise.config import load_config
    from tunewise.strategies import resolve_strategy
    from tunewise.tasks import TASKS

    cfg = load_config(None, values={"model": tiny_st_model, "strategy": {"name": "qlora", "rank": 4}})
    strategy, options = resolve_strategy(cfg)
    task = TASKS.get("embedding")()
    model = strategy.prepare(task.load_model(cfg, "cuda"), task, options, cfg)
    kinds = {type(m).__name__ for m in task.backbone(model).modules()}
    assert "Linear4bit" in kinds
    quant = [m for m in task.backbone(model).modules() if type(m).__name__ == "Linear4bit"]
    assert quant[0].weight.quant_state.quant_type == "nf4"


@pytest.mark.gpu
@require_gpu
@require_bitsandbytes
def test_qlora_sft_on_a_tiny_llama_saves_an_adapter_and_a_merged_model(tmp_path):
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    import tunewise
    from test_task_causal_lm import build_tiny_lm, json_rows, write_jsonl

    model = build_tiny_lm(tmp_path / "tiny-llama", "llama")
    data = write_jsonl(tmp_path / "d.jsonl", json_rows(40))
    result = tunewise.fit({"task": "causal_lm", "model": model, "output_dir": str(tmp_path / "run"),
                           "data": {"train": data, "eval_size": 8}, "strategy": {"name": "qlora", "rank": 4},
                           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3},
                           "llm": {"max_length": 64, "max_new_tokens": 12, "format_check": "json"}},
                          console=Console(quiet=True))
    m = result.metrics
    assert m["strategy"]["name"] == "qlora" and m["memory"]["method"] == "torch.cuda.max_memory_allocated"
    assert (result.output_dir / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert "Linear4bit" not in {type(mod).__name__ for mod in merged.modules()}
