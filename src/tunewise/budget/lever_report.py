"""From the levers' budget points to their price: gains, costs, labels equivalent, words, files.

The maths is pure functions on :class:`~tunewise.budget.roi.BudgetPoint` lists, one list per
lever (``none`` being the plain sweep):

* **gain**: the lever's metric minus the plain run's at the same size and seed (the subsets are
  the same nested draws), better-is-positive, in points (x100) for a metric in [0, 1]; the
  spread is the standard deviation of those paired differences over seeds;
* **cost**: a lever's seconds come from ``extra["levers"]`` of each point
  (``<key>_seconds``, the full cost even when a cache answered, :mod:`tunewise.data.training_rows`).
  At each size the lever is priced at the mean of its points' full seconds there, plus the
  per-point training-time difference against ``none``: what one run at that size costs from
  scratch. The sweep itself pays a cached lever once per data set (the points whose cache did
  not answer), not once per point. (Taking the largest size's seconds for every size would be
  wrong here: synthetic generation covers the documents without a labeled query, so it costs
  less as labels grow, while mining encodes the same corpus at every size.)
* **labels equivalent**: the labeled size at which the plain curve reaches the lever's metric:
  interpolated in log size between measured sizes (on the curve's running best, so a noisy dip
  does not count twice), beyond the largest size from the learning-curve forecast
  (:func:`tunewise.budget.forecast.labels_for_target`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError


def lever_seconds(point: BudgetPoint, key: str) -> float:
    """Seconds the lever ``key`` reported for this point (0 when it reported nothing)."""
    value = (point.extra.get("levers") or {}).get(f"{key}_seconds")
    return float(value) if isinstance(value, (int, float)) else 0.0


def lever_cached(points: Sequence[BudgetPoint], key: str) -> bool:
    """Whether the lever's cache answered for any point: then it is a per-data-set cost."""
    return any((p.extra.get("levers") or {}).get(f"{key}_cached") for p in points)


def _mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else math.nan


def lever_cost(points: Sequence[BudgetPoint], keys: Sequence[str], size: int) -> float:
    """What the lever costs a user who trains one model at ``size`` labels (training excluded).

    The mean over seeds of the seconds the points at ``size`` reported: a point whose cache
    answered still reports the full cost (the :mod:`tunewise.data.training_rows` contract), so
    a user without the sweep's cache is priced what the work costs from scratch at that size.
    """
    here = [p for p in points if p.kind == "data" and p.size == size]
    return sum(_mean([lever_seconds(p, key) for p in here]) for key in keys) if here else 0.0


def sweep_lever_seconds(points: Sequence[BudgetPoint], keys: Sequence[str]) -> float:
    """Lever seconds the sweep itself paid: the points whose cache did not answer (a cached
    lever is paid once per data set, not per point); all of them for a lever without a cache;
    the largest report once when every point found the cache filled by an earlier run."""
    data = [p for p in points if p.kind == "data"]
    total = 0.0
    for key in keys:
        if not lever_cached(data, key):
            total += sum(lever_seconds(p, key) for p in data)
            continue
        paid = [lever_seconds(p, key) for p in data if not (p.extra.get("levers") or {}).get(f"{key}_cached")]
        total += sum(paid) if paid else max((lever_seconds(p, key) for p in data), default=0.0)
    return total


@dataclass(frozen=True)
class Equivalent:
    """Labeled items at which the plain curve reaches a value.

    ``how``: ``measured`` (interpolated between measured sizes), ``below`` (at or under the
    smallest measured size: ``size`` is that size, an upper bound), ``forecast`` (beyond the
    largest, from the fitted curve; ``low``/``high`` its interval), ``unreachable`` (the
    fitted curve levels off under it), ``beyond`` (above every measured size, no forecast).
    """

    size: float | None
    how: str
    low: float | None = None
    high: float | None = None


