"""Side-by-side comparison: the same data, budget and evaluation, one run per strategy, one table.

Every strategy is validated before the first run starts, so a typo in the fourth one does
not cost three trainings. With ``eval.folds`` (``--folds K``) each strategy is cross-validated
on the same folds (:mod:`tunewise.folds`): rows show mean ± std over the folds, the interval
is pooled over every held-out item, and "vs best" pairs the strategies on those pooled items.
Each run is a normal tunewise run folder under ``output_dir/<label>``; the table goes to
``compare.json`` and ``compare.md`` beside them. A comparison that fails leaves no new
folder behind, so the corrected command runs without ``--overwrite``.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tunewise.config import RunConfig
from tunewise.errors import TunewiseError

DEFAULT_STRATEGIES = ["head", "partial", "full", "lora"]


def parse_strategy(spec: str | dict[str, Any]) -> dict[str, Any]:
    """``"lora"`` or ``"lora:rank=4,alpha=8"`` (values parsed as YAML) -> ``{"name": "lora", "rank": 4, ...}``."""
    if isinstance(spec, dict):
        if "name" not in spec:
            raise TunewiseError(f"--strategy: {spec} has no name")
        return dict(spec)
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise TunewiseError(f"--strategy: empty strategy name in '{spec}'")
    out: dict[str, Any] = {"name": name}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise TunewiseError(f"--strategy: expected NAME:key=value,... got '{spec}'")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _label(spec: dict[str, Any], taken: set[str]) -> str:
    label = spec["name"] + "".join(f"-{k}{v}" for k, v in spec.items() if k != "name")
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    base, n = label, 2
    while label in taken:
        label, n = f"{base}-{n}", n + 1
    taken.add(label)
    return label


def plan(config: RunConfig, strategies: list[str | dict[str, Any]]) -> list[tuple[str, RunConfig]]:
    """One validated config per strategy (unknown names and bad options fail here, before any run)."""
    from tunewise.strategies import resolve_strategy

    if not strategies:
        raise TunewiseError("--strategy: give at least one strategy to compare")
    taken: set[str] = set()
    planned = []
    for raw in strategies:
        spec = parse_strategy(raw)
        cfg = copy.deepcopy(config)
        cfg.set_strategy(spec)
        resolve_strategy(cfg)
        planned.append((_label(spec, taken), cfg))
    return planned


def row_of(label: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers one table row shows, from a run's metrics.json."""
    primary = metrics["primary_metric"]
    s, t, mem = metrics["strategy"], metrics["train"], metrics.get("memory", {})
    return {
        "strategy": label,
        "metric": primary,
        "before": metrics["before"][primary],
        "after": metrics["after"][primary],
        "relative_improvement": metrics["relative_improvement"].get(primary),
        "interval": metrics.get("uncertainty", {}).get(primary),  # paired bootstrap of the gain over before
        "trainable_params": s["trainable_params"],
        "total_params": s["total_params"],
        "trainable_fraction": s["trainable_fraction"],
        "seconds": t["seconds"],
        "samples_per_second": t["samples_per_second"],
        "peak_mib": mem.get("peak_mib"),
        "memory_method": mem.get("method"),
        "folds": fold_cells(metrics),
    }


