"""The ``tunewise`` command line. It parses options and calls the library; no logic here."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tunewise.cli._errors import OneLineErrorGroup, handle_errors
from tunewise.cli.render import show_run
from tunewise.demos import DEFAULT_DEMO, DEMOS, run_demo

app = typer.Typer(
    name="tunewise",
    help="Fine-tune pre-trained models on a small budget and measure what more data and time would buy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrorGroup,  # the parser's errors are one line too
)
console = Console()

ConfigArg = typer.Argument(None, help="YAML run config (optional: flags and --set can say everything).", show_default=False)
SetOpt = typer.Option(None, "--set", "-s", help="Dotted override, e.g. --set train.epochs=2 (repeatable).")


FoldsOpt = typer.Option(None, "--folds", help="k-fold cross-validation (eval.folds): every item held out once, K fits from the "
                        "pre-trained model, per-fold table, mean ± std and the pooled interval.")
FinalFitOpt = typer.Option(False, "--final-fit", help="With --folds: also train on all the data and save that model (not evaluated on "
                           "held-out data; eval.final_fit).")


def _values(**flags) -> dict:
    return {k: v for k, v in flags.items() if v is not None}


def _show(metrics: dict, output_dir: str) -> None:
    """A run's tables: the k-fold report, or the before/after of one split."""
    if "folds" in metrics:
        from tunewise.cli.folds import show_folds

        show_folds(console, metrics, output_dir)
    else:
        show_run(console, metrics, output_dir)


@app.command()
@handle_errors
def fit(
    config: Optional[Path] = ConfigArg,
    train: Optional[str] = typer.Option(None, "--train", help="Training data file (data.train)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model folder or hub id (default: packaged MiniLM)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Output folder."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="full, ... (strategy.name)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="mnrl, cached_mnrl, triplet, cosent, contrastive."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="train.epochs"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="train.batch_size"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="train.learning_rate"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for splits and training."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    folds: Optional[int] = FoldsOpt,
    final_fit: bool = FinalFitOpt,
    overrides: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json instead of tables."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of this output folder from its last "
                                "checkpoint (same config); starts from the beginning when there is none."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="After the run, upload its folder to this Hub "
                                              "model repo (user/name) with huggingface_hub."),
) -> None:
    """Fine-tune a model, evaluating it before and after on held-out data (or on K folds with --folds)."""
    from tunewise.config import load_config
    from tunewise.errors import TunewiseError
    from tunewise.outputs import hub_id
    from tunewise.run import fit as run_fit

    if push_to_hub is not None and hub_id(push_to_hub) is None:  # checked before any work
        raise TunewiseError(f"--push-to-hub: '{push_to_hub}' is not a Hub repo id; give user/name or org/name")

    values = _values(**{"data.train": train, "model": model, "output_dir": output_dir, "strategy.name": strategy,
                        "train.loss": loss, "train.epochs": epochs, "train.batch_size": batch_size,
                        "train.learning_rate": learning_rate, "seed": seed, "overwrite": overwrite or None,
                        "eval.folds": folds, "eval.final_fit": final_fit or None})
    cfg = load_config(config, overrides, values=values)
    with contextlib.redirect_stdout(sys.stderr):  # library chatter must not mix with --json on stdout
        result = run_fit(cfg, console=Console(stderr=True, quiet=as_json), resume=resume)
    if not result.metrics:  # a non-zero rank of a distributed launch: rank 0 reports
        return
    if as_json:
        print(json.dumps(result.metrics, indent=2, default=str))
    else:
        _show(result.metrics, str(result.output_dir))
    if push_to_hub is not None:
        from tunewise.hub import push_run

        url = push_run(result.output_dir, push_to_hub)
        Console(stderr=True).print(f"pushed {result.output_dir} to {url}")


