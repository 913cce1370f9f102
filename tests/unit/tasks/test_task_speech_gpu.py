"""The speech task's CUDA paths (QLoRA, fp16/bf16 autocast, CUDA peak memory): skipped without a GPU."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console

from tunewise.config import load_config

from tiny_models import build_tiny_whisper, write_speech_csv  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
QUIET = Console(quiet=True)
TEXTS = [f"the roof permit {w}" for w in ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")]


@pytest.fixture(scope="module")
def whisper_en(tmp_path_factory):
    return str(build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-en"))


@pytest.fixture(scope="module")
def speech_csv(tmp_path_factory):
    return str(write_speech_csv(tmp_path_factory.mktemp("speech"), TEXTS, seconds=0.5))


def _config(tmp_path, model, data, **values):
    base = {"task": "asr", "model": model, "output_dir": str(tmp_path / "run"), "overwrite": True, "data.train": data,
            "data.eval_size": 3, "train.epochs": 2, "train.batch_size": 4, "train.learning_rate": 1e-3,
            "speech.max_new_tokens": 4, "eval.resamples": 200, "train.device": "cuda"}
    return load_config(None, values={**base, **values})


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_speech_fit_on_cuda_with_mixed_precision(tmp_path, whisper_en, speech_csv, strategy):
    from transformers import WhisperForConditionalGeneration

    from tunewise.run import fit

    result = fit(_config(tmp_path, whisper_en, speech_csv, strategy=strategy), console=QUIET)
    m = result.metrics
    assert m["primary_metric"] == "wer" and m["after"]["wer"] >= 0
    assert str(m.get("device", "cuda")).startswith("cuda")
    if strategy == "full":
        WhisperForConditionalGeneration.from_pretrained(result.output_dir)
    print("speech", strategy, json.dumps({k: m.get(k) for k in ("device", "precision", "memory")}, default=str)[:600])


def test_speech_qlora_on_cuda_trains_a_4bit_base(tmp_path, whisper_en, speech_csv):
    pytest.importorskip("bitsandbytes")
    from tunewise.run import fit

    result = fit(_config(tmp_path, whisper_en, speech_csv, strategy="qlora"), console=QUIET)
    m = result.metrics
    assert m["primary_metric"] == "wer"
    assert any(result.output_dir.glob("*.safetensors")) or any(result.output_dir.rglob("adapter_model.safetensors"))
    print("speech qlora", json.dumps({k: m.get(k) for k in ("device", "precision", "memory", "strategy")}, default=str)[:800])
