"""How far to trust each size's gain: a paired bootstrap over the evaluation items.

Every data point of a sweep is scored on the same held-out items as the pre-trained model. The
sweep keeps the per-item scores of the primary metric (the "before" once, in
``before_items.json``; each point's in its ``extra["items"]``), so each size's gain gets the
interval ``fit`` gives a single run: the seeds' per-item scores are averaged (the recipe at that
size, training noise averaged out) and compared item by item with the pre-trained model
(:func:`tunewise.evaluate.uncertainty.paired_interval`: bootstrap interval of the gain and a
paired permutation test). Evaluation-set noise is what this interval measures; the seed spread
(the summary's ``std_rel_improvement``) is the other half.

Only metrics whose value is the mean of their items get one (MRR, recall, nDCG, accuracy,
WER-per-clip is not: it is pooled); k-fold sweeps score each fold on other items, so they have none.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tunewise.budget.roi import BudgetPoint

BEFORE_FILE = "before_items.json"


def save_before_items(out: Path, metric: str, items: list[float] | None, value: float) -> None:
    """Keep the pre-trained model's per-item scores beside the result store (a resumed sweep reads them)."""
    from tunewise.files import write_json

    if items and _is_mean(items, value):
        write_json(Path(out) / BEFORE_FILE, {"metric": metric, "items": [float(x) for x in items]})


def load_before_items(out: Path, metric: str) -> list[float] | None:
    path = Path(out) / BEFORE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return data.get("items") if data.get("metric") == metric else None


def point_items(items: dict[str, list[float]] | None, metric: str, value: float) -> list[float] | None:
    """The point's per-item scores of ``metric`` when they average to its value (else None: pooled metrics)."""
    values = (items or {}).get(metric)
    return [float(x) for x in values] if values and _is_mean(values, value) else None


def _is_mean(items: list[float], value: float) -> bool:
    return len(items) > 1 and math.isclose(sum(items) / len(items), value, rel_tol=1e-6, abs_tol=1e-9)


def size_intervals(points: list[BudgetPoint], before_items: list[float] | None, *, confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One interval per data size: the seeds' mean per-item score against the pre-trained model's.

    Returns:
        ``[{"size", "seeds", "n", "difference", "abs_low", "abs_high", "relative", "rel_low",
        "rel_high", "p_value", "higher_is_better"}]`` in size order, improvements signed so that
        positive is better; empty without per-item scores.
    """
    from tunewise.evaluate.uncertainty import as_improvement, paired_interval

    if not before_items:
        return []
    by_size: dict[int, list[list[float]]] = {}
    higher: dict[int, bool] = {}
    for p in points:
        items = p.extra.get("items") if p.kind == "data" else None
        if items and len(items) == len(before_items):
            by_size.setdefault(p.size, []).append(items)
            higher[p.size] = p.higher_is_better
    rows = []
    for size in sorted(by_size):
        runs = by_size[size]
        mean_after = [sum(col) / len(runs) for col in zip(*runs)]
        interval = paired_interval(before_items, mean_after, confidence=confidence, resamples=resamples, seed=seed + size)
        rows.append({"size": size, "seeds": len(runs), "higher_is_better": higher[size],
                     **as_improvement(interval, higher[size])})
    return rows


def interval_lines(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """One line per size for the summary: gain, its interval and p-value."""
    lines = []
    for r in rows:
        rel = "" if r.get("relative") is None else (
            f" ({100 * r['relative']:+.1f}%" + ("" if r.get("rel_low") is None else
                                                 f", {100 * r['rel_low']:+.0f}%..{100 * r['rel_high']:+.0f}%") + ")")
        p = r.get("p_value")
        lines.append(f"{r['size']} items ({r['seeds']} seed{'s' if r['seeds'] != 1 else ''}): {metric} "
                     f"{r['difference']:+.4f} [{100 * r['confidence']:.0f}% CI {r['abs_low']:+.4f}..{r['abs_high']:+.4f}]{rel}"
                     + ("" if p is None else f", p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}"))
    return lines
