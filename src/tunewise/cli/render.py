"""Rich rendering of run results: the before/after table and example rankings."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tunewise.evaluate.uncertainty import describe, p_value_line


def _short(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def metrics_table(metrics: dict[str, Any], title: str = "before / after") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("pre-trained", justify="right")
    table.add_column("fine-tuned", justify="right")
    table.add_column("rel. improvement", justify="right")  # positive = better, also for a loss (a fall)
    primary = metrics["primary_metric"]
    uncertainty = metrics.get("uncertainty", {})
    for name, before in metrics["before"].items():
        after = metrics["after"].get(name)
        rel = metrics["relative_improvement"].get(name)
        style = "bold" if name == primary else None
        table.add_row(name + (" *" if name == primary else ""), f"{before:.4f}", f"{after:.4f}",
                      describe(rel, uncertainty.get(name)), style=style)
    return table


def show_examples(console: Console, metrics: dict[str, Any]) -> None:
    """Retrieval examples ({query, top: [{text, score, relevant}]}) or generic ones
    ({input, expected, output, correct}) shown before and after."""
    before, after = metrics["examples"]["before"], metrics["examples"]["after"]
    for b, a in zip(before, after):
        if "top" not in b:
            console.print(f"\n[bold]input:[/] {_short(str(b.get('input', '')))}")
            if b.get("expected") is not None:
                console.print(f"  expected: {_short(str(b['expected']))}")
            for label, ex in (("before", b), ("after ", a)):
                mark = "[green]✓[/]" if ex.get("correct") else "[red]✗[/]"
                console.print(f"  {label} {mark} {_short(str(ex.get('output', '')))}")
            continue
        console.print(f"\n[bold]query:[/] {_short(b['query'])}")
        for label, ex in (("before", b), ("after ", a)):
            for rank, hit in enumerate(ex["top"][:3], start=1):
                mark = "[green]✓[/]" if hit["relevant"] else " "
                head = label if rank == 1 else "      "
                console.print(f"  {head} {rank}. {mark} {hit['score']:.3f} {_short(hit['text'], 80)}")


def _precision_note(train: dict[str, Any]) -> str:
    """``", bf16, MFU 12.3%"``: the precision training ran in and its model FLOPs utilisation, where known."""
    note = f", {train['precision']}" if train.get("precision") else ""
    flops = train.get("flops") or {}
    return note + (f", MFU {flops['mfu']:.1%}" if flops.get("mfu") is not None else "")


def show_run(console: Console, metrics: dict[str, Any], output_dir: str) -> None:
    """Print the before/after table, examples and the run's cost."""
    show_examples(console, metrics)
    console.print()
    console.print(metrics_table(metrics))
    if (line := p_value_line(metrics["primary_metric"], metrics.get("uncertainty", {}).get(metrics["primary_metric"]))):
        console.print(line)
    train, mem = metrics["train"], metrics["memory"]
    strat = metrics["strategy"]
    console.print(
        f"strategy {strat['name']}: {strat['trainable_params']:,} / {strat['total_params']:,} parameters trained; "
        f"{train['examples']} examples x {train['epochs']:g} epochs in {train['seconds']:.1f} s "
        f"({train['samples_per_second']:.1f} examples/s{_precision_note(train)}), "
        f"peak memory {mem['peak_mib']} MiB ({mem['method']})"
    )
    precision = f", {metrics['eval']['precision']}" if metrics["eval"].get("precision") else ""
    console.print(f"evaluation: {metrics['eval']['seconds_before']:.1f} s before, {metrics['eval']['seconds_after']:.1f} s after"
                  f"{precision}")
    console.print(f"saved to [bold]{output_dir}[/] (model, metrics.json, config.yaml, README.md)")
