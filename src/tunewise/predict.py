"""Use a finished run: ``tunewise predict RUN INPUT`` and :func:`predict`, its Python equivalent.

A run folder (what ``tunewise fit`` or ``tunewise demo`` published: the model, ``metrics.json``
and ``config.yaml``) is opened with its task's own loader, and the task says what its model
does with new inputs by returning a :class:`Predictor` (the :class:`Predicts` capability):

| model kind | ``Predictor`` | one output row per input |
|---|---|---|
| encoder (embedding, image search) | ``encode``: inputs -> unit vectors | ``embedding``; with a corpus, per hit: ``rank``, ``hit``, ``score`` |
| classifier (text, image) | ``apply``: labels with probabilities | ``label``, ``score``, ``top`` (the ``top_k`` best labels with scores) |
| causal LM | ``apply``: generation with the run's chat template | ``output`` |

Inputs are a list (of texts, image paths or dicts), a ``.txt`` file (one input per line), a
CSV/JSONL/Parquet file (the column the model takes: ``text``, ``image``, ``prompt``...; or
``column=``), or a folder of images. Outputs go to ``.jsonl``, ``.csv`` or (vectors only)
``.npy``, written atomically once every input is done.

A run trained with ``strategy.merge: false`` (a LoRA adapter beside its base) is merged in a
temporary folder first (:func:`tunewise.strategies.lora.merge_run`), so it predicts like a full run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tunewise.errors import TunewiseError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a"})
# modalities whose inputs are files: a folder of them is an input set
FILE_SUFFIXES = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES}
OUTPUT_FORMATS = (".jsonl", ".csv", ".npy")


@dataclass
class Predictor:
    """What a task's saved model does with new inputs (returned by ``task.predictor``).

    Args:
        columns: the input columns the model takes, preferred first (``text``, ``image``, ``prompt``...).
        modality: what one input is: ``text`` (a string), ``image`` or ``audio`` (a path to such a file).
        apply: a batch of inputs and ``top_k`` -> one dict per input (classifiers, generation).
        encode: a batch of inputs -> unit-norm embeddings, a float tensor ``(n, d)`` (encoders;
            with a corpus, :func:`predict` searches it).
        corpus: the corpus side when it is another modality than the inputs (CLIP: captions
            search images); its own columns, modality and ``encode`` into the same space.
    """

    columns: tuple[str, ...]
    modality: str = "text"
    apply: Callable[[list[Any], int], list[dict[str, Any]]] | None = None
    encode: Callable[[list[Any]], Any] | None = None
    corpus: Predictor | None = None

    def __post_init__(self) -> None:
        if (self.apply is None) == (self.encode is None):
            raise ValueError("Predictor: give exactly one of apply or encode")
        if self.corpus is not None and (self.encode is None or self.corpus.encode is None):
            raise ValueError("Predictor: a corpus side needs encoders on both sides")

    @property
    def corpus_side(self) -> Predictor:
        """What reads and encodes ``--corpus``: the corpus side, else the inputs' own."""
        return self.corpus or self


@runtime_checkable
class Predicts(Protocol):
    """``tunewise predict``: the task loads a run's saved model (``config.model`` is its folder) for new inputs."""

    def predictor(self, config: Any, device: str) -> Predictor: ...


@dataclass
class Run:
    """A finished run folder: its config (``model`` set to the folder) and its metrics.json."""

    path: Path
    config: Any
    metrics: dict[str, Any]


def open_run(run_dir: str | Path, option: str = "RUN") -> Run:
    """Read a finished run folder.

    Raises:
        TunewiseError: the folder is missing or is not a finished tunewise run.
    """
    from tunewise.config import load_config

    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise TunewiseError(f"{option}: {path} is not a folder; give the output folder of a finished tunewise fit or demo")
    missing = [name for name in ("metrics.json", "config.yaml") if not (path / name).is_file()]
    if missing:
        raise TunewiseError(f"{option}: {path} is not a tunewise run (no {' or '.join(missing)}); give the output "
                            "folder of a finished tunewise fit or demo")
    try:
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TunewiseError(f"{option}: {path / 'metrics.json'} is not valid JSON ({err}); the run folder is damaged") from None
    if not isinstance(metrics, dict) or "task" not in metrics or "after" not in metrics:
        raise TunewiseError(f"{option}: {path / 'metrics.json'} is not a tunewise run's metrics.json (no task/after)")
    config = load_config(path / "config.yaml")
    config.model = str(path.resolve())
    return Run(path, config, metrics)


