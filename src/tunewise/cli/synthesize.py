"""``tunewise synthesize``: write the synthetic queries file to read and edit before ``fit`` (calls :mod:`tunewise.data.synthetic`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tunewise.cli._errors import handle_errors


def synthesize(
    config: Optional[Path] = typer.Argument(None, help="YAML run config (embedding task; synthetic: section).", show_default=False),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Queries file to write (JSONL; default synthetic.output, "
                                         "else <output_dir>.synthetic.jsonl)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Dotted override, e.g. --set synthetic.queries=500 "
                                                  "(repeatable)."),
) -> None:
    """Generate search queries for documents without one and write them (kept and filtered) to a JSONL file.

    Edit the file (fix or delete queries, set a row's status to kept), then point
    synthetic.file at it: fit trains on its kept rows as written.
    """
    from tunewise.config import load_config
    from tunewise.data.synthetic import synthesize_file

    cfg = load_config(config, overrides)
    err = Console(stderr=True)
    path, report = synthesize_file(cfg, output)
    filtered = ", ".join(f"{n} {why}" for why, n in sorted(report.get("filtered", {}).items())) or "none"
    err.print(f"{report.get('generated', 0)} queries for {report.get('documents', 0)} documents "
              f"({report.get('synthetic_seconds', 0.0):.1f} s of generation{', cached' if report.get('synthetic_cached') else ''}); "
              f"kept {report.get('kept', 0)}; dropped: {filtered}")
    if report.get("eval_documents"):
        err.print(f"[yellow]note[/]: {report['eval_documents']} of these documents answer evaluation queries (transductive)")
    err.print(f"wrote {path}; edit it, then train with --set synthetic.file={path}")


def register(app: typer.Typer) -> None:
    """Add ``tunewise synthesize`` to ``app``."""
    app.command("synthesize")(handle_errors(synthesize))