def labels_equivalent(plain: Sequence[BudgetPoint], value: float, higher_is_better: bool | None = None) -> Equivalent:
    """The labeled size at which the plain sweep's curve reaches ``value`` (metric units)."""
    data = [p for p in plain if p.kind == "data"]
    if not data:
        return Equivalent(None, "beyond")
    higher = data[0].higher_is_better if higher_is_better is None else higher_is_better
    sign = 1.0 if higher else -1.0
    sizes = sorted({p.size for p in data})
    best, envelope = -math.inf, []
    for s in sizes:  # running best: the labels needed to have reached a value once
        best = max(best, sign * _mean([p.metric_after for p in data if p.size == s]))
        envelope.append(best)
    target = sign * value
    if target <= envelope[0]:
        return Equivalent(float(sizes[0]), "below")
    for i in range(1, len(sizes)):
        if envelope[i] >= target:
            lo, hi = math.log(sizes[i - 1]), math.log(sizes[i])
            t = (target - envelope[i - 1]) / (envelope[i] - envelope[i - 1])
            return Equivalent(math.exp(lo + t * (hi - lo)), "measured")
    if len(sizes) < 3:
        return Equivalent(None, "beyond")
    from tunewise.budget.forecast import labels_for_target

    try:
        est = labels_for_target(data, value, higher_is_better=higher)
    except TunewiseError:
        return Equivalent(None, "beyond")
    if not est.reachable:
        return Equivalent(None, "unreachable")
    return Equivalent(est.size, "forecast", est.low, est.high)


@dataclass(frozen=True)
class LeverRow:
    """One lever at one labeled size, against ``none`` at the same size."""

    lever: str
    description: str
    work: str
    size: int
    n: int
    mean: float
    std: float
    gain: float  # metric units, better-is-positive; 0 for none
    gain_spread: float | None  # std of the paired per-seed differences (None: one seed)
    lever_seconds: float
    train_delta: float  # mean training seconds minus none's at this size
    extra_seconds: float
    money: float | None
    equivalent: Equivalent
    more_labels: float | None  # equivalent.size - size

    @property
    def clear(self) -> bool:
        """A gain above zero and above the seed spread of the paired differences."""
        return self.gain > 0 and (self.gain_spread is None or self.gain > self.gain_spread)


def _std(values: Sequence[float]) -> float:
    return float(statistics.stdev(values)) if len(values) > 1 else 0.0


def lever_rows(choices: Sequence[Any], points: dict[str, list[BudgetPoint]], *,
               price_per_hour: float | None = None) -> list[LeverRow]:
    """Rows for every lever at every size the plain sweep also measured, smallest size first."""
    plain = [p for p in points["none"] if p.kind == "data"]
    higher = plain[0].higher_is_better if plain else True
    sign = 1.0 if higher else -1.0
    rows = []
    for size in sorted({p.size for p in plain}):
        base = {p.seed: p for p in plain if p.size == size}
        base_train = _mean([p.train_seconds for p in base.values()])
        for choice in choices:
            lever_points = [p for p in points.get(choice.text, []) if p.kind == "data"]
            here = {p.seed: p for p in lever_points if p.size == size}
            if not here:
                continue
            metrics = [p.metric_after for p in here.values()]
            paired = [sign * (here[s].metric_after - base[s].metric_after) for s in sorted(here.keys() & base.keys())]
            gain = _mean(paired) if paired else sign * (_mean(metrics) - _mean([p.metric_after for p in base.values()]))
            cost = lever_cost(lever_points, choice.cost_keys, size)
            delta = 0.0 if choice.is_none else _mean([p.train_seconds for p in here.values()]) - base_train
            extra = cost + max(delta, 0.0)  # more rows cannot make training faster: a negative difference is timing noise
            equivalent = labels_equivalent(plain, _mean(metrics), higher)
            rows.append(LeverRow(
                choice.text, choice.description, choice.work, size, len(here), _mean(metrics), _std(metrics),
                0.0 if choice.is_none else gain, _std(paired) if len(paired) > 1 else None, cost, delta, extra,
                None if price_per_hour is None else extra / 3600 * price_per_hour, equivalent,
                None if equivalent.size is None else equivalent.size - size))
    return rows


