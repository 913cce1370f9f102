"""A self-contained HTML report of a budget sweep: one file to mail, open offline, or archive.

Images are embedded as base64 ``data:`` URIs and the CSS is inline, so the file needs
nothing next to it and loads nothing from the network. It is written to a temporary file
and moved into place with ``os.replace``: a reader (or a browser refreshing the page) sees
the old report or the new one, never half of one.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunewise.budget.advice import Recommendation
    from tunewise.budget.forecast import ForecastResult, TargetEstimate, ValidationResult
    from tunewise.budget.roi import SizeSummary
    from tunewise.budget.stability import KneeStability

CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222;
       padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
.rec { background: #eef6ee; border-left: 4px solid #3a3; padding: 0.8rem 1rem; }
.warn { background: #fff4e0; border-left: 4px solid #e90; padding: 0.5rem 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f4f4f4; } td.neg { color: #b00; font-weight: bold; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.8rem; color: #555; }
"""

# {Gain}/{gain}: "Relative improvement"/"relative improvement", or "Absolute gain"/"gain" when
# the pre-trained model scored 0 (see tunewise.budget.roi.improvement); "reduction" for a
# lower-is-better metric (a loss, an error rate), whose fall is the improvement.
CAPTIONS = {
    "improvement_vs_items": "{Gain} over the pre-trained model against labeled "
    "items (band: ± 1 std over seeds).",
    "roi_vs_items": "Data ROI ({gain} per item) and marginal ROI; the dotted line "
    "is the knee.",
    "improvement_vs_seconds": "{Gain} against training seconds (evaluation "
    "excluded).",
    "roi_vs_seconds": "Time ROI ({gain} per training second) and marginal ROI.",
    "forecast": "Learning-curve forecast with its bootstrap interval and the observed means.",
}
EQUAL_LABELS_CAPTION = (" Blue: against the frozen-feature probe fitted on all training items (do labels beat "
                        "features?). Orange, dashed: against the probe fitted on the same labeled items (is "
                        "fine-tuning worth it at this budget?).")


