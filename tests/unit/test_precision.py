"""train.precision: the CPU flag check, what auto resolves to, autocast in evaluation, the feature
cache's precision keys, and the MFU maths (tunewise.precision, tunewise.flops)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import tunewise
from tunewise import flops, precision
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.precision import (
    autocast_precision,
    cpu_has_native_bf16,
    effective_precision,
    inference_autocast,
    parse_cpu_flags,
    to_float32,
)

X86_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n\n"
X86_OLD = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_flag_check_is_a_pure_function_of_the_flags():
    assert cpu_has_native_bf16({"avx2", "avx512_bf16"})
    assert cpu_has_native_bf16({"amx_bf16", "amx_tile"}) and cpu_has_native_bf16(["AMX_TILE"])
    assert not cpu_has_native_bf16({"avx2", "avx512f", "avx512_vnni"})  # AVX-512 alone emulates bf16: slower than fp32
    assert not cpu_has_native_bf16(set())


def test_cpuinfo_parsing():
    assert "avx512_bf16" in parse_cpu_flags(X86_BF16) and cpu_has_native_bf16(parse_cpu_flags(X86_BF16))
    assert not cpu_has_native_bf16(parse_cpu_flags(X86_OLD))
    assert parse_cpu_flags(ARM) == {"fp", "asimd", "bf16", "i8mm"}
    assert not cpu_has_native_bf16(parse_cpu_flags(ARM))  # only measured x86 instruction sets count
    assert parse_cpu_flags("") == frozenset()


@pytest.fixture()
def cpu_flags(monkeypatch):
    def set_flags(flags: set[str]) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))

    return set_flags


def test_auto_is_bf16_on_a_cpu_with_native_bf16_else_fp32(cpu_flags):
    cpu_flags({"avx2", "avx512_bf16"})
    assert effective_precision("auto", "cpu") == "bf16"
    assert effective_precision("auto", "cpu", cpu_bf16_auto=False) == "fp32"  # a task that opts out
    cpu_flags({"avx2"})
    assert effective_precision("auto", "cpu") == "fp32"
    assert effective_precision("bf16", "cpu") == "bf16"  # forcing works without the flags


def test_fp32_forces_it_off_and_resolving_twice_is_stable(cpu_flags):
    cpu_flags({"amx_bf16"})
    assert effective_precision("fp32", "cpu") == "fp32"
    for value in ("fp32", "bf16"):
        assert effective_precision(effective_precision(value, "cpu"), "cpu") == value


def test_cuda_is_unaffected_by_the_cpu_flags(cpu_flags, monkeypatch):
    cpu_flags(set())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert effective_precision("auto", "cuda") == "bf16"
    assert effective_precision("auto", "cuda:1", cpu_bf16_auto=False) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert effective_precision("auto", "cuda") == "fp16"
    assert effective_precision("fp16", "cuda") == "fp16"


def test_bad_precisions_name_the_option():
    with pytest.raises(TunewiseError, match="train.precision: fp16 mixed precision needs a CUDA GPU"):
        effective_precision("fp16", "cpu")
    with pytest.raises(TunewiseError, match="train.precision: unknown 'fp8'"):
        effective_precision("fp8", "cpu")


def test_trainer_flags_follow_the_resolution(cpu_flags):
    from tunewise.tasks.training import precision_flags

    cpu_flags({"avx512_bf16"})
    assert precision_flags("auto", "cpu") == {"fp16": False, "bf16": True}
    assert precision_flags("fp32", "cpu") == {"fp16": False, "bf16": False}
    cpu_flags(set())
    assert precision_flags("auto", "cpu") == {"fp16": False, "bf16": False}


def test_inference_autocast_runs_matmuls_in_bf16_and_outputs_cast_back():
    layer = nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with inference_autocast("fp32", "cpu"):
        assert autocast_precision() == "fp32" and layer(x).dtype == torch.float32
    with inference_autocast("bf16", "cpu"):
        assert autocast_precision() == "bf16"
        out = layer(x)
    assert out.dtype == torch.bfloat16 and autocast_precision() == "fp32"
    assert to_float32(out).dtype == torch.float32
    assert to_float32(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64  # only half precisions are cast


class _HalfEncoder:
    """encode() like a SentenceTransformer under autocast: bf16 tensors."""

    device = torch.device("cpu")

    def encode(self, texts, convert_to_tensor=True, normalize_embeddings=True, **_):
        gen = torch.Generator().manual_seed(len(texts))
        return nn.functional.normalize(torch.randn(len(texts), 16, generator=gen), dim=-1).to(torch.bfloat16)


def test_retrieval_evaluation_scores_bf16_embeddings_in_float32(monkeypatch):
    from tunewise.config import EvalConfig
    from tunewise.data.retrieval import IRDataset
    from tunewise.evaluate import retrieval

    seen = []
    real_top_k = retrieval.top_k

    def spy(q, d, *args, **kwargs):
        seen.append((q.dtype, d.dtype))
        return real_top_k(q, d, *args, **kwargs)

    monkeypatch.setattr(retrieval, "top_k", spy)
    data = IRDataset(queries={"q1": "a", "q2": "b"}, corpus={"d1": "x", "d2": "y", "d3": "z"},
                     qrels={"q1": {"d1": 1}, "q2": {"d3": 1}})
    result = retrieval.evaluate_retrieval(_HalfEncoder(), data, EvalConfig(), show_progress=False)
    assert seen == [(torch.float32, torch.float32)]
    assert 0 <= result.metrics["mrr@20"] <= 1


def test_feature_cache_keys_by_precision(tmp_path, monkeypatch):
    from tunewise.models import feature_cache

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))
    layer = nn.Linear(4, 3)
    rows = {"a": torch.ones(4), "b": torch.arange(4.0)}
    calls = []

    def compute(todo):
        calls.append(autocast_precision())
        return layer(torch.stack([rows[t] for t in todo]))  # bf16 under autocast

    fp32 = feature_cache.cached_features("k", ["a", "b"], compute)
    with inference_autocast("bf16", "cpu"):
        bf16 = feature_cache.cached_features("k", ["a", "b"], compute)
        again = feature_cache.cached_features("k", ["a", "b"], compute)
    assert calls == ["fp32", "bf16"]  # the bf16 rows were not read from the fp32 folder; the second bf16 call hit
    assert fp32.path != bf16.path == again.path and again.status == "hit"
    assert bf16.features.dtype == fp32.features.dtype == torch.float32
    assert torch.allclose(bf16.features, fp32.features, atol=0.05)


def test_tiny_embedding_fit_in_bf16_records_precision_and_mfu(tiny_st_model, pairs_file, tmp_path):
    cfg = load_config(None, [
        f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}", "train.epochs=1",
        "train.batch_size=8", "train.learning_rate=1e-3", "eval.examples=0", "train.precision=bf16",
    ])
    result = tunewise.fit(cfg)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    train = metrics["train"]
    assert train["precision"] == "bf16"
    assert metrics["memory"]["estimate"]["inputs"]["precision"] == "bf16"  # the planner models the autocast run
    record = train["flops"]
    assert record["tokens"] > 0 and record["model_flops"] > 0 and 0 < record["mfu"]
    assert record["flops_per_sample"] == pytest.approx(record["model_flops"] / (train["examples"] * train["epochs"]))
    assert 0 <= metrics["after"]["mrr@20"] <= 1
    assert metrics["eval"]["precision"] == "bf16"  # evaluation follows training by default


def test_eval_precision_fp32_scores_in_full_precision_whatever_training_uses(cpu_flags, tiny_st_model, pairs_file,
                                                                            tmp_path, monkeypatch):
    from tunewise.tasks import embedding

    cpu_flags({"avx512_bf16"})
    cfg = load_config(None, ["train.precision=auto", "eval.precision=fp32"])
    assert precision.evaluation_precision(cfg, "cpu") == "fp32" and precision.run_precision(cfg, "cpu") == "bf16"
    assert precision.evaluation_precision(load_config(None, ["train.precision=auto"]), "cpu") == "bf16"
    with pytest.raises(TunewiseError, match="eval.precision: unknown 'bf32'; use train or fp32"):
        load_config(None, ["eval.precision=bf32"])

    seen: list[str] = []  # the autocast every evaluation pass of a fit runs under
    original = embedding.evaluate_retrieval

    def spy(*args, **kwargs):
        seen.append(autocast_precision())
        return original(*args, **kwargs)

    monkeypatch.setattr(embedding, "evaluate_retrieval", spy)
    run = load_config(None, [
        f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}", "train.epochs=1",
        "train.batch_size=8", "eval.examples=0", "train.precision=bf16", "eval.precision=fp32",
    ])
    metrics = json.loads((tunewise.fit(run).output_dir / "metrics.json").read_text())
    assert metrics["train"]["precision"] == "bf16" and metrics["eval"]["precision"] == "fp32"
    assert seen and set(seen) == {"fp32"}


def test_training_flops_follow_kaplan():
    # 6 FLOPs per trainable parameter per token (2 forward + 4 backward), 2 per frozen one
    assert flops.training_flops(tokens=10, trainable_params=100, frozen_params=0) == 6000
    assert flops.training_flops(tokens=10, trainable_params=0, frozen_params=100) == 2000
    assert flops.training_flops(tokens=3, trainable_params=5, frozen_params=7) == 3 * (30 + 14)
    assert flops.matmul_flops(2, 3, 4) == 48  # 24 outputs, 3 multiply-adds each
    assert flops.mfu(model_flops=50.0, seconds=2.0, peak_flops_per_second=100.0) == 0.25
    assert flops.mfu(1.0, 0.0, 100.0) == 0.0 and flops.mfu(1.0, 1.0, 0.0) == 0.0


def test_non_embedding_params_leave_lookups_out_and_split_frozen():
    model = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    model[1].requires_grad_(False)
    # embedding 800 left out; frozen 8*8+8 = 72; trainable 8*2+2 = 18
    assert flops.non_embedding_params([model]) == (18, 72)
    assert flops.non_embedding_params([model, model[2]]) == (18, 72)  # shared parameters count once


def test_token_counter_counts_training_tokens_only(tiny_bert):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert)
    ids = torch.ones(3, 7, dtype=torch.long)
    with flops.TokenCounter(model) as counter:
        model(input_ids=ids)  # (3, 7): 21 tokens, padding or not
        with torch.no_grad():
            model(input_ids=ids)  # evaluation: not counted
    model(input_ids=ids)  # after the block: not counted
    assert counter.tokens == 21
    assert flops.TokenCounter(nn.Linear(2, 2)).tokens == 0


def test_peak_probe_is_cached_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(flops, "probe_peak_flops", lambda device, prec: calls.append(prec) or 1e9)
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    assert flops.peak_flops("cpu", "bf16") == 1e9 and flops.peak_flops("cpu", "bf16") == 1e9
    flops.peak_flops("cpu", "fp32")
    assert calls == ["bf16", "fp32"]
    table = json.loads((tmp_path / "peak_flops.json").read_text())
    assert any("| bf16 |" in key and f"torch {torch.__version__}" in key for key in table)


def test_peak_probe_measures_a_positive_rate():
    assert flops.probe_peak_flops("cpu", "fp32", size=64, repeats=2) > 0


def test_a_task_can_keep_auto_in_fp32_on_cpu(cpu_flags, monkeypatch):
    import dataclasses

    from tunewise.precision import run_precision
    from tunewise.tasks.base import TASKS

    cpu_flags({"avx512_bf16"})
    cfg = load_config(None, ["data.train=x.jsonl"])
    assert run_precision(cfg, "cpu") == "bf16"
    task_cls = TASKS.get(cfg.task)
    monkeypatch.setattr(task_cls, "spec", dataclasses.replace(task_cls.spec, cpu_bf16_auto=False))
    assert run_precision(cfg, "cpu") == "fp32"
    cfg.train.precision = "bf16"
    assert run_precision(cfg, "cpu") == "bf16"


def test_a_probe_from_a_busy_machine_is_redone_when_it_is_quiet(tmp_path, monkeypatch):
    """A busy CPU's probe reads low; a quieter run probes again and keeps the higher peak."""
    import os

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path))
    cores = os.cpu_count() or 1
    readings = iter([2e9, 8e9, 5e9])
    monkeypatch.setattr(flops, "probe_peak_flops", lambda device, prec: next(readings))
    monkeypatch.setattr("os.getloadavg", lambda: (20.0 * cores, 0, 0))
    assert flops.peak_flops("cpu", "fp32") == 2e9  # busy: probed
    assert flops.peak_flops("cpu", "fp32") == 2e9  # as busy: reused
    monkeypatch.setattr("os.getloadavg", lambda: (0.1 * cores, 0, 0))
    assert flops.peak_flops("cpu", "fp32") == 8e9  # quiet now: probed again
    assert flops.peak_flops("cpu", "fp32") == 8e9  # measured quiet: reused, the third reading is never taken