@app.command()
@handle_errors
def evaluate(
    config: Optional[Path] = ConfigArg,
    model: Optional[str] = typer.Option(None, "--model", help="Model to evaluate (default: the config's model)."),
    train: Optional[str] = typer.Option(None, "--train", help="Data file (its held-out split is evaluated)."),
    folds: Optional[int] = typer.Option(None, "--folds", help="Score every item once, fold by fold (eval.folds): per-fold "
                                        "scores, mean ± std and an interval over all items."),
    overrides: Optional[list[str]] = SetOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Evaluate a model on the config's evaluation set (no training)."""
    from rich.table import Table

    from tunewise.config import load_config
    from tunewise.run import evaluate as run_evaluate

    cfg = load_config(config, overrides, values=_values(**{"data.train": train, "eval.folds": folds}))
    result = run_evaluate(cfg, model=model, console=Console(stderr=True, quiet=as_json))
    if as_json:
        print(json.dumps(result, indent=2, default=str))
        return
    if "folds" in result:
        from tunewise.cli.folds import show_eval_folds

        show_eval_folds(console, result)
        return
    table = Table(title=f"{result['model']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    intervals = result.get("intervals") or {}
    level = next((f"{i['confidence'] * 100:g}% CI" for i in intervals.values()), "CI")
    table.add_column(level, justify="right")
    for name, value in result["metrics"].items():
        ci = intervals.get(name) or {}
        bounds = f"{ci['low']:.4f} to {ci['high']:.4f}" if ci.get("low") is not None and ci.get("high") is not None else ""
        table.add_row(name, f"{value:.4f}", bounds)
    console.print(table)
    held_out = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["data"].items() if k.startswith("eval_"))
    console.print(f"{held_out}; {result['seconds']:.1f} s")


@app.command()
@handle_errors
def demo(
    task: str = typer.Option(DEFAULT_DEMO, "--task", "-t", help=f"Which demo: {', '.join(DEMOS.names())}."),
    budget: bool = typer.Option(False, "--budget", help="Run the budget planner's data and time sweep on the demo instead."),
    seeds: Optional[int] = typer.Option(None, "--seeds", help="With --budget: repeats per size (default: the demo's, 2 for embedding, 3 for most)."),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Output folder (replaced if it exists)."),
    lang: Optional[str] = typer.Option(None, "--lang", help="FAQ language: sv (the pre-trained model is weak there) or en."),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="With --budget: machine price per hour."),
    folds: Optional[int] = FoldsOpt,
    final_fit: bool = FinalFitOpt,
    overrides: Optional[list[str]] = SetOpt,
) -> None:
    """Fine-tune a packaged model on packaged data and show before/after (default: MiniLM on the Swedish FAQ)."""
    from tunewise.errors import TunewiseError

    if seeds is not None and not budget:
        raise TunewiseError("--seeds: only with --budget")
    overrides = [*(overrides or []), *([f"eval.folds={folds}"] if folds is not None else []),
                 *(["eval.final_fit=true"] if final_fit else [])] or None
    if budget:
        from tunewise.cli.budget import demo_sweep

        demo_sweep(task, output_dir, lang, overrides, seeds=seeds, price_per_hour=price_per_hour)
        return
    result = run_demo(task, output_dir=output_dir, lang=lang, overrides=overrides, console=console)
    _show(result.metrics, str(result.output_dir))


@app.command("config")
@handle_errors
def show_config(
    config: Optional[Path] = ConfigArg,
    overrides: Optional[list[str]] = SetOpt,
    reference: bool = typer.Option(False, "--reference", help="Print every key with its default and meaning (Markdown)."),
) -> None:
    """Validate a config as `fit` would (task, strategy and its options, metrics) and print it with every default filled in."""
    from tunewise.config import config_reference, dump_config, load_config

    if reference:
        print(config_reference())
        return
    cfg = load_config(config, overrides)
    from tunewise.run import check_config

    check_config(cfg)
    print(dump_config(cfg), end="")


# Commands that live in their own modules register here (one line each).
# --- registered commands ---
from tunewise.cli import budget as _budget  # noqa: E402
from tunewise.cli import memory as _memory  # noqa: E402
from tunewise.cli import strategies as _strategies  # noqa: E402

for _module in (_strategies, _budget, _memory):  # the order of --help
    _module.register(app)
__import__("tunewise.cli.use", fromlist=["register"]).register(app)  # predict, export
__import__("tunewise.cli.synthesize", fromlist=["register"]).register(app)  # synthetic queries file
# --- end registered commands ---


def main() -> None:
    app()


if __name__ == "__main__":
    main()
