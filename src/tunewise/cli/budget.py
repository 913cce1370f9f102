"""``tunewise budget`` and ``tunewise demo-budget``: parse, call :func:`tunewise.budget.run_budget`, print."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from tunewise.cli._errors import handle_errors

console = Console()


def _sizes(text: Optional[str]) -> Optional[list[int]]:
    from tunewise.budget.grid import parse_sizes

    return None if text is None else parse_sizes(text)


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator:
    """A rich bar over jobs, shown from the first job on (a bad option fails without one)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tunewise.tasks.progress import stderr_console, training_console

    if quiet:
        with training_console(Console(stderr=True, quiet=True)):  # no point bars either
            yield None
        return
    # the points' training bars share this console: each shows under the sweep's bar, then goes
    bar = Progress(TextColumn("[bold]budget[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.description}"), console=stderr_console())
    task = None

    def update(done: int, total: int, description: str) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(description, total=max(total, 1))
        bar.update(task, completed=done, total=max(total, 1), description=description)

    try:
        with training_console(bar.console, transient=True):
            yield update
    finally:
        if task is not None:  # a stopped bar that never started still prints a blank line
            bar.stop()


def _sweep(run: Callable[..., Any], target: str, *, quiet: bool, as_json: bool, show: Optional[Callable[[Any], None]] = None) -> None:
    """Call ``run(console=, progress=)`` (a budget sweep into ``target``) with a progress bar, and show its result."""
    from tunewise.cli._errors import Terminated
    from tunewise.errors import TunewiseError

    try:  # SIGTERM arrives as Terminated, a KeyboardInterrupt (handle_errors installs it)
        with _progress(quiet or as_json) as progress, \
                contextlib.redirect_stdout(sys.stderr):  # library chatter must not mix with --json
            result = run(console=Console(stderr=True, quiet=as_json), progress=progress)
    except KeyboardInterrupt as stop:
        err = TunewiseError(f"interrupted{' (SIGTERM)' if isinstance(stop, Terminated) else ''}; every finished point "
                            f"is kept in {target}/results.jsonl: rerun the same command to run only the missing points")
        err.exit_code = 143 if isinstance(stop, Terminated) else 130
        raise err from None
    if as_json:
        print(result.summary_path.read_text(encoding="utf-8"), end="")
        return
    (show or _show)(result)


def _show(result) -> None:
    from rich.table import Table

    from tunewise.budget.advice import gain_name, gain_text

    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    rows = result.data_summary
    higher = result.higher_is_better
    direction = "" if higher else ", lower is better"
    if rows:
        equal = any(r.mean_rel_improvement_equal_labels is not None for r in rows)
        before = "probe on all items" if equal else "before"
        table = Table(title=f"labeled data ({result.metric}{direction}, {before} {result.metric_before:.4f})",
                      title_justify="left")
        absolute = rows[0].absolute
        name = gain_name(absolute, higher)
        cols = ["items", "seeds", "mean", f"{name} vs all-items probe" if equal else name, "± std",
                *(["probe, same items", "vs same-items probe"] if equal else []), "ROI / item", "marginal / item", "train s"]
        for col in cols:
            table.add_column(col, justify="right")
        for r in rows:
            eq = r.mean_rel_improvement_equal_labels
            probe = [f"{r.mean_metric_before_equal_labels:.4f}" if r.mean_metric_before_equal_labels is not None else "–",
                     gain_text(eq, False) if eq is not None else "–"] if equal else []
            table.add_row(str(r.size), str(r.n), f"{r.mean_metric:.4f}", gain_text(r.mean_rel_improvement, absolute),
                          gain_text(r.std, absolute, signed=False), *probe, f"{r.roi:.3g}", f"{r.marginal_roi:.3g}",
                          f"{r.mean_seconds:.1f}")
        console.print(table)
        if result.knee_stability is not None:
            console.print(f"[bold]knee stability:[/] {result.knee_stability.text}")
        if getattr(result, "size_intervals", None):
            from tunewise.budget.intervals import interval_lines

            console.print(f"[bold]gain per size[/] (paired bootstrap over the {result.size_intervals[0]['n']} evaluation items, "
                          "seeds averaged):")
            for line in interval_lines(result.size_intervals, result.metric):
                console.print(f"  {line}", markup=False, highlight=False)
    if result.time_summary:
        table = Table(title=f"training time ({result.time_summary[0].size} items{direction})", title_justify="left")
        absolute = result.time_summary[0].absolute
        for col in ("epoch", "train s", "mean", gain_name(absolute, higher), "ROI / s", "marginal / s", "eval s"):
            table.add_column(col, justify="right")
        for r in result.time_summary:
            table.add_row(f"{r.epoch:g}", f"{r.mean_seconds:.1f}", f"{r.mean_metric:.4f}",
                          gain_text(r.mean_rel_improvement, absolute), f"{r.roi:.3g}", f"{r.marginal_roi:.3g}",
                          f"{r.mean_eval_seconds:.1f}")
        console.print(table)
    console.print(f"[bold]recommendation:[/] {result.recommendation.text}")
    if result.validation is not None:
        console.print(f"[bold]forecast check:[/] {result.validation.text}")
    if result.target is not None:
        console.print(f"[bold]target:[/] {result.target.message}")
    from tunewise.budget.results import adaptive_line, cost_line

    if result.adaptive is not None:
        console.print(f"[bold]{adaptive_line(result.adaptive)}[/]")
    if (line := cost_line(result.cost)) is not None:
        console.print(line)
    console.print(f"{result.ran} runs now ({result.backend} backend), {result.reused} points reused; report: {result.report_path}")


