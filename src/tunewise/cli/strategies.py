"""``tunewise compare``, ``tunewise merge`` and ``tunewise interpolate``: parse, call the library, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tunewise.cli._errors import handle_errors

console = Console()


def _floats(text: str, option: str) -> list[float]:
    from tunewise.errors import TunewiseError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise TunewiseError(f"{option}: expected comma-separated numbers such as 0,0.5,1, got '{text}'") from None


def register(app: typer.Typer) -> None:
    """Add the strategy commands to ``app``."""

    @app.command()
    @handle_errors
    def compare(
        config: Optional[Path] = typer.Argument(None, help="YAML run config shared by every strategy.", show_default=False),
        strategy: Optional[list[str]] = typer.Option(None, "--strategy", help="NAME or NAME:key=value,... "
                                                       "(repeatable; default head, partial, full, lora)."),
        train: Optional[str] = typer.Option(None, "--train", help="Training data file (data.train)."),
        model: Optional[str] = typer.Option(None, "--model", help="Model folder or hub id."),
        output_dir: str = typer.Option("runs/compare", "--output-dir", "-o", help="Parent folder of the runs and the table."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="train.epochs (the shared budget)."),
        folds: Optional[int] = typer.Option(None, "--folds", help="k-fold cross-validation of every strategy on the same folds "
                                            "(eval.folds): mean ± std per strategy and the pooled interval."),
        demo: bool = typer.Option(False, "--demo", help="Use the demo's packaged Swedish FAQ and MiniLM."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Reuse an existing output folder."),
        overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Dotted override (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    ) -> None:
        """Run several strategies on the same data and budget; print one table."""
        from tunewise.compare import DEFAULT_STRATEGIES, score_cell, vs_best_cell
        from tunewise.compare import compare as run_compare
        from tunewise.config import load_config
        from tunewise.evaluate.uncertainty import describe

        values = {k: v for k, v in {"data.train": train, "model": model, "train.epochs": epochs, "eval.folds": folds,
                                    "overwrite": overwrite or None}.items() if v is not None}
        if demo:
            from tunewise.demos import demo_config

            cfg = demo_config(output_dir, overrides=[*(f"{k}={v}" for k, v in values.items()), *(overrides or [])])
            cfg.overwrite = overwrite
        else:
            cfg = load_config(config, overrides, values=values)
        result = run_compare(cfg, strategy or DEFAULT_STRATEGIES, output_dir,
                             console=Console(stderr=True, quiet=as_json))
        if as_json:
            print(json.dumps(result["rows"], indent=2))
            return
        rows = result["rows"]
        metric = rows[0]["metric"]
        table = Table(title=f"strategies on the same data and budget ({metric})", title_justify="left")
        for col in ("strategy", "before", "after", "relative", "trainable params", "seconds", "samples/s", "peak MiB",
                    "vs best"):
            table.add_column(col, justify="left" if col in ("strategy", "vs best") else "right")
        for r in rows:
            table.add_row(r["strategy"], score_cell(r, "before"), score_cell(r, "after"),
                          describe(r["relative_improvement"], r.get("interval")),
                          f"{r['trainable_params']:,} ({r['trainable_fraction'] * 100:.2f}%)", f"{r['seconds']:.1f}",
                          f"{r['samples_per_second']:.1f}", str(r["peak_mib"]), vs_best_cell(r))
        console.print(table)
        console.print(f"runs and compare.md in {result['output_dir']}")

    @app.command()
    @handle_errors
    def merge(
        run_dir: Path = typer.Argument(..., help="Folder of a lora or qlora run."),
        output_dir: str = typer.Option(..., "--output-dir", "-o", help="Where the merged model goes."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    ) -> None:
        """Fold a run's LoRA adapter into its base model: a plain model that loads without peft."""
        from tunewise.strategies.lora import merge_run

        out = merge_run(run_dir, output_dir, overwrite=overwrite)
        console.print(f"merged model written to {out}")

    @app.command()
    @handle_errors
    def interpolate(
        run_dir: Path = typer.Argument(..., help="Folder of a finished full, partial or merged LoRA run."),
        alphas: str = typer.Option("0,0.25,0.5,0.75,1", "--alphas", help="Blend weights of the fine-tuned model, each in [0, 1]."),
        max_forgetting: float = typer.Option(0.05, "--max-forgetting", help="Largest allowed relative drop on the general set (0.05 = 5 %)."),
        general: Optional[str] = typer.Option(None, "--general", help="General-domain pairs file (query, positive); default: packaged English FAQ."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Save the chosen blend here."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """WiSE-FT: blend pre-trained and fine-tuned weights; score in-domain and forgetting; pick alpha."""
        from tunewise.wiseft import interpolate_run

        result = interpolate_run(run_dir, alphas=_floats(alphas, "--alphas"), max_forgetting=max_forgetting,
                                 general=general, output_dir=output_dir, overwrite=overwrite,
                                 console=Console(stderr=True, quiet=as_json))
        if as_json:
            print(json.dumps(result, indent=2))
            return
        m = result["metric"]
        table = Table(title=f"WiSE-FT sweep ({m}); general set: {result['general']}", title_justify="left")
        for col in ("alpha", f"in-domain {m}", f"general {m}", "forgetting"):
            table.add_column(col, justify="right")
        for r in result["rows"]:
            mark = " *" if r["alpha"] == result["chosen"]["alpha"] else ""
            table.add_row(f"{r['alpha']:.2f}{mark}", f"{r['in_domain']:.4f}", f"{r['general']:.4f}", f"{r['forgetting']:+.1%}")
        console.print(table)
        console.print(f"* chosen alpha {result['chosen']['alpha']:g}: {result['rule']}")
        if "output_dir" in result:
            console.print(f"blend written to {result['output_dir']}")
