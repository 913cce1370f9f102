"""Ship a run smaller: ``tunewise export RUN --format onnx [--quantize int8]``.

The task says which graph its model exports (the :class:`ExportsOnnx` capability, an
:class:`OnnxGraph`); this module exports it with PyTorch's own exporter
(``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``), checks the exported graph
against PyTorch on sample inputs, and quantizes with ONNX Runtime's own dynamic quantizer
(``onnxruntime.quantization.quantize_dynamic``, int8 weights, activations quantized per batch).

The folder layouts are the ones the ecosystem's ONNX loaders read:

* embedding: the sentence-transformers folder with ``onnx/model.onnx`` (int8:
  ``onnx/model_qint8.onnx``) in place of the transformer's weights, the layout of
  ``SentenceTransformer(path, backend="onnx", model_kwargs={"file_name": ...})``; pooling and any
  Dense head stay sentence-transformers modules, as that backend runs them.
* classification: ``config.json``, the tokenizer and ``model.onnx`` (int8: ``model_qint8.onnx``),
  the layout of optimum's ``ORTModelForSequenceClassification``, or onnxruntime directly.

optimum itself is not needed to export or to run the graph here (its 2.x releases require
transformers < 4.58); :func:`onnx_sentence_transformer` runs an exported encoder through
onnxruntime inside the run's own SentenceTransformer, which is how ``benchmarks/export.py``
scores it on the run's evaluation set.

A LoRA run saved unmerged (``strategy.merge: false``) is merged first, so it exports like a full run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tunewise.errors import TunewiseError

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
OPSET = 18
SAMPLE_TEXTS = ("a short text", "a somewhat longer text with more words in it, to vary the sequence length", "three words here")
# weights the ONNX graph replaces (the rest of the folder is copied: configs, tokenizer, pooling, heads)
REPLACED = frozenset({"model.safetensors", "model.safetensors.index.json"})
SKIPPED_DIRS = frozenset({"adapter", "_checkpoints"})


@dataclass
class OnnxGraph:
    """What a task exports: a module whose forward takes the tokenizer's tensors by name.

    Args:
        module: ``forward(input_ids, attention_mask[, token_type_ids]) -> tensor``.
        tokenizer: makes the sample inputs (and names the graph's inputs).
        output: the graph output's name (``last_hidden_state``, ``logits``): what the
            ecosystem's ONNX loaders expect.
        file: where the graph goes inside the export folder.
        sequence_output: the output has a per-token axis (compared on real tokens only).
    """

    module: Any
    tokenizer: Any
    output: str
    file: str
    sequence_output: bool = False


@runtime_checkable
class ExportsOnnx(Protocol):
    """``tunewise export``: the graph of the run's saved model (``config.model`` is its folder)."""

    def onnx_graph(self, config: Any) -> OnnxGraph: ...


@dataclass
class ExportResult:
    output_dir: Path
    task: str
    file: Path
    quantize: str | None
    max_abs_diff: float


def transformer_graph(model: Any, output: str) -> Any:
    """Wrap a transformers model so its forward takes tensors by name and returns one output (ONNX-exportable)."""
    import torch

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # (batch, seq) each
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return getattr(self.model(**kwargs, return_dict=True), output)

    return Graph().eval()


def is_onnxscript_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxscript") is not None


def export_run(run_dir: str | Path, *, fmt: str = "onnx", quantize: str | None = None, output: str | Path | None = None,
               overwrite: bool = False) -> ExportResult:
    """Export a finished run's model (``tunewise export``).

    Args:
        run_dir: the run folder.
        fmt: ``onnx``.
        quantize: None, or ``int8`` (dynamic quantization: int8 weights).
        output: the export folder (default: ``<run>-onnx`` or ``<run>-onnx-int8`` beside the run).
        overwrite: replace an existing export folder.

    Returns:
        The folder, the graph file and the largest difference from PyTorch on sample inputs.

    Raises:
        TunewiseError: not a run, a task without an exporter, an unknown format or
            quantization, a missing exporter dependency, or an exported graph that disagrees
            with PyTorch; nothing is published then.
    """
    from tunewise.outputs import check_output_dir, staged_dir, write_json
    from tunewise.predict import model_folder, open_run
    from tunewise.run import no_weight_bars, quiet_libraries
    from tunewise.tasks import TASKS

    if fmt not in FORMATS:
        raise TunewiseError(f"--format: '{fmt}' is not supported; use {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise TunewiseError(f"--quantize: '{quantize}' is not supported; use {', '.join(QUANTIZATIONS)} or leave it out")
    run = open_run(run_dir)
    task = TASKS.get(run.config.task)()
    if not isinstance(task, ExportsOnnx):
        usable = ", ".join(name for name in TASKS.names() if isinstance(TASKS.get(name)(), ExportsOnnx))
        raise TunewiseError(f"export: task {run.config.task} has no ONNX exporter (export works for: {usable})")
    if not is_onnxscript_available():
        raise TunewiseError('export: the ONNX exporter needs onnxscript; pip install "tunewise[export]" (or pip install onnxscript onnxruntime)')
    default = run.path.parent / f"{run.path.name}-onnx{'-' + quantize if quantize else ''}"
    out = check_output_dir(output or default, overwrite)
    if out.resolve() == run.path.resolve() or run.path.resolve() in out.resolve().parents:
        raise TunewiseError(f"--output: {out} is inside the run; export to another folder")
    quiet_libraries()
    with model_folder(run) as folder:
        run.config.model = str(folder)
        with no_weight_bars():
            graph = task.onnx_graph(run.config)
        with staged_dir(out) as staging:
            _copy_model_files(folder, staging)
            target = staging / graph.file
            diff = export_graph(graph, target)
            if quantize == "int8":
                quantized = target.with_name(f"{target.stem}_qint8.onnx")
                quantize_int8(target, quantized)
                target.unlink()
                target = quantized
                diff = max_abs_diff(graph, target)
            write_json(staging / "export.json", {
                "run": str(run.path.resolve()), "task": run.config.task, "format": fmt, "quantize": quantize,
                "file": str(target.relative_to(staging)), "output": graph.output, "opset": OPSET,
                "max_abs_diff_vs_pytorch": diff, "sample_texts": list(SAMPLE_TEXTS),
            })
    return ExportResult(out, run.config.task, out / target.relative_to(staging), quantize, diff)


def _copy_model_files(folder: Path, staging: Path) -> None:
    for item in folder.iterdir():
        if item.name in REPLACED or item.name in SKIPPED_DIRS or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, staging / item.name)
        else:
            shutil.copy2(item, staging / item.name)


def _samples(graph: OnnxGraph) -> dict[str, Any]:
    enc = graph.tokenizer(list(SAMPLE_TEXTS), padding=True, truncation=True, max_length=64, return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


def export_graph(graph: OnnxGraph, target: Path) -> float:
    """Export ``graph`` to ``target`` (dynamic batch and sequence axes); returns its largest difference from PyTorch.

    Raises:
        TunewiseError: the exporter fails, or the graph disagrees with PyTorch (a wrong export is never published).
    """
    import torch

    target.parent.mkdir(parents=True, exist_ok=True)
    sample = _samples(graph)
    dims = {name: {0: torch.export.Dim.DYNAMIC, 1: torch.export.Dim.DYNAMIC} for name in sample}
    with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
        try:
            program = torch.onnx.export(graph.module, args=(), kwargs=sample, dynamic_shapes=dims, input_names=list(sample),
                                        output_names=[graph.output], opset_version=OPSET, dynamo=True, external_data=False)
        except Exception as err:  # the exporter raises many kinds; one line, naming the model
            raise TunewiseError(f"export: torch.onnx could not export this model ({type(err).__name__}: "
                                f"{str(err).splitlines()[0] if str(err) else ''})") from None
        program.save(str(target))
    diff = max_abs_diff(graph, target)
    with torch.no_grad():
        scale = float(graph.module(**sample).abs().max())
    if diff > 1e-3 * max(1.0, scale):
        target.unlink(missing_ok=True)
        raise TunewiseError(f"export: the ONNX graph disagrees with PyTorch (max difference {diff:.3g}); not written")
    return diff


def max_abs_diff(graph: OnnxGraph, onnx_file: Path) -> float:
    """Largest absolute difference between the ONNX graph and the PyTorch module on the sample texts (real tokens only)."""
    import numpy as np
    import torch

    sample = _samples(graph)
    session = _session(onnx_file)
    names = {i.name for i in session.get_inputs()}
    got = session.run([graph.output], {k: v.numpy() for k, v in sample.items() if k in names})[0]
    with torch.no_grad():
        want = graph.module(**sample).float().numpy()
    delta = np.abs(got - want)
    if graph.sequence_output:
        delta = delta * sample["attention_mask"].numpy()[..., None]
    return float(delta.max())


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization of the weights with ONNX Runtime's own quantizer."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_exporter():
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def _session(onnx_file: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's and quantizer's progress prints and advice warnings: not for the user's screen."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]  # onnxruntime.quantization warns through the root logger
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


# -- running an exported encoder ------------------------------------------------------------------


def onnx_sentence_transformer(model_dir: str | Path, onnx_file: str | Path, *, threads: int | None = None) -> Any:
    """The SentenceTransformer of ``model_dir`` with its transformer replaced by the ONNX graph ``onnx_file``.

    Pooling, Dense heads and normalisation stay the model's own modules (as in
    sentence-transformers' ONNX backend), so ``encode`` and every evaluator work unchanged.
    """
    import torch

    from tunewise.models.loading import load_sentence_transformer

    model = load_sentence_transformer(str(model_dir), device="cpu")
    inner = model[0]
    session = _session(Path(onnx_file), threads)
    names = {i.name for i in session.get_inputs()}

    class OnnxBackbone(torch.nn.Module):
        def __init__(self, config: Any) -> None:
            super().__init__()
            self.config = config

        def forward(self, input_ids, attention_mask, token_type_ids=None, **_: Any):
            feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            out = session.run(None, {k: v.cpu().numpy() for k, v in feeds.items() if k in names and v is not None})[0]
            return {"last_hidden_state": torch.from_numpy(out)}

    inner.model = OnnxBackbone(inner.model.config)
    return model

