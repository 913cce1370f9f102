"""``tunewise predict``, ``export`` and ``push``: use a finished run's model, ship it smaller, publish it.

They parse options and call the library (:func:`tunewise.predict.predict`,
:func:`tunewise.export.export_run`, :func:`tunewise.hub.push_run`); errors are one line with exit code 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tunewise.cli._errors import handle_errors

console = Console()


def predict_command(
    run: Path = typer.Argument(..., help="A finished run folder (tunewise fit / demo output).", show_default=False),
    inputs: Path = typer.Argument(..., help="Inputs: .txt (one per line), .csv/.jsonl/.parquet, or a folder of images.",
                                  show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the rows here: .jsonl, .csv, or .npy (embeddings only). "
                                          "Default: JSON lines on stdout."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Encoders: search this corpus (same formats) and give each input its top-k hits."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Hits per query (search) or labels per input (classifiers)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Inputs per forward pass."),
    column: Optional[str] = typer.Option(None, "--column", help="The input column to read (default: the first one the model takes)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """Use a fine-tuned run on new inputs: embeddings or search, labels with scores, generations."""
    import contextlib

    from tunewise.predict import predict

    with contextlib.redirect_stdout(sys.stderr):  # library chatter must not mix with the rows on stdout
        rows = predict(run, inputs, corpus=corpus, top_k=top_k, batch_size=batch_size, column=column,
                       output=output, device=device, progress=sys.stderr.isatty())
    if output is None:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
    else:
        Console(stderr=True).print(f"{len(rows)} rows written to {output}")


def export_command(
    run: Path = typer.Argument(..., help="A finished run folder (tunewise fit / demo output).", show_default=False),
    fmt: str = typer.Option("onnx", "--format", help="Export format: onnx."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: dynamic int8 quantization of the weights (onnxruntime)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output folder (default: RUN-onnx or RUN-onnx-int8)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Export an embedding or classification run to ONNX (optionally int8) for fast CPU inference."""
    from tunewise.export import export_run

    with console.status("exporting"):
        result = export_run(run, fmt=fmt, quantize=quantize, output=output, overwrite=overwrite)
    console.print(f"exported {result.task} model to {result.output_dir} ({result.file.name}, "
                  f"{result.file.stat().st_size / 2**20:.1f} MiB; max difference from PyTorch {result.max_abs_diff:.2g})")


def push_command(
    run: Path = typer.Argument(..., help="A finished run folder (tunewise fit / demo output).", show_default=False),
    repo: str = typer.Argument(..., help="Hub model repo, user/name or org/name (created if missing).", show_default=False),
    private: Optional[bool] = typer.Option(None, "--private/--public", help="Visibility of a new repo (default: the Hub's)."),
) -> None:
    """Upload a run folder (model, model card, metrics) to the Hugging Face Hub with huggingface_hub."""
    from tunewise.hub import push_run

    with console.status(f"uploading to {repo}"):
        url = push_run(run, repo, private=private)
    console.print(f"pushed {run} to {url}")


def register(app: typer.Typer) -> None:
    """Add ``predict``, ``export`` and ``push`` to the tunewise app."""
    app.command("predict")(handle_errors(predict_command))
    app.command("export")(handle_errors(export_command))
    app.command("push")(handle_errors(push_command))
