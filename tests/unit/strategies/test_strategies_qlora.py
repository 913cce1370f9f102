"""QLoRA: a 4-bit NF4 base (bitsandbytes) with LoRA adapters, on CPU and on a CUDA GPU.

Each test runs once per device: ``cpu`` where the installed bitsandbytes has a CPU 4-bit
backend (0.50+), ``cuda`` (marked gpu) where a GPU is present; each skips cleanly otherwise.
"""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

from tunewise.errors import TunewiseError
from tunewise.strategies import qlora as qlora_module

QUIET = Console(quiet=True)


def _cpu_problem() -> str | None:
    if not qlora_module.is_bitsandbytes_available():
        return "needs bitsandbytes"
    return qlora_module.bitsandbytes_cpu_problem()


DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(_cpu_problem() is not None, reason=f"CPU QLoRA: {_cpu_problem()}")),
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
                                pytest.mark.skipif(not qlora_module.is_bitsandbytes_available(), reason="needs bitsandbytes")]),
]
PEAK_METHOD = {"cpu": "process peak resident set size", "cuda": "torch.cuda.max_memory_allocated"}


@pytest.mark.parametrize("device", DEVICES)
def test_qlora_trains_a_4bit_base_and_writes_a_merged_model(device, tiny_st_model, pairs_file, tmp_path):
    from sentence_transformers import SentenceTransformer

    import tunewise

    result = tunewise.fit({"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {"train": str(pairs_file)},
                           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "device": device},
                           "eval": {"k": [1, 10]}, "strategy": {"name": "qlora", "rank": 4, "alpha": 8}}, console=QUIET)
    m = result.metrics
    assert m["strategy"]["name"] == "qlora"
    assert 0 < m["strategy"]["trainable_params"] < m["strategy"]["total_params"]
    assert m["memory"]["method"].startswith(PEAK_METHOD[device])
    assert m["train"]["steps"] > 0
    out = result.output_dir
    info = json.loads((out / "adapter" / "tunewise_adapter.json").read_text())
    assert info["strategy"] == "qlora" and info["merged"] is True
    merged = SentenceTransformer(str(out), device=device)
    assert "Linear4bit" not in {type(mod).__name__ for mod in merged.modules()}
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    emb = merged.encode(["roof permit"], convert_to_tensor=True)
    assert torch.isfinite(emb).all()


