"""PNG plots of a budget sweep: improvement and ROI against items and seconds, and the forecast.

matplotlib is imported inside the functions (importing tunewise stays fast) and figures are
built with ``matplotlib.figure.Figure`` on an Agg canvas rather than through ``pyplot``:
no global backend switch, no figure registry to leak from in long sweeps, and it works on
machines without a display. Every file is written to a temporary name and moved into place,
so a report never embeds a half-written PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunewise.budget.forecast import ForecastResult, TargetEstimate, ValidationResult
    from tunewise.budget.roi import SizeSummary
    from tunewise.budget.stability import KneeStability

DPI = 110
SIZE = (6.4, 4.0)


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    from tunewise.files import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _mark_knee(ax: Any, x: float, label: str) -> None:
    ax.axvline(x, color="tab:red", linestyle=":", linewidth=1.5)
    # Mid-height with a white box: the ROI curves and the legend crowd the top of the axes.
    ax.annotate(label, xy=(x, 0.55), xycoords=("data", "axes fraction"), xytext=(4, 0),
                textcoords="offset points", color="tab:red", fontsize=8, va="center",
                bbox={"boxstyle": "round", "fc": "white", "ec": "none", "alpha": 0.8})


def _scale(rows: Sequence[SizeSummary]) -> float:
    """Relative improvements plot in %, absolute gains (pre-trained score 0) in the metric's units."""
    return 1.0 if rows and rows[0].absolute else 100.0


def _words(rows: Sequence[SizeSummary]) -> str:
    """The improvement's name: "relative improvement", or "relative reduction" for a loss or error rate."""
    from tunewise.budget.advice import improvement_words

    return improvement_words(bool(rows) and rows[0].absolute, not rows or rows[0].higher_is_better)