def duration(seconds: float) -> str:
    """``45 s``, ``4.2 minutes``, ``1.5 hours``."""
    if abs(seconds) < 10:
        return f"{seconds:.1f} s"
    if abs(seconds) < 90:
        return f"{seconds:.0f} s"
    if abs(seconds) < 5400:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _money(value: float) -> str:
    """Two decimals, or two significant digits for small amounts (0.00055), never an exponent."""
    if abs(value) >= 0.1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.{max(2, 1 - math.floor(math.log10(abs(value))))}f}"


def lever_sentence(row: LeverRow, *, metric: str, unit: str, scale: float, price_per_hour: float | None = None,
                   price_per_label: float | None = None) -> str:
    """The report's words for one lever at one size, for a gain and for no gain alike."""
    pts = "points" if scale == 100 else metric
    gain = f"{scale * row.gain:+.1f} {pts}" if scale == 100 else f"{row.gain:+.4f}"
    spread = (f"± {scale * row.gain_spread:.1f} over {row.n} seeds" if row.gain_spread is not None
              else "one seed: no spread measured")
    parts = []
    if row.lever_seconds > 0:
        delta = row.train_delta
        parts.append(f"{duration(row.lever_seconds)} {row.work}"
                     + (f" + {duration(delta)} more training" if delta >= 0.5 else ""))
    elif row.extra_seconds > 0:
        parts.append("extra training")
    if row.money is not None:
        parts.append(f"≈ {_money(row.money)} at {price_per_hour:g}/hour")
    paid = duration(row.extra_seconds) + (f" ({'; '.join(parts)})" if parts else "")
    head = f"At {row.size} {unit}, {row.description}"
    if row.gain < 0:
        lost = f"{scale * -row.gain:.1f} {pts}" if scale == 100 else f"{-row.gain:.4f}"
        return f"{head} lost {lost} of {metric} ({spread}) for {paid}: not worth it at this size."
    if row.gain == 0:
        return f"{head} changed nothing on {metric} ({spread}) for {paid}: not worth it at this size."
    if not row.clear:
        return f"{head} gained {gain} of {metric}, within the seed spread ({spread}): no clear gain for {paid}."
    eq, more = row.equivalent, row.more_labels
    text = f"{head} gained {gain} of {metric} ({spread}) for {paid}"
    if eq.how == "unreachable":
        return text + ": more than any number of labels reach on the plain curve (it levels off below it)."
    if eq.how == "beyond" or more is None:
        return text + ": more than the plain sweep reaches at its largest size; measure larger sizes to price it in labels."
    if more <= 0:
        return text + (f"; the plain curve already reached that at about {eq.size:,.0f} {unit} (it is not monotone "
                       "here), so the gain is within its noise.")
    where = f"about {eq.size:,.0f}" + (f", forecast, {eq.low:,.0f} to {eq.high:,.0f}" if eq.how == "forecast" and
                                       eq.low is not None and eq.high is not None and math.isfinite(eq.high) else "")
    text += f", as much as {more:,.0f} more labeled {unit} buy (the plain curve reaches it at {where})"
    if price_per_label is not None and row.money is not None:
        labels = more * price_per_label
        return text + (f": {'cheaper' if row.money < labels else 'dearer'} than labeling them "
                       f"({_money(labels)} at {price_per_label:g} each).")
    if row.money is not None:
        return text + f": cheaper than labeling them unless a label costs under {_money(row.money / more)}."
    return text + f": cheaper than labeling them unless that takes under {duration(row.extra_seconds)}."

@dataclass
class LeverResult:
    """What the lever sweep measured; the files are in ``output_dir``."""

    output_dir: Path
    metric: str
    higher_is_better: bool
    unit: str
    scale: float  # 100: gains in points of a metric in [0, 1]
    rows: list[LeverRow]
    words: list[str]
    notes: list[str]
    cost: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict, repr=False)  # lever -> BudgetResult
    plot: Path | None = None

    @property
    def report_path(self) -> Path:
        return self.output_dir / "levers.md"

    @property
    def summary_path(self) -> Path:
        return self.output_dir / "levers.json"


