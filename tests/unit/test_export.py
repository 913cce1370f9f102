"""``tunewise export``: tiny runs to ONNX (and int8), checked against PyTorch; refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from use_fixtures import QUIET, build_classifier_run, build_embedding_run

import tunewise
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.export import export_run, onnx_sentence_transformer

from conftest import make_pairs  # noqa: E402

pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

embedding_run = pytest.fixture(scope="module")(build_embedding_run)
classifier_run = pytest.fixture(scope="module")(build_classifier_run)


def test_embedding_export_encodes_like_pytorch(embedding_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    result = export_run(embedding_run, output=tmp_path / "onnx")
    out = tmp_path / "onnx"
    assert result.file == out / "onnx" / "model.onnx" and result.file.is_file()
    assert not (out / "model.safetensors").exists()  # the graph replaces the transformer's weights
    assert (out / "modules.json").is_file() and (out / "tokenizer.json").is_file()  # the rest of the ST folder stays
    info = json.loads((out / "export.json").read_text())
    assert info["file"] == "onnx/model.onnx" and info["quantize"] is None and info["max_abs_diff_vs_pytorch"] < 1e-4
    texts = [r["query"] for r in make_pairs(10)]  # other texts and lengths than the export's samples
    torch_emb = SentenceTransformer(str(embedding_run)).encode(texts, normalize_embeddings=True)
    onnx_emb = onnx_sentence_transformer(embedding_run, result.file).encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(onnx_emb, torch_emb, atol=1e-4)


@pytest.mark.slow  # exports with torch.onnx (dynamo): 12-20 s each on a shared CPU
def test_int8_export_is_smaller_and_close(embedding_run, tmp_path):
    fp32 = export_run(embedding_run, output=tmp_path / "fp32")
    int8 = export_run(embedding_run, quantize="int8", output=tmp_path / "int8")
    assert int8.file.name == "model_qint8.onnx" and not (tmp_path / "int8" / "onnx" / "model.onnx").exists()
    # a 32-wide random model: most weights are in the embeddings, which dynamic quantization keeps in float
    assert int8.file.stat().st_size < fp32.file.stat().st_size
    texts = [r["query"] for r in make_pairs(10)]
    a = onnx_sentence_transformer(embedding_run, fp32.file).encode(texts, normalize_embeddings=True)
    b = onnx_sentence_transformer(embedding_run, int8.file).encode(texts, normalize_embeddings=True)
    cosine = (a * b).sum(-1)
    assert cosine.min() > 0.9 and not np.allclose(a, b, atol=1e-6)  # quantized: close, not identical


@pytest.mark.slow  # exports with torch.onnx (dynamo): 12-20 s each on a shared CPU
def test_classifier_export_gives_the_same_logits(classifier_run, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = export_run(classifier_run, output=tmp_path / "cls")
    assert result.file == tmp_path / "cls" / "model.onnx"
    config = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["alpha", "beta", "gamma"]
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "cls"))
    enc = tokenizer(["w0 w1 w2", "w20 w21 w22 w20 w21 w22 w20"], padding=True, return_tensors="np")
    session = ort.InferenceSession(str(result.file), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    logits = session.run(["logits"], {k: v for k, v in enc.items() if k in names})[0]
    model = AutoModelForSequenceClassification.from_pretrained(str(classifier_run)).eval()
    with torch.no_grad():
        want = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    np.testing.assert_allclose(logits, want, atol=1e-4)


@pytest.mark.slow  # exports with torch.onnx (dynamo): 12-20 s each on a shared CPU
def test_a_lora_run_saved_unmerged_is_merged_first(tiny_st_model, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(40)), encoding="utf-8")
    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs}", f"output_dir={tmp_path / 'run'}",
                             "train.epochs=1", "train.batch_size=8", "strategy={name: lora, merge: false}"])
    run = tunewise.fit(cfg, console=QUIET).output_dir
    result = export_run(run, output=tmp_path / "onnx")
    assert result.max_abs_diff < 1e-4 and not (tmp_path / "onnx" / "adapter").exists()
    from tunewise.strategies.lora import merge_run

    merged = merge_run(run, tmp_path / "merged")
    from sentence_transformers import SentenceTransformer

    texts = ["roof question", "a door"]
    want = SentenceTransformer(str(merged)).encode(texts, normalize_embeddings=True)
    got = onnx_sentence_transformer(merged, result.file).encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(got, want, atol=1e-4)


# -- bad input -------------------------------------------------------------------------------------


def test_refusals_write_nothing(embedding_run, tmp_path, tiny_st_model, monkeypatch):
    with pytest.raises(TunewiseError, match="--format: 'tflite' is not supported; use onnx"):
        export_run(embedding_run, fmt="tflite", output=tmp_path / "a")
    with pytest.raises(TunewiseError, match="--quantize: 'int4' is not supported"):
        export_run(embedding_run, quantize="int4", output=tmp_path / "a")
    with pytest.raises(TunewiseError, match="is not a tunewise run"):
        export_run(tiny_st_model, output=tmp_path / "a")
    with pytest.raises(TunewiseError, match="inside the run"):
        export_run(embedding_run, output=embedding_run / "onnx")
    monkeypatch.setattr("tunewise.export.is_onnxscript_available", lambda: False)
    with pytest.raises(TunewiseError, match=r'needs onnxscript; pip install "tunewise\[export\]"'):
        export_run(embedding_run, output=tmp_path / "a")
    assert not (tmp_path / "a").exists() and not (embedding_run / "onnx").exists()


def test_a_task_without_an_exporter(tmp_path):
    run = tmp_path / "lm-run"  # a finished run's two files are what export reads before the task's capability
    run.mkdir()
    (run / "config.yaml").write_text("task: causal-lm\n", encoding="utf-8")
    (run / "metrics.json").write_text(json.dumps({"task": "causal-lm", "after": {"exact_match": 0.5}}), encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"export: task causal-lm has no ONNX exporter \(export works for: .*embedding"):
        export_run(run, output=tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # exports with torch.onnx (dynamo): 12-20 s each on a shared CPU
def test_cli_export(embedding_run, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    result = CliRunner().invoke(app, ["export", str(embedding_run), "--quantize", "int8", "--output", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "q" / "onnx" / "model_qint8.onnx").is_file() and "model_qint8.onnx" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--output", str(tmp_path / "z")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: RUN:")