@pytest.mark.parametrize("device", DEVICES)
def test_qlora_quantizes_linear_layers_to_nf4(device, tiny_st_model):
    from tunewise.config import load_config
    from tunewise.strategies import resolve_strategy
    from tunewise.tasks import TASKS

    cfg = load_config(None, values={"model": tiny_st_model, "train.device": device, "strategy": {"name": "qlora", "rank": 4}})
    strategy, options = resolve_strategy(cfg)
    task = TASKS.get("embedding")()
    model = strategy.prepare(task.load_model(cfg, device), task, options, cfg)
    quant = [m for m in task.backbone(model).modules() if type(m).__name__ == "Linear4bit"]
    assert quant and quant[0].weight.quant_state.quant_type == "nf4"
    assert all(p.device.type == device for p in task.backbone(model).parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_qlora_sft_on_a_tiny_llama_saves_an_adapter_and_a_merged_model(device, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    import tunewise

    from tiny_models import build_tiny_lm, json_rows, write_jsonl

    # hidden 64: bitsandbytes' CPU kernels work in blocks of 64 input features
    model = build_tiny_lm(tmp_path / "tiny-llama", "llama", hidden=64)
    data = write_jsonl(tmp_path / "d.jsonl", json_rows(40))
    result = tunewise.fit({"task": "causal_lm", "model": model, "output_dir": str(tmp_path / "run"),
                           "data": {"train": data, "eval_size": 8}, "strategy": {"name": "qlora", "rank": 4},
                           "train": {"epochs": 2, "batch_size": 8, "learning_rate": 3e-3, "device": device},
                           "llm": {"max_length": 64, "max_new_tokens": 12, "format_check": "json"}},
                          console=QUIET)
    m = result.metrics
    assert m["strategy"]["name"] == "qlora" and m["memory"]["method"].startswith(PEAK_METHOD[device])
    assert m["after"]["eval_loss"] < m["before"]["eval_loss"]
    adapter = result.output_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    # The "before" evaluation ran on the 4-bit model first: the lowest layer's adapter still
    # learned, so gradients flowed back through the frozen 4-bit layers above it.
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lowest_b = [v for k, v in weights.items() if ".layers.0." in k and "lora_B" in k]
    assert lowest_b and all(v.abs().sum() > 0 for v in lowest_b)
    merged = AutoModelForCausalLM.from_pretrained(result.output_dir)  # a plain causal LM, with its head
    assert "Linear4bit" not in {type(mod).__name__ for mod in merged.modules()}
    assert type(merged).__name__ == "LlamaForCausalLM" and merged.lm_head.weight.shape[0] == merged.config.vocab_size
    # 4-bit weights count as the parameters they stand for, not as their packed bytes
    assert m["strategy"]["total_params"] - m["strategy"]["trainable_params"] == sum(p.numel() for p in merged.parameters())
    ids = torch.tensor([[1, 5, 6, 7]])
    assert torch.isfinite(merged(input_ids=ids).logits).all()


@pytest.mark.parametrize("device", DEVICES[:1])
def test_qlora_still_trains_every_layer_after_an_evaluation(device, tmp_path):
    """An evaluation between epochs (budget time curves) must not cut the gradient path.

    bitsandbytes' CPU backend repacks 4-bit weights on a no-grad forward into a layout whose
    matmul has no backward: without tunewise turning that off, the lowest layer's adapter got
    no gradient after the first evaluation.
    """
    from tunewise.config import load_config
    from tunewise.strategies import resolve_strategy
    from tunewise.tasks import TASKS

    from tiny_models import build_tiny_lm

    path = build_tiny_lm(tmp_path / "tiny-llama", "llama", hidden=64)
    cfg = load_config(None, values={"task": "causal_lm", "model": path, "train.device": device,
                                    "strategy": {"name": "qlora", "rank": 4}})
    strategy, options = resolve_strategy(cfg)
    task = TASKS.get("causal_lm")()
    model = strategy.prepare(task.load_model(cfg, device), task, options, cfg)
    ids = torch.randint(5, 60, (2, 16))
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    lowest_b = [p for n, p in model.named_parameters() if ".layers.0." in n and "lora_B" in n]
    assert lowest_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lowest_b)


def test_qlora_without_bitsandbytes_stops_before_any_work(monkeypatch, pairs_file, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    monkeypatch.setattr(qlora_module, "is_bitsandbytes_available", lambda: False)
    result = CliRunner().invoke(app, ["fit", "--strategy", "qlora", "--train", str(pairs_file), "-o", str(tmp_path / "q")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert 'strategy qlora: needs bitsandbytes; pip install "tunewise[qlora]"' in result.output
    assert not (tmp_path / "q").exists()


def test_qlora_on_cpu_with_an_old_bitsandbytes_says_what_to_install(monkeypatch):
    from tunewise.config import load_config
    from tunewise.strategies import resolve_strategy

    monkeypatch.setattr(qlora_module, "is_bitsandbytes_available", lambda: True)
    monkeypatch.setattr(qlora_module, "bitsandbytes_cpu_problem", lambda: "bitsandbytes 0.43.1 has no CPU 4-bit backend (RuntimeError)")
    cfg = load_config(None, values={"train.device": "cpu", "strategy": {"name": "qlora"}})
    with pytest.raises(TunewiseError, match=r"no CUDA GPU here and bitsandbytes 0.43.1 has no CPU 4-bit backend.*"
                                            r'pip install -U "bitsandbytes>=0.50", or use strategy: lora') as err:
        resolve_strategy(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["int4", "bfloat16"])
def test_qlora_compute_dtype_is_checked(value):
    from tunewise.config import load_config
    from tunewise.strategies import resolve_strategy

    with pytest.raises(TunewiseError, match=f"strategy.compute_dtype: use auto, bf16, fp16 or fp32, got '{value}'"):
        resolve_strategy(load_config(None, values={"strategy": {"name": "qlora", "compute_dtype": value}}))