def fold_cells(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """A k-fold run's primary metric across folds: ``{"k", "before", "after", "gain"}`` (each ``{"mean", "std"}``); None otherwise."""
    folds = metrics.get("folds")
    if not folds:
        return None
    summary = folds["summary"].get(metrics["primary_metric"], {})
    return {"k": folds["k"], **{side: summary.get(side) for side in ("before", "after", "gain")}}


def score_cell(row: dict[str, Any], side: str) -> str:
    """``0.4521``, or for a k-fold row ``0.4521 ± 0.0123`` (mean ± std over the folds)."""
    stats = (row.get("folds") or {}).get(side)
    if not stats or stats.get("std") is None:
        return f"{row[side]:.4f}"
    return f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def versus_best(rows: list[dict[str, Any]], after_items: dict[str, list[float] | None], *, higher_is_better: bool,
                confidence: float, resamples: int, seed: int) -> None:
    """Mark each row's difference from the best strategy, with a paired permutation test.

    The best row (highest primary score after, lowest for a loss) is compared with every other
    on the same evaluation items: ``row["vs_best"]`` gets the paired interval of
    ``other - best`` (:func:`~tunewise.evaluate.uncertainty.paired_interval`) and
    ``significant``: whether the p-value is below ``1 - confidence``. Rows without per-item
    scores (a macro metric, an old run) get None.

    Args:
        rows: the table rows (:func:`row_of`), changed in place.
        after_items: strategy label -> the per-item primary scores of its fine-tuned model.
    """
    from tunewise.evaluate.uncertainty import paired_interval

    if not rows:
        return
    best = (max if higher_is_better else min)(rows, key=lambda r: r["after"])
    best_items = after_items.get(best["strategy"])
    for row in rows:
        items = after_items.get(row["strategy"])
        row["best"] = row is best
        if row is best or best_items is None or items is None or len(items) != len(best_items):
            row["vs_best"] = None
            continue
        test = paired_interval(best_items, items, confidence=confidence, resamples=resamples, seed=seed)
        p = test["p_value"]
        row["vs_best"] = {**test, "significant": p is not None and p < 1 - confidence}


def vs_best_cell(row: dict[str, Any]) -> str:
    """The "vs best" cell: best, or the difference from the best strategy with its p-value."""
    if row.get("best"):
        return "best"
    test = row.get("vs_best")
    if not test or test.get("p_value") is None:
        return "n/a"
    p = test["p_value"]
    p_text = f"p = {p:.3g}" if p >= 1e-3 else "p < 0.001"
    verdict = "differs" if test["significant"] else "not significant"
    return f"{test['difference']:+.4f} ({p_text}, {verdict})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    from tunewise.evaluate.uncertainty import describe

    if not rows:
        return ""
    m = rows[0]["metric"]
    lines = [f"| strategy | {m} before | {m} after | relative | trainable params | seconds | samples/s | peak memory (MiB) "
             "| vs best |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rel = describe(r["relative_improvement"], r.get("interval"))
        lines.append(
            f"| {r['strategy']} | {score_cell(r, 'before')} | {score_cell(r, 'after')} | {rel} | "
            f"{r['trainable_params']:,} ({r['trainable_fraction'] * 100:.2f}%) | {r['seconds']:.1f} | "
            f"{r['samples_per_second']:.1f} | {r['peak_mib'] if r['peak_mib'] is not None else 'n/a'} | "
            f"{vs_best_cell(r)} |"
        )
    return "\n".join(lines) + "\n"


def compare(config: RunConfig, strategies: list[str | dict[str, Any]], output_dir: str | Path, *,
            console: Console | None = None) -> dict[str, Any]:
    """Run every strategy on ``config``'s data and budget; write and return the table.

    Args:
        config: the shared run config (data, train budget, eval); its strategy and output_dir are replaced.
        strategies: names or ``NAME:key=value,...`` specs (or dicts).
        output_dir: parent folder; runs go to ``output_dir/<label>``.

    Returns:
        ``{"rows": [...], "markdown": str, "output_dir": str}``.
    """
    from tunewise.outputs import check_output_dir, write_json, write_text
    from tunewise.run import fit

    console = console or Console(stderr=True)
    planned = plan(config, strategies)
    out = check_output_dir(output_dir, config.overwrite)
    from tunewise.run import check_config
    from tunewise.tasks import TASKS

    for _, cfg in planned:  # every strategy's options and the data are checked before the first run
        check_config(cfg)
    task = TASKS.get(config.task)()
    if config.eval.folds:
        from tunewise.folds import fold_splits

        fold_splits(task, config)  # a K the data cannot fold fails before the first run
    else:
        task.prepare_data(config)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows, after_items = [], {}
        for label, cfg in planned:
            cfg.output_dir = str(out / label)
            cfg.overwrite = True
            console.rule(f"{label}")
            result = fit(cfg, console=console)
            rows.append(row_of(label, result.metrics))
            after_items[label] = result.metrics.get("items", {}).get(result.metrics["primary_metric"], {}).get("after")
        if rows:
            versus_best(rows, after_items, higher_is_better=task.spec.higher_is_better(rows[0]["metric"]),
                        confidence=config.eval.confidence, resamples=config.eval.resamples, seed=config.seed)
        table = markdown_table(rows)
        write_json(out / "compare.json", {"rows": rows, "config": config.to_dict()})
        note = ""
        if config.eval.folds:
            note = (f"\n{config.eval.folds}-fold cross-validation: before and after are mean ± std over the folds; the relative "
                    "gain's interval and 'vs best' are paired over every held-out item of every fold.\n")
        write_text(out / "compare.md", f"# tunewise compare\n\n{table}{note}\nPeak memory: {rows[0]['memory_method']}.\n")
    except BaseException:
        # A folder this call made would block the corrected rerun ("already exists"): remove it,
        # finished runs included (the comparison is only meaningful whole).
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return {"rows": rows, "markdown": table, "output_dir": str(out)}


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(path) / "compare.json").read_text(encoding="utf-8"))["rows"]
