"""The report in a lower-is-better metric's words, and a classifier's two probe comparisons."""

from __future__ import annotations

import math
import re

import pytest

from tunewise.budget.advice import recommend
from tunewise.budget.roi import BudgetPoint, summarize_points
from tunewise.budget.stability import knee_stability
from tunewise.report.html import render_html
from tunewise.report.plots import _improvement, plot_all


def _axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure()
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def _wer_points(seeds=3):
    # WER 0.31 before; after 0.31 (1 - 0.5 (1 - exp(-n / 100))) plus a per-seed offset
    return [BudgetPoint(n, s, 0.31, 0.31 * (1 - 0.5 * (1 - math.exp(-n / 100))) + 0.002 * s, n * 0.05, 2.0,
                        higher_is_better=False) for n in (25, 50, 100, 200, 400, 800) for s in range(seeds)]


def _classifier_points():
    # all-items probe 0.72; the fine-tuned model and the probe at equal labels both grow with n
    return [BudgetPoint(n, s, 0.72, 0.85 - 1.2 / math.sqrt(n) + 0.003 * s, n * 0.05, 2.0,
                        metric_before_equal_labels=0.80 - 1.5 / math.sqrt(n)) for n in (25, 100, 400) for s in range(2)]


def test_a_lower_is_better_report_says_reduction(tmp_path):
    pts = _wer_points()
    rows = summarize_points(pts)
    assert all(r.mean_rel_improvement > 0 for r in rows)  # WER fell everywhere
    stab = knee_stability(pts)
    images = plot_all(tmp_path / "plots", rows, None, metric_name="wer", knee_stability=stab)
    text = render_html(title="ASR budget", recommendation=recommend(rows, None, metric_name="wer", knee_stability=stab),
                       data_summary=rows, images=images, knee_stability=stab)
    assert "rel. reduction" in text and "Relative reduction over the pre-trained model" in text
    assert "rel. improvement" not in text and not re.search(r"\bgain\b", text.split("<h2>Labeled data")[1])
    assert "wer (lower is better) fell from 0.31 to" in text
    assert f"Knee stability: {stab.text}." in text
    # 25 items: reduction (0.31 - 0.31 (1 - 0.5 (1 - e^-0.25))) / 0.31 = 0.5 (1 - e^-0.25) = 11.060%, minus the
    # offsets' mean 0.002 / 0.31 = 0.645%: +10.41%
    assert "<td>+10.41%</td>" in text

    ax = _axes()
    _improvement(rows, [r.size for r in rows], ax)
    assert ax.get_ylabel() == "relative reduction (%, a fall is better)"


def test_a_classifier_report_shows_both_probe_curves(tmp_path):
    pts = _classifier_points()
    rows = summarize_points(pts)
    r25 = rows[0]
    # 25 items: after 0.85 - 1.2 / 5 = 0.61 (+ offsets 0, 0.003): vs all items (0.6115 - 0.72) / 0.72 = -15.07%;
    # probe at 25 items 0.80 - 1.5 / 5 = 0.50: (0.6115 - 0.5) / 0.5 = +22.3%
    assert r25.mean_rel_improvement == pytest.approx((0.6115 - 0.72) / 0.72)
    assert r25.mean_metric_before_equal_labels == pytest.approx(0.50)
    assert r25.mean_rel_improvement_equal_labels == pytest.approx(0.223)
    ax = _axes()
    _improvement(rows, [r.size for r in rows], ax)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["vs probe on all items: mean over seeds", "± 1 std over seeds",
                      "vs probe on the same labeled items (fine-tuning worth it?)"]
    rec = recommend(rows, None, metric_name="accuracy")
    assert "fine-tuning at 400 items gives" in rec.text and "it beats that probe at every measured size from 25 items" in rec.text
    text = render_html(title="clf", recommendation=rec, data_summary=rows,
                       images=plot_all(tmp_path / "plots", rows, None, metric_name="accuracy"))
    assert "rel. improvement vs all-items probe" in text and "rel. improvement vs same-items probe" in text
    assert '<td class="neg">-15.07%</td>' in text and "<td>+22.30%</td>" in text


def test_the_roi_plot_shades_where_the_resampled_knee_falls(tmp_path):
    from tunewise.budget.stability import KneeStability
    from tunewise.report.plots import plot_roi_vs_items

    rows = summarize_points(_wer_points())
    stab = KneeStability(200, 100, 400, 0.85, 0.5, 0.0, 0.8, 1000, 3, "seeds", 800, "knee at 200 items")
    path = plot_roi_vs_items(rows, tmp_path / "roi.png", knee=3, stability=stab)
    assert path.stat().st_size > 0