def _improvement(rows: Sequence[SizeSummary], x: list[float], ax: Any) -> None:
    k = _scale(rows)
    mean = [k * r.mean_rel_improvement for r in rows]
    spread = [k * r.std for r in rows]
    repeated = any(r.n > 1 for r in rows)  # one seed: no spread to show or to name in the legend
    equal = [(xi, r) for xi, r in zip(x, rows) if r.mean_rel_improvement_equal_labels is not None]
    # Classifiers: "before" is the probe on all items; the probe on the same items is a second curve.
    prefix = "vs probe on all items: " if equal else ""
    ax.plot(x, mean, marker="o", color="tab:blue", label=prefix + ("mean over seeds" if repeated else "one seed"))
    if repeated:
        ax.fill_between(x, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)],
                        color="tab:blue", alpha=0.2, label="± 1 std over seeds")
    if equal:
        ax.errorbar([xi for xi, _ in equal], [100 * r.mean_rel_improvement_equal_labels for _, r in equal],
                    yerr=[100 * (r.std_equal_labels or 0.0) for _, r in equal] if repeated else None,
                    marker="s", linestyle="--", color="tab:orange", capsize=3,
                    label="vs probe on the same labeled items (fine-tuning worth it?)")
    ax.axhline(0, color="grey", linewidth=0.8)
    words = _words(rows)
    if k == 1.0:
        ax.set_ylabel(f"{words} over the pre-trained score of 0")
    else:
        ax.set_ylabel(f"{words} (%" + ("" if not rows or rows[0].higher_is_better else ", a fall is better") + ")")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _roi(rows: Sequence[SizeSummary], x: list[float], ax: Any, unit: str) -> None:
    # ROI per item is ~1e-3: put the power of ten in the label, not in an offset text that
    # would collide with the epoch axis on top.
    finite = [abs(v) for r in rows for v in (r.roi, r.marginal_roi) if math.isfinite(v) and v]
    exp = math.floor(math.log10(max(finite))) if finite else 0
    scale = 10.0**exp
    ax.plot(x, [r.roi / scale for r in rows], marker="o", color="tab:green",
            label=f"ROI (per {unit})")
    ax.plot(x, [r.marginal_roi / scale for r in rows], marker="s", linestyle="--",
            color="tab:orange", label="marginal ROI (negative: worse)")
    ax.axhline(0, color="grey", linewidth=0.8)
    what = _words(rows)
    ax.set_ylabel(f"{what} per {unit}" + (f" (× 1e{exp})" if exp else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def items_axis(ax: Any, sizes: Sequence[float]) -> None:
    """A log axis of labeled items labelled only at the measured sizes.

    Matplotlib's log axis labels minor ticks (``3x10^2 4x10^2``) that run together; the sizes
    a sweep measured are what a reader looks for.
    """
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ticks = sorted({int(s) for s in sizes if s and s > 0})
    if ticks:
        ax.set_xticks(ticks, labels=[f"{t:,}" for t in ticks], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("labeled training items")


def plot_improvement_vs_items(
    data: Sequence[SizeSummary], path: str | os.PathLike[str], metric_name: str = "metric"
) -> Path:
    """Relative improvement against labeled items (log axis), mean ± std over seeds."""
    fig, ax = _figure()
    _improvement(data, [r.size for r in data], ax)
    items_axis(ax, [r.size for r in data])
    base = "the frozen-feature probe" if any(r.mean_rel_improvement_equal_labels is not None for r in data) \
        else "the pre-trained model"
    ax.set_title(f"{metric_name}: {_words(data)} over {base}", fontsize=10)
    return _save(fig, path)


def plot_roi_vs_items(
    data: Sequence[SizeSummary], path: str | os.PathLike[str], knee: int | None = None,
    drop: float = 0.70, stability: KneeStability | None = None,
) -> Path:
    """Data ROI and marginal ROI against items, with the knee and its stability band marked."""
    fig, ax = _figure()
    x = [r.size for r in data]
    _roi(data, x, ax, "item")
    items_axis(ax, x)
    ax.set_title("Return on labeled data")
    if stability is not None and stability.measurable and stability.low is not None:
        high = stability.high if stability.high is not None else x[-1]
        if high > stability.low:
            ax.axvspan(stability.low, high, color="tab:red", alpha=0.08,
                       label=f"knee in {100 * stability.share:.0f}% of seed resamples")
            ax.legend(fontsize=8, loc="best")
    if knee is not None:
        _mark_knee(ax, x[knee], f"knee: {x[knee]} items\n(ROI down {100 * drop:.0f}% from peak)")
    return _save(fig, path)


def _epoch_labels(ax: Any, rows: Sequence[SizeSummary], x: list[float]) -> None:
    # Epochs on a top axis: labels inside the plot would sit on the markers.
    top = ax.secondary_xaxis("top")
    top.set_xticks(x, labels=[f"{r.epoch:g}" for r in rows], fontsize=7)
    top.set_xlabel("epochs", fontsize=8)


def plot_improvement_vs_seconds(
    time: Sequence[SizeSummary], path: str | os.PathLike[str], metric_name: str = "metric"
) -> Path:
    """Relative improvement against training seconds (evaluation excluded), epochs marked."""
    fig, ax = _figure()
    x = [r.mean_seconds for r in time]
    _improvement(time, x, ax)
    _epoch_labels(ax, time, x)
    best = max(range(len(time)), key=lambda i: time[i].mean_rel_improvement)
    ax.plot([x[best]], [_scale(time) * time[best].mean_rel_improvement], marker="*", markersize=14,
            color="tab:red", linestyle="none", label=f"best: epoch {time[best].epoch:g}")
    ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_title(f"{metric_name}: {_words(time)} vs training time ({time[0].size} items)",
                 fontsize=10)
    return _save(fig, path)


def plot_roi_vs_seconds(
    time: Sequence[SizeSummary], path: str | os.PathLike[str], knee: int | None = None,
    drop: float = 0.70,
) -> Path:
    """Time ROI and marginal ROI against training seconds, with the knee marked."""
    fig, ax = _figure()
    x = [r.mean_seconds for r in time]
    _roi(time, x, ax, "second")
    _epoch_labels(ax, time, x)
    ax.set_xlabel("training seconds (evaluation excluded)")
    ax.set_title("Return on training time")
    if knee is not None:
        _mark_knee(ax, x[knee], f"knee: epoch {time[knee].epoch:g}, {x[knee]:.0f} s\n"
                                f"(ROI down {100 * drop:.0f}% from peak)")
    return _save(fig, path)


def plot_forecast(
    result: ForecastResult,
    path: str | os.PathLike[str],
    validation: ValidationResult | None = None,
    target: TargetEstimate | None = None,
    metric_name: str = "metric",
) -> Path:
    """Forecast curve with its bootstrap band, the observed means, and the validation check."""
    import numpy as np

    fig, ax = _figure()
    largest = result.observed_sizes[-1]
    grid = np.geomspace(result.observed_sizes[0], 10 * largest, 200)
    center, low, high = result.predict(grid)
    ax.plot(grid, center, color="tab:purple", label=f"forecast (best form: {result.form})")
    if not np.isnan(low).all():
        ax.fill_between(grid, low, high, color="tab:purple", alpha=0.2,
                        label=f"{100 * result.level:.0f}% bootstrap interval")
    ax.errorbar(result.observed_sizes, result.observed_mean, yerr=result.observed_std, fmt="o",
                color="black", capsize=3, label="observed (mean ± std over seeds)")
    ax.axvline(largest, color="grey", linestyle=":", linewidth=1)
    if validation is not None:
        err = [[validation.predicted - validation.low], [validation.high - validation.predicted]]
        ax.errorbar([validation.size * 1.04], [validation.predicted], yerr=err, fmt="D",
                    color="tab:red", capsize=3,
                    label=f"validation: fit on ≤ {validation.fit_sizes[-1]} items")
    if target is not None:
        ax.axhline(target.target, color="tab:green", linestyle="--", linewidth=1,
                   label=f"target {target.target:g}")
        if target.reachable and target.size is not None and math.isfinite(target.size):
            ax.axvline(target.size, color="tab:green", linestyle=":", linewidth=1)
    items_axis(ax, [*result.observed_sizes, 10 * largest])
    ax.set_ylabel(metric_name)
    ax.set_title(f"Learning-curve forecast: {result.formula}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_all(
    out_dir: str | os.PathLike[str],
    data: Sequence[SizeSummary] | None = None,
    time: Sequence[SizeSummary] | None = None,
    forecast: ForecastResult | None = None,
    validation: ValidationResult | None = None,
    target: TargetEstimate | None = None,
    metric_name: str = "metric",
    drop: float = 0.70,
    knee_stability: KneeStability | None = None,
) -> dict[str, Path]:
    """Every plot the available results allow, keyed by a short name, in ``out_dir``."""
    from tunewise.budget.roi import find_knee, gaining_rois

    out = Path(out_dir)
    paths: dict[str, Path] = {}
    if data:
        knee = find_knee([r.size for r in data], gaining_rois(data), drop)
        paths["improvement_vs_items"] = plot_improvement_vs_items(
            data, out / "improvement_vs_items.png", metric_name)
        paths["roi_vs_items"] = plot_roi_vs_items(data, out / "roi_vs_items.png", knee, drop, knee_stability)
    if time:
        knee = find_knee([r.mean_seconds for r in time], gaining_rois(time), drop)
        paths["improvement_vs_seconds"] = plot_improvement_vs_seconds(
            time, out / "improvement_vs_seconds.png", metric_name)
        paths["roi_vs_seconds"] = plot_roi_vs_seconds(time, out / "roi_vs_seconds.png", knee, drop)
    if forecast is not None:
        paths["forecast"] = plot_forecast(forecast, out / "forecast.png", validation, target,
                                          metric_name)
    return paths