def _row_cells(row: LeverRow, result: LeverResult) -> list[str]:
    s, eq = result.scale, row.equivalent
    pm = f" ± {s * row.gain_spread:.1f}" if row.gain_spread is not None else ""
    if eq.size is None:
        equiv = {"unreachable": "not on the curve", "beyond": "> largest measured"}.get(eq.how, "–")
    else:
        equiv = f"{'≤ ' if eq.how == 'below' else ''}{eq.size:,.0f}{' (forecast)' if eq.how == 'forecast' else ''}"
    if row.lever == "none":
        equiv = "–"
    more = "–" if row.lever == "none" or row.more_labels is None or eq.how == "below" else f"{row.more_labels:+,.0f}"
    if row.lever == "none":
        return [row.lever, str(row.n), f"{row.mean:.4f} ± {row.std:.4f}", *["–"] * 7]
    return [row.lever, str(row.n), f"{row.mean:.4f} ± {row.std:.4f}", f"{s * row.gain:+.1f}{pm}",
            f"{row.lever_seconds:,.1f}", f"{row.train_delta:+,.1f}", f"{row.extra_seconds:,.1f}",
            "–" if row.money is None else _money(row.money), equiv, more]


def _columns(result: LeverResult) -> list[str]:
    gain = "gain (points)" if result.scale == 100 else f"gain ({result.metric})"
    return ["lever", "seeds", f"{result.metric} ± std", f"{gain} ± spread", "lever s", "train Δ s", "extra s", "money",
            f"labels equivalent ({result.unit})", "more labels"]


def levers_markdown(result: LeverResult) -> str:
    """``levers.md``: one table per labeled size, the words, the notes."""
    lines = [f"# What the levers buy ({result.metric})", ""]
    for size in sorted({r.size for r in result.rows}):
        lines += [f"## {size} labeled {result.unit}", "", "| " + " | ".join(_columns(result)) + " |",
                  "|" + "---|" * len(_columns(result))]
        lines += ["| " + " | ".join(_row_cells(r, result)) + " |" for r in result.rows if r.size == size]
        lines.append("")
    lines += ["## In words", "", *[f"- {w}" for w in result.words], "", "## Notes", "", *[f"- {n}" for n in result.notes]]
    if result.plot is not None:
        lines += ["", f"![gain against cost]({result.plot.name})"]
    return "\n".join(lines) + "\n"


def levers_json(result: LeverResult) -> dict[str, Any]:
    rows = []
    for r in result.rows:
        row = asdict(r)
        row["gain_points"] = result.scale * r.gain
        rows.append(row)
    return {"metric": result.metric, "higher_is_better": result.higher_is_better, "unit": result.unit,
            "gain_scale": result.scale, "levers": list(result.results), "rows": rows, "words": result.words,
            "notes": result.notes, "cost": result.cost,
            "folders": {k: str(v.output_dir) for k, v in result.results.items()}}