def register(app: typer.Typer) -> None:
    """Add ``budget`` and ``demo-budget`` to ``app``."""

    @app.command()
    @handle_errors
    def budget(
        config: Optional[Path] = typer.Argument(None, help="YAML run config (anything `tunewise fit` accepts).", show_default=False),
        sizes: Optional[str] = typer.Option(None, "--sizes", help="Data grid, e.g. 25,50,100 (default: geometric, about 25 to all)."),
        seeds: int = typer.Option(3, "--seeds", help="Repeats per size (mean and spread are reported)."),
        folds: Optional[int] = typer.Option(None, "--folds", help="k-fold (eval.folds): folds replace seeds, each size trained on a "
                                            "fold's training side and scored on its held-out side (evaluation-set variance enters the error bars)."),
        time_size: Optional[str] = typer.Option(None, "--time-size", help="Items of the time sweep: a number, largest, or knee "
                                                "(default: the size the data sweep recommends, timed after it)."),
        epochs: Optional[float] = typer.Option(None, "--epochs", help="Length of the time-sweep run (default: 2 x train.epochs)."),
        eval_steps: Optional[int] = typer.Option(None, "--eval-steps", help="Also evaluate the time sweep every K steps."),
        no_time: bool = typer.Option(False, "--no-time", help="Skip the time sweep."),
        backend: str = typer.Option("local", "--backend", help="local (sequential) or ray (parallel Ray tasks)."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster: auto, ray://HOST:10001 (default: local Ray)."),
        price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="Machine price per hour: money next to seconds."),
        target: Optional[float] = typer.Option(None, "--target", help="Metric to reach (0-1): labels needed, from the forecast."),
        forecast_sizes: Optional[str] = typer.Option(None, "--forecast-sizes", help="Sizes to forecast, up to 10x the largest."),
        validate: bool = typer.Option(False, "--validate", help="Fit the curve on sizes <= largest/4 and check it at the largest."),
        knee_drop: float = typer.Option(0.70, "--knee-drop", help="ROI drop from its peak that marks the knee."),
        adaptive: bool = typer.Option(False, "--adaptive", help="After each seed, stop the data sweep once the knee is confirmed "
                                      "(or the forecast is as sharp as --stop-width); the report says what was skipped."),
        stop_width: Optional[float] = typer.Option(None, "--stop-width", help="With --adaptive: also stop once the forecast "
                                                   "interval at the largest size is this narrow (metric units, e.g. 0.02)."),
        largest_seeds: Optional[int] = typer.Option(None, "--largest-seeds", help="Seeds at the largest size when it is all "
                                                    "the data (the same items every seed: only training noise differs)."),
        time_from_largest: bool = typer.Option(False, "--time-from-largest", help="Time curve = the largest size's run "
                                               "(train.epochs), evaluated every epoch, instead of a separate 2x-epochs run."),
        output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Budget folder (default: <output_dir>-budget)."),
        fresh: bool = typer.Option(False, "--fresh", help="Start the result store over (the old one is kept aside)."),
        train: Optional[str] = typer.Option(None, "--train", help="Training data file (data.train)."),
        model: Optional[str] = typer.Option(None, "--model", help="Model folder or hub id (default: packaged MiniLM)."),
        strategy: Optional[str] = typer.Option(None, "--strategy", help="full, head, partial, lora, ... (strategy.name)."),
        loss: Optional[str] = typer.Option(None, "--loss", help="train.loss"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="train.batch_size"),
        learning_rate: Optional[float] = typer.Option(None, "--lr", help="train.learning_rate"),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed for splits and training."),
        overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Dotted override, e.g. --set train.epochs=2 (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print summary.json instead of tables."),
        levers: Optional[str] = typer.Option(None, "--levers", help="Also price data levers at every size, e.g. "
                                             "none,hard-negatives,synthetic:800,augment (combine with +); writes levers.md."),
        price_per_label: Optional[float] = typer.Option(None, "--price-per-label", help="With --levers: cost of one more "
                                                        "labeled item, to say whether a lever is cheaper than labels."),
    ) -> None:
        """Measure what more labeled data and training time buy; write an HTML report."""
        from tunewise.budget import run_budget
        from tunewise.config import load_config

        values = {k: v for k, v in {"data.train": train, "model": model, "strategy.name": strategy,
                                    "train.loss": loss, "train.batch_size": batch_size,
                                    "train.learning_rate": learning_rate, "seed": seed, "eval.folds": folds}.items() if v is not None}
        cfg = load_config(config, overrides, values=values)
        out = output_dir or f"{str(cfg.output_dir).rstrip('/')}-budget"
        if levers is not None or price_per_label is not None:
            from tunewise.budget.lever_report import show_levers
            from tunewise.budget.levers import run_levers
            from tunewise.errors import TunewiseError

            if levers is None:
                raise TunewiseError("--price-per-label: prices the levers; add --levers, e.g. --levers none,synthetic:800")
            _sweep(functools.partial(
                run_levers, cfg, levers=levers, output_dir=out, sizes=_sizes(sizes), seeds=seeds, time_size=time_size,
                epochs=epochs, eval_steps=eval_steps, time_sweep=not no_time, backend=backend, ray_address=ray_address,
                price_per_hour=price_per_hour, price_per_label=price_per_label, target=target,
                forecast_sizes=_sizes(forecast_sizes), validate=validate, drop=knee_drop, fresh=fresh, adaptive=adaptive,
                stop_width=stop_width, largest_seeds=largest_seeds, time_from_largest=time_from_largest),
                out, quiet=False, as_json=as_json, show=lambda result: show_levers(result, console))
            return
        _sweep(functools.partial(
            run_budget, cfg, output_dir=out, sizes=_sizes(sizes), seeds=seeds, time_size=time_size, epochs=epochs,
            eval_steps=eval_steps, time_sweep=not no_time, backend=backend, ray_address=ray_address,
            price_per_hour=price_per_hour, target=target, forecast_sizes=_sizes(forecast_sizes), validate=validate,
            drop=knee_drop, fresh=fresh, adaptive=adaptive, stop_width=stop_width, largest_seeds=largest_seeds,
            time_from_largest=time_from_largest), out, quiet=False, as_json=as_json)

    @app.command("demo-budget")
    @handle_errors
    def demo_budget(
        output_dir: str = typer.Option("runs/demo-budget", "--output-dir", "-o", help="Budget folder (resumed if it exists)."),
        lang: str = typer.Option("sv", "--lang", help="FAQ language: sv or en."),
        seeds: Optional[int] = typer.Option(None, "--seeds", help="Repeats per size (demo: 2)."),
        backend: str = typer.Option("local", "--backend", help="local or ray."),
        price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="Machine price per hour."),
        fresh: bool = typer.Option(False, "--fresh", help="Start the result store over."),
        adaptive: bool = typer.Option(False, "--adaptive", help="Stop the data sweep once the knee is confirmed."),
        overrides: Optional[list[str]] = typer.Option(None, "--set", "-s", help="Dotted override (repeatable)."),
    ) -> None:
        """Budget sweep of the packaged MiniLM on the packaged FAQ (the `tunewise demo` data)."""
        from tunewise.demos import DEFAULT_DEMO

        demo_sweep(DEFAULT_DEMO, output_dir, lang, overrides, seeds=seeds, backend=backend,
                   price_per_hour=price_per_hour, fresh=fresh, **({"adaptive": True} if adaptive else {}))


def demo_sweep(name: str, output_dir: Optional[str], lang: Optional[str], overrides: Optional[list[str]], *,
               seeds: Optional[int] = None, **options: Any) -> None:
    """Run and show a demo's budget sweep (``tunewise demo --task NAME --budget`` and ``tunewise demo-budget``).

    ``options`` are :func:`tunewise.budget.run_budget` arguments (backend, price_per_hour, fresh).
    """
    from tunewise.demos import DEMOS, run_demo

    target = output_dir or DEMOS.get(name).folder(budget=True)
    sweep = {**options, **({"seeds": seeds} if seeds is not None else {})}
    banner = Console(file=sys.stdout)  # the banner stays on stdout; the sweep's messages go to stderr
    _sweep(lambda console, progress: run_demo(
        name, budget=True, output_dir=target, lang=lang, overrides=overrides, console=banner,
        sweep={**sweep, "console": console, "progress": progress}), target, quiet=False, as_json=False)