def adapter_only(path: Path) -> bool:
    """The folder holds a LoRA adapter that was not merged (``strategy.merge: false``)."""
    from tunewise.strategies.lora import ADAPTER_DIR, ADAPTER_INFO

    info = path / ADAPTER_DIR / ADAPTER_INFO
    return info.is_file() and not json.loads(info.read_text(encoding="utf-8")).get("merged", True)


@contextlib.contextmanager
def model_folder(run: Run) -> Iterator[Path]:
    """The folder holding the run's plain model: the run itself, or its adapter merged in a temporary folder."""
    if not adapter_only(run.path):
        yield run.path
        return
    from tunewise.strategies.lora import merge_run

    with tempfile.TemporaryDirectory(prefix="tunewise-merged-") as tmp:
        yield merge_run(run.path, Path(tmp) / "merged")


def load_predictor(run: Run, folder: Path, device: str = "auto") -> Predictor:
    """The task's :class:`Predictor` for the model in ``folder``.

    Raises:
        TunewiseError: the run's task has no way to use its model on new inputs.
    """
    from tunewise.models.loading import pick_device
    from tunewise.run import no_weight_bars, quiet_libraries
    from tunewise.tasks import TASKS

    quiet_libraries()
    task = TASKS.get(run.config.task)()
    if not isinstance(task, Predicts):
        usable = ", ".join(name for name in TASKS.names() if isinstance(TASKS.get(name)(), Predicts))
        raise TunewiseError(f"predict: task {run.config.task} has no predictor yet (predict works for: {usable})")
    run.config.model = str(folder)
    if isinstance(run.metrics.get("data"), dict) and isinstance(run.metrics["data"].get("kind"), str):
        run.config.data.kind = run.metrics["data"]["kind"]  # what the run detected ("auto" resolved): chat or plain prompts
    with no_weight_bars():
        return task.predictor(run.config, pick_device(device))


# -- inputs ---------------------------------------------------------------------------------------


def read_inputs(source: str | Path | Sequence[Any], predictor: Predictor, *, column: str | None = None,
                option: str = "INPUT") -> tuple[list[Any], str]:
    """The inputs of ``source`` as the predictor takes them, and the column they came from.

    Raises:
        TunewiseError: a missing file, an unknown format, no column the model takes, or a value
            that is not one (an empty text, a missing image).
    """
    from tunewise.data.readers import read_records

    base: Path | None = None
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if not path.exists():
            raise TunewiseError(f"{option}: file not found: {path}")
        base = path if path.is_dir() else path.parent
        suffixes = FILE_SUFFIXES.get(predictor.modality)
        if path.is_dir() and suffixes and not (path / "dataset_info.json").is_file():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes)
            if not files:
                raise TunewiseError(f"{option}: {path} holds no {predictor.modality} files ({', '.join(sorted(suffixes))})")
            return files, predictor.columns[0]
        if path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            records: list[Any] = [line for line in lines if line]
            if not records:
                raise TunewiseError(f"{option}: {path} has no non-empty lines")
        else:
            records = read_records(path, option=option)
    else:
        records = list(source)
        if not records:
            raise TunewiseError(f"{option}: no inputs given")
    name = str(source) if base is not None else option
    if all(not isinstance(r, dict) for r in records):  # plain values: the model's own kind of input
        used = predictor.columns[0]
        values = records
    else:
        used = pick_column(records, predictor, column, name)
        values = [r.get(used) if isinstance(r, dict) else r for r in records]
    return [check_value(v, predictor, used, row, name, base) for row, v in enumerate(values, 1)], used