def plot_levers(result: LeverResult, path: Path) -> Path | None:
    """Gain against extra cost, one marker per lever and size (none of the plain sweep's rows)."""
    rows = [r for r in result.rows if r.lever != "none"]
    if not rows:
        return None
    from tunewise.report.plots import _figure, _save

    fig, ax = _figure()
    money = all(r.money is not None for r in rows)
    markers = "osD^vP*X"
    for i, lever in enumerate(dict.fromkeys(r.lever for r in rows)):
        mine = [r for r in rows if r.lever == lever]
        xs = [r.money if money else r.extra_seconds / 60 for r in mine]
        ys = [result.scale * r.gain for r in mine]
        errs = [result.scale * (r.gain_spread or 0.0) for r in mine]
        ax.errorbar(xs, ys, yerr=errs if any(errs) else None, fmt=markers[i % len(markers)], label=lever, capsize=3)
        for x, y, r in zip(xs, ys, mine):
            ax.annotate(f"{r.size}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("extra cost (money)" if money else "extra minutes (lever + training difference)")
    ax.set_ylabel("gain vs none (points)" if result.scale == 100 else f"gain vs none ({result.metric})")
    ax.set_title(f"What each lever buys, per labeled size ({result.metric}; labels next to markers)", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def build_lever_result(out: Path, choices: Sequence[Any], results: dict[str, Any], *, unit: str = "items",
                       price_per_hour: float | None = None, price_per_label: float | None = None) -> LeverResult:
    """Rows, words and notes from each lever's :class:`~tunewise.budget.results.BudgetResult`; write the files."""
    from tunewise.files import write_json, write_text

    points = {name: list(r.points) for name, r in results.items()}
    plain = results["none"]
    rows = lever_rows(choices, points, price_per_hour=price_per_hour)
    values = [p.metric_after for ps in points.values() for p in ps] + [p.metric_before for ps in points.values() for p in ps]
    scale = 100.0 if values and all(0 <= v <= 1 for v in values) else 1.0
    words = [lever_sentence(r, metric=plain.metric, unit=unit, scale=scale, price_per_hour=price_per_hour,
                            price_per_label=price_per_label) for r in rows if r.lever != "none"]
    befores = {name: r.metric_before for name, r in results.items() if r.metric_before is not None}
    notes = [
        "every lever trains on the same nested subsets (same config seed) and is scored on the same evaluation set; "
        "gains are paired per seed against none at the same size",
        "lever seconds: at each size, the full seconds the lever's points reported there (what one run at that size "
        "pays from scratch, also where the sweep's cache answered) plus the training-time difference against none "
        "(a negative difference is timing noise and counts as 0); "
        "the sweep itself paid a cached lever once per data set (its 'lever_seconds' in levers.json)",
        "labels equivalent: the labeled size at which the plain (none) curve reaches the lever's metric, interpolated "
        "in log size between measured sizes, forecast from the fitted learning curve beyond the largest",
    ]
    if len({round(v, 6) for v in befores.values()}) > 1:
        notes.append(f"warning: the pre-trained score differs between levers ({befores}): the evaluation sets differ")
    cost: dict[str, Any] = {}
    for choice in choices:
        r = results[choice.text]
        data = [p for p in r.points if p.kind == "data"]
        lever_s = sweep_lever_seconds(data, choice.cost_keys)
        cost[choice.text] = {"train_seconds": r.cost.get("train_seconds", 0.0), "eval_seconds": r.cost.get("eval_seconds", 0.0),
                             "lever_seconds": round(lever_s, 2)}
        if choice.cost_keys and data and not any(p.extra.get("levers") for p in data):
            notes.append(f"warning: {choice.text} reported no lever work at any point: it may not reach this strategy's "
                         "training (its gain is then noise)")
    total = sum(c["train_seconds"] + c["eval_seconds"] + c["lever_seconds"] for c in cost.values())
    notes.append(f"sweep cost: {duration(total)} in all (training, evaluation and lever work of every lever)"
                 + (f", ≈ {_money(total / 3600 * price_per_hour)} at {price_per_hour:g}/hour" if price_per_hour is not None else ""))
    if price_per_label is None:
        notes.append("no --price-per-label: the words give the label price at which a lever breaks even")
    result = LeverResult(Path(out), plain.metric, plain.higher_is_better, unit, scale, rows, words, notes, cost, dict(results))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result.plot = plot_levers(result, out / "levers.png")
    write_text(out / "levers.md", levers_markdown(result))
    write_json(out / "levers.json", levers_json(result))
    return result


def show_levers(result: LeverResult, console: Any) -> None:
    """The lever tables and words on a rich console."""
    from rich.table import Table

    for size in sorted({r.size for r in result.rows}):
        table = Table(title=f"levers at {size} labeled {result.unit} ({result.metric})", title_justify="left")
        for col in _columns(result):
            table.add_column(col, justify="left" if col == "lever" else "right")
        for r in result.rows:
            if r.size == size:
                table.add_row(*_row_cells(r, result))
        console.print(table)
    for w in result.words:
        console.print(f"[bold]lever:[/] {w}")
    console.print(f"report: {result.report_path} (levers.json, levers.png beside it)")