def image_data_uri(path: str | os.PathLike[str]) -> str:
    """``data:image/png;base64,...`` for a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float | None, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], neg_cols=()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            neg = i in neg_cols and cell.startswith("-")
            cells.append(f'<td class="neg">{_e(cell)}</td>' if neg else f"<td>{_e(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary_table(rows: Sequence[SizeSummary], kind: str) -> str:
    from tunewise.budget.advice import gain_name, gain_text

    unit = "item" if kind == "data" else "s"
    absolute = bool(rows) and rows[0].absolute
    higher = not rows or rows[0].higher_is_better
    equal = any(r.mean_rel_improvement_equal_labels is not None for r in rows)
    name = gain_name(absolute, higher)
    lead_cols = ["items"] if kind == "data" else ["epoch", "items"]
    header = lead_cols + ["seeds", "mean metric", f"{name} vs all-items probe" if equal else name, "± std"]
    if equal:
        header += ["probe, same items", f"{name} vs same-items probe"]
    header += [f"ROI / {unit}", f"marginal ROI / {unit}", "train s", "eval s"]
    body = []
    for r in rows:
        lead = [str(r.size)] if kind == "data" else [f"{r.epoch:g}", str(r.size)]
        row = lead + [str(r.n), _num(r.mean_metric, ".4f"), gain_text(r.mean_rel_improvement, absolute, digits=2),
                      gain_text(r.std, absolute, digits=2, signed=False)]
        if equal:
            eq = r.mean_rel_improvement_equal_labels
            row += [_num(r.mean_metric_before_equal_labels, ".4f"), "–" if eq is None else gain_text(eq, False, digits=2)]
        row += [_num(r.roi, ".3g"), _num(r.marginal_roi, ".3g"), _num(r.mean_seconds, ".1f"),
                _num(r.mean_eval_seconds, ".1f")]
        body.append(row)
    gains = [len(lead_cols) + 2] + ([len(lead_cols) + 5] if equal else [])
    return _table(header, body, neg_cols=[*gains, len(header) - 3])


def _forecast_section(res: ForecastResult, validation, target) -> str:
    params = ", ".join(f"{k} = {v:.4g}" for k, v in res.params.items())
    scores = ", ".join(f"{k}: {v:.4f} (weight {res.weights.get(k, 0):.2f})"
                       for k, v in res.cv_rmse.items())
    measured = set(res.observed_sizes)
    rows = [[f"{s:,}", _num(m, ".4f"), _num(lo, ".4f"), _num(hi, ".4f"),
             "measured" if s in measured else f"{s / res.observed_sizes[-1]:.1f}x largest"]
            for s, m, lo, hi in zip(res.sizes, res.mean, res.low, res.high)]
    parts = [
        f"<p>Best form: <b>{_e(res.form)}</b>, <code>{_e(res.formula)}</code> with {_e(params)}."
        f" Leave-one-size-out RMSE by form: {_e(scores)}. The forecast is the median over "
        f"{len(res.boot)} bootstrap fits, which mix the forms by those weights.</p>",
        _table(["items", "forecast", f"{100 * res.level:.0f}% low", "high", "note"], rows),
    ]
    parts += [f'<p class="warn">{_e(w)}</p>' for w in res.warnings]
    if len(res.sizes) and res.sizes[-1] > res.observed_sizes[-1]:
        # how far the user can trust it: the calibration backtest at the farthest horizon shown
        parts.append(f"<p>How far to trust it: {_e(res.trust(int(res.sizes[-1])).text)} The interval is calibrated "
                     "on a backtest of measured learning curves (benchmarks/results/forecast_calibration.md).</p>")
    if validation is not None:
        cls = "rec" if validation.inside else "warn"
        parts.append(f'<h3>Forecast validation</h3><p class="{cls}">{_e(validation.text)}</p>')
    if target is not None:
        parts.append(f"<h3>Labels for target {target.target:g}</h3><p>{_e(target.message)}</p>")
    return "\n".join(parts)


def render_html(
    *,
    title: str = "tunewise budget report",
    recommendation: Recommendation | str | None = None,
    data_summary: Sequence[SizeSummary] | None = None,
    time_summary: Sequence[SizeSummary] | None = None,
    images: Mapping[str, str | os.PathLike[str]] | None = None,
    forecast: ForecastResult | None = None,
    validation: ValidationResult | None = None,
    target: TargetEstimate | None = None,
    notes: Sequence[str] = (),
    knee_stability: KneeStability | None = None,
) -> str:
    """The report as one HTML string (all text escaped, images inlined).

    Args:
        title: page title and heading.
        recommendation: :class:`~tunewise.budget.advice.Recommendation` or plain text.
        data_summary: rows of the data sweep; time_summary: rows of the time sweep.
        images: name -> PNG path (names from :func:`tunewise.report.plots.plot_all` get
            captions); each is embedded as a ``data:`` URI.
        forecast, validation, target: learning-curve results, when a forecast was made.
        notes: extra lines (config summary, machine), shown at the end.
        knee_stability: the data knee over resampled seeds, shown under the data table.
    """
    images = dict(images or {})
    body = [f"<h1>{_e(title)}</h1>"]
    if recommendation is not None:
        text = recommendation if isinstance(recommendation, str) else recommendation.text
        body.append(f'<h2>Recommendation</h2><p class="rec">{_e(text)}</p>')

    rows = list(data_summary or []) + list(time_summary or [])
    from tunewise.budget.advice import improvement_words

    absolute = bool(rows) and rows[0].absolute  # the pre-trained model scored 0: gains, not ratios
    gain = improvement_words(absolute, not rows or rows[0].higher_is_better)
    words = {"Gain": {"gain": "Absolute gain", "reduction": "Absolute reduction"}.get(gain, gain.capitalize()), "gain": gain}
    equal = any(r.mean_rel_improvement_equal_labels is not None for r in rows)

    def figures(*names: str) -> None:
        for name in names:
            if name in images:
                caption = CAPTIONS[name].format(**words) if name in CAPTIONS else name
                if equal and name == "improvement_vs_items":
                    caption += EQUAL_LABELS_CAPTION
                body.append(
                    f'<figure><img src="{image_data_uri(images.pop(name))}" alt="{_e(name)}">'
                    f"<figcaption>{_e(caption)}</figcaption></figure>"
                )

    if data_summary:
        body.append("<h2>Labeled data</h2>")
        figures("improvement_vs_items", "roi_vs_items")
        body.append(_summary_table(data_summary, "data"))
        if knee_stability is not None:
            cls = "rec" if knee_stability.measurable else "warn"
            body.append(f'<p class="{cls}">Knee stability: {_e(knee_stability.text)}.</p>')
    if time_summary:
        body.append("<h2>Training time</h2>")
        figures("improvement_vs_seconds", "roi_vs_seconds")
        body.append(_summary_table(time_summary, "time"))
    if forecast is not None:
        body.append("<h2>Forecast</h2>")
        figures("forecast")
        body.append(_forecast_section(forecast, validation, target))
    figures(*list(images))  # anything else the caller passed
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body) + "\n</body></html>\n"
    )


def write_html(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` atomically: temporary file in the same folder, fsync, ``os.replace``."""
    from tunewise.files import write_text

    return write_text(path, text, sync=True)


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    data_summary: Sequence[SizeSummary] | None = None,
    time_summary: Sequence[SizeSummary] | None = None,
    recommendation: Recommendation | str | None = None,
    forecast: ForecastResult | None = None,
    validation: ValidationResult | None = None,
    target: TargetEstimate | None = None,
    metric_name: str = "metric",
    drop: float = 0.70,
    title: str = "tunewise budget report",
    notes: Sequence[str] = (),
    knee_stability: KneeStability | None = None,
    plots: bool = True,
) -> Path:
    """Draw every plot into ``out_dir/plots`` and write ``out_dir/report.html``.

    ``plots=False`` writes the text only (the report a running sweep rewrites after every
    point: drawing the plots costs more than the rest of the report).

    Returns:
        The path of the HTML file.
    """
    from tunewise.report.plots import plot_all

    out = Path(out_dir)
    images = plot_all(out / "plots", data_summary, time_summary, forecast, validation, target,
                      metric_name=metric_name, drop=drop, knee_stability=knee_stability) if plots else {}
    text = render_html(title=title, recommendation=recommendation, data_summary=data_summary,
                       time_summary=time_summary, images=images, forecast=forecast,
                       validation=validation, target=target, notes=notes, knee_stability=knee_stability)
    return write_html(out / "report.html", text)
