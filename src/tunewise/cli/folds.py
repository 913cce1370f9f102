"""Printing a k-fold report (``fit``/``evaluate``/``demo`` with ``--folds``): tables only, the numbers come from :mod:`tunewise.folds`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _pm(stats: dict[str, Any], signed: bool = False) -> str:
    mean = f"{stats['mean']:+.4f}" if signed else f"{stats['mean']:.4f}"
    return mean if stats.get("std") is None else f"{mean} ± {stats['std']:.4f}"


def show_folds(console: Console, metrics: dict[str, Any], output_dir: str) -> None:
    """The per-fold table of a k-fold ``fit``, mean ± std, the pooled interval and what was saved."""
    from tunewise.folds import pooled_line

    folds, p = metrics["folds"], metrics["primary_metric"]
    table = Table(title=f"{folds['k']}-fold cross-validation over {folds['grouping']}", title_justify="left")
    for name, justify in (("fold", "right"), ("train", "right"), ("held out", "right"), (f"{p} before", "right"),
                          (f"{p} after", "right"), ("gain", "right")):
        table.add_column(name, justify=justify)
    for r in folds["rows"]:
        table.add_row(str(r["fold"]), str(r["train_examples"]), str(r["held_out"] or "n/a"), f"{r['before'][p]:.4f}",
                      f"{r['after'][p]:.4f}", f"{r['gain']:+.4f}")
    s = folds["summary"].get(p)
    if s:
        table.add_section()
        table.add_row("mean", "", "", f"{s['before']['mean']:.4f}", f"{s['after']['mean']:.4f}", f"{s['gain']['mean']:+.4f}")
        if s["gain"].get("std") is not None:
            table.add_row("std", "", "", f"{s['before']['std']:.4f}", f"{s['after']['std']:.4f}", f"{s['gain']['std']:.4f}")
    console.print(table)
    if (line := pooled_line(p, folds["pooled"].get(p), folds["k"])) is not None:
        console.print(line)
    for warning in metrics.get("warnings", []):
        console.print(f"[bold red]warning:[/] {warning}")
    final = metrics.get("final_fit")
    if final:
        console.print(f"[yellow]final model[/]: {final['note']}; saved with metrics.json and folds.md in {output_dir}")
    else:
        console.print(f"no model saved (add --final-fit to train on all the data and save it); metrics.json and folds.md in {output_dir}")


def show_eval_folds(console: Console, result: dict[str, Any]) -> None:
    """``evaluate --folds``: each metric per fold, mean ± std and the bootstrap interval over all items."""
    folds = result["folds"]
    table = Table(title=f"{result['model']}: {folds['k']} folds over {folds['grouping']}", title_justify="left")
    table.add_column("metric")
    for r in folds["rows"]:
        table.add_column(f"fold {r['fold']}", justify="right")
    table.add_column("mean ± std", justify="right")
    table.add_column("all items (interval)", justify="right")
    for name, s in folds["summary"].items():
        pooled = folds["pooled"].get(name) or {}
        level = f"{pooled.get('confidence', 0) * 100:g}%"
        interval = ("n/a" if pooled.get("low") is None else
                    f"{pooled['value']:.4f} ({level} CI {pooled['low']:.4f} to {pooled['high']:.4f})")
        table.add_row(name, *[f"{r['metrics'][name]:.4f}" for r in folds["rows"]], _pm(s), interval)
    console.print(table)
    held = [str(next(iter(r["held_out"].values()), "?")) for r in folds["rows"]]
    console.print(f"held out per fold: {', '.join(held)}; {result['seconds']:.1f} s")