def pick_column(records: list[dict[str, Any]], predictor: Predictor, column: str | None, name: str) -> str:
    """``column`` if the rows have it, else the first of the predictor's columns they have."""
    present = list(dict.fromkeys(k for r in records if isinstance(r, dict) for k in r))
    if column is not None:
        if column not in present:
            raise TunewiseError(f"--column: {name} has no column '{column}' (its columns: {', '.join(present)})")
        return column
    for candidate in predictor.columns:
        if candidate in present:
            return candidate
    raise TunewiseError(f"{name}: no column this model takes (expected {' or '.join(predictor.columns)}; the file has "
                        f"{', '.join(present) or 'none'}); rename the column or pass --column NAME")


def check_value(value: Any, predictor: Predictor, column: str, row: int, name: str, base: Path | None) -> Any:
    if predictor.modality in FILE_SUFFIXES:
        if isinstance(value, Path):
            path = value
        elif isinstance(value, str) and value.strip():
            path = Path(value.strip()).expanduser()
            if not path.is_absolute() and base is not None:
                path = base / path
        else:
            raise TunewiseError(f"{name}: row {row}, column '{column}': expected a path to an {predictor.modality} file, got {value!r}")
        if not path.is_file():
            raise TunewiseError(f"{name}: row {row}, column '{column}': {predictor.modality} file not found: {path}")
        return path
    if isinstance(value, str) and value.strip():
        return value
    raise TunewiseError(f"{name}: row {row}, column '{column}': expected non-empty text, got {value!r}")


# -- running --------------------------------------------------------------------------------------


def _batches(items: list[Any], batch_size: int, desc: str, progress: bool) -> Iterator[list[Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task(desc, total=len(items))
        for start in range(0, len(items), batch_size):
            batch = items[start:start + batch_size]
            yield batch
            bar.advance(task, len(batch))


def _shown(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


def predict(run_dir: str | Path, inputs: str | Path | Sequence[Any], *, corpus: str | Path | Sequence[Any] | None = None,
            top_k: int = 5, batch_size: int = 32, column: str | None = None, output: str | Path | None = None,
            device: str = "auto", progress: bool = True) -> list[dict[str, Any]]:
    """Use a finished run's model on new inputs.

    Args:
        run_dir: the run folder (``tunewise fit``'s ``output_dir``).
        inputs: texts, image paths or dicts, or a file (.txt one per line, .csv/.jsonl/.parquet) or an image folder.
        corpus: encoders only: the documents (or images) to search; each input is a query and
            gets its ``top_k`` hits. Without it an encoder returns each input's embedding.
        top_k: hits per query (search), labels per input (classifiers).
        batch_size: inputs per forward pass.
        column: the input column to read (default: the first one the model takes).
        output: write the rows to this ``.jsonl``/``.csv`` file (``.npy``: the embeddings only).
        device: ``auto``, ``cpu``, ``cuda``...
        progress: show a progress bar on stderr.

    Returns:
        One dict per input (search: one per hit), as written to ``output``.

    Raises:
        TunewiseError: not a run, a task without a predictor, inputs the model cannot take, or
            a bad option; nothing is written then.

    Example::

        import tunewise
        tunewise.predict("runs/faq", ["how do I reset my password?"], corpus="docs.txt", top_k=3)
    """
    if top_k < 1:
        raise TunewiseError(f"--top-k: must be 1 or more, got {top_k}")
    if batch_size < 1:
        raise TunewiseError(f"--batch-size: must be 1 or more, got {batch_size}")
    out = check_output(output, vectors_ok=corpus is None)
    run = open_run(run_dir)
    with model_folder(run) as folder:
        predictor = load_predictor(run, folder, device)
        if corpus is not None and predictor.encode is None:
            raise TunewiseError(f"--corpus: the {run.config.task} model does not search a corpus (only encoders do); drop --corpus")
        values, used = read_inputs(inputs, predictor, column=column)
        if out is not None and out.suffix == ".npy" and predictor.encode is None:
            raise TunewiseError(f"--output: .npy holds embeddings; the {run.config.task} model returns rows: use .jsonl or .csv")
        side = predictor.corpus_side
        docs = read_inputs(corpus, side, option="--corpus")[0] if corpus is not None else None
        if predictor.apply is not None:
            rows = [row for batch in _batches(values, batch_size, "predicting", progress)
                    for row in _rows(batch, predictor.apply(batch, top_k), used)]
            vectors = None
        else:
            import torch

            vectors = torch.cat([predictor.encode(b).float().cpu() for b in _batches(values, batch_size, "encoding", progress)])
            if docs is not None:
                doc_vectors = torch.cat([side.encode(b).float().cpu()
                                         for b in _batches(docs, batch_size, "encoding the corpus", progress)])
                rows = search_rows(values, vectors, docs, doc_vectors, top_k, used)
            else:
                rows = [{used: _shown(v), "embedding": [round(x, 7) for x in vec]} for v, vec in zip(values, vectors.tolist())]
    if out is not None:
        write_rows(out, rows, vectors if docs is None else None)
    return rows


def _rows(batch: list[Any], results: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    if len(results) != len(batch):
        raise RuntimeError(f"predictor returned {len(results)} rows for {len(batch)} inputs")
    return [{column: _shown(value), **result} for value, result in zip(batch, results)]


def search_rows(queries: list[Any], q: Any, docs: list[Any], d: Any, top_k: int, column: str) -> list[dict[str, Any]]:
    """One row per (query, hit), best first, by cosine similarity (the embeddings are unit norm)."""
    from tunewise.evaluate.search import top_k as search

    scores, idx = search(q, d, top_k, normalize=True, backend="exact")
    return [{column: _shown(query), "rank": rank, "hit": _shown(docs[i]), "score": round(float(s), 6)}
            for query, row_i, row_s in zip(queries, idx.tolist(), scores.tolist())
            for rank, (i, s) in enumerate(zip(row_i, row_s), 1)]


def ranked_labels(probs: Any, labels: Sequence[str], top_k: int) -> list[dict[str, Any]]:
    """Classifier rows: the best label, its probability, and the ``top_k`` best labels with theirs.

    Args:
        probs: class probabilities, a tensor ``(n, n_classes)`` in the head's label order.
    """
    k = min(top_k, probs.shape[-1])
    values, indices = probs.topk(k, dim=-1)
    rows = []
    for vals, idxs in zip(values.tolist(), indices.tolist()):
        top = [{"label": labels[i], "score": round(v, 6)} for v, i in zip(vals, idxs)]
        rows.append({"label": top[0]["label"], "score": top[0]["score"], "top": top})
    return rows


# -- outputs --------------------------------------------------------------------------------------


def check_output(output: str | Path | None, *, vectors_ok: bool) -> Path | None:
    """Refuse an output path tunewise cannot write, before any model loads."""
    if output is None:
        return None
    out = Path(output).expanduser()
    allowed = OUTPUT_FORMATS if vectors_ok else tuple(s for s in OUTPUT_FORMATS if s != ".npy")
    if out.suffix.lower() not in allowed:
        raise TunewiseError(f"--output: {out} must end in {', '.join(allowed)}")
    if out.is_dir():
        raise TunewiseError(f"--output: {out} is a folder; give a file name")
    return out


def write_rows(out: Path, rows: list[dict[str, Any]], vectors: Any = None) -> Path:
    """Write ``rows`` atomically as JSONL or CSV (nested values as JSON), or ``vectors`` as .npy."""
    from tunewise.files import atomic_write, write_text

    suffix = out.suffix.lower()
    if suffix == ".npy":
        import numpy as np

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, vectors.numpy().astype("float32"), allow_pickle=False)

        return atomic_write(out, save)
    if suffix == ".jsonl":
        return write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return write_text(out, buffer.getvalue())


class _CallableModule(types.ModuleType):
    """``tunewise.predict(...)`` calls :func:`predict`, while ``tunewise.predict.Predictor`` stays reachable
    (the same device as the callable ``tunewise.evaluate`` package)."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
