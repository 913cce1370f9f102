"""Plots and the self-contained HTML report, including a render in headless Chromium."""

from __future__ import annotations

import base64
import math
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tunewise.budget.advice import recommend
from tunewise.budget.forecast import forecast, labels_for_target, validate_forecast
from tunewise.budget.grid import default_grid
from tunewise.budget.roi import BudgetPoint, summarize_points
from tunewise.report.html import render_html, write_html, write_report
from tunewise.report.plots import plot_all, plot_roi_vs_items

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = {"improvement_vs_items", "roi_vs_items", "improvement_vs_seconds", "roi_vs_seconds",
         "forecast"}


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    return struct.unpack(">II", data[16:24])  # IHDR width, height


@pytest.fixture(scope="module")
def results():
    rng = np.random.default_rng(0)
    data_points = [
        BudgetPoint(n, s, 0.55, float(0.85 - 1.2 / math.sqrt(n) + rng.normal(0, 0.005)),
                    n * 0.05, 2.0)
        for n in default_grid(2000) for s in range(3)
    ]
    time_points = [
        BudgetPoint(1000, s, 0.55, 0.55 * (1 + 0.3 * (1 - math.exp(-e)) - 0.03 * e), 60.0 * e,
                    4.0, epoch=e, kind="time")
        for e in range(1, 6) for s in range(2)
    ]
    data, time = summarize_points(data_points), summarize_points(time_points)
    fc = forecast(data_points, n_boot=30)
    return {
        "data_summary": data,
        "time_summary": time,
        "recommendation": recommend(data, time, price_per_hour=2.0, metric_name="mrr@20"),
        "forecast": fc,
        "validation": validate_forecast(data_points, n_boot=30),
        "target": labels_for_target(fc, 0.8),
    }


def test_plots_are_written(tmp_path, results):
    r = results
    paths = plot_all(tmp_path / "plots", r["data_summary"], r["time_summary"], r["forecast"],
                     r["validation"], r["target"], metric_name="mrr@20")
    assert set(paths) == NAMES
    for path in paths.values():
        data = path.read_bytes()
        width, height = png_size(data)
        assert (width, height) == (704, 440)  # 6.4 x 4.0 in at 110 dpi
        assert len(data) > 10_000  # axes, curves and text, not an empty canvas
    assert not list((tmp_path / "plots").glob(".*"))  # no temporary files left behind


def test_plot_all_skips_what_is_missing(tmp_path, results):
    assert set(plot_all(tmp_path, data=results["data_summary"])) == {
        "improvement_vs_items", "roi_vs_items"}
    assert plot_all(tmp_path) == {}


def test_plot_without_a_knee(tmp_path, results):
    path = plot_roi_vs_items(results["data_summary"], tmp_path / "r.png", knee=None)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_html_embeds_every_image_and_the_text(tmp_path, results):
    path = write_report(tmp_path / "out", metric_name="mrr@20", notes=["machine: <test>"],
                        **results)
    assert path == tmp_path / "out" / "report.html"
    text = path.read_text(encoding="utf-8")
    uris = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == len(NAMES)
    for uri in uris:
        assert png_size(base64.b64decode(uri))[0] > 0
    assert results["recommendation"].text.split(" capture")[0] in text  # "About N labeled ..."
    assert "Forecast validation" in text and "Labels for target 0.8" in text
    assert "machine: &lt;test&gt;" in text  # escaped, not markup
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing loaded from the network
    assert '<td class="neg">' in text  # negative marginal ROI (overfitting) is highlighted
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_write_html_is_atomic_replace(tmp_path):
    path = tmp_path / "r.html"
    write_html(path, "old")
    write_html(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_render_html_escapes_user_text():
    page = render_html(title="<b>x</b>", recommendation="a < b & c")
    assert "<title>&lt;b&gt;x&lt;/b&gt;</title>" in page and "a &lt; b &amp; c" in page


# -- rendering in a real browser ------------------------------------------------------------

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome"), "/usr/bin/chromium")
                 if p and Path(p).exists()), None)

# Sets a marker on <body> once the page has loaded: "yes" only when every <img> decoded.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
  document.body.setAttribute("data-images-ok", ok ? "yes" : "no");
  document.body.setAttribute("data-images-n", String(imgs.length));
});
</script>"""


def render_in_chromium(html_path: Path, profile: Path) -> str:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
        html_path.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium) so the report cannot be rendered")
def test_report_images_display_in_headless_chromium(tmp_path, results):
    report = write_report(tmp_path / "out", metric_name="mrr@20", **results)
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                      encoding="utf-8")
    dom = render_in_chromium(probed, tmp_path / "profile")
    assert f'data-images-n="{len(NAMES)}"' in dom
    assert 'data-images-ok="yes"' in dom

    # Control: the probe must fail on an image the browser cannot decode.
    broken = tmp_path / "broken.html"
    broken.write_text(render_html(title="t", images={}).replace(
        "</body>", '<img src="data:image/png;base64,AAAA">' + PROBE + "</body>"))
    assert 'data-images-ok="no"' in render_in_chromium(broken, tmp_path / "profile2")


@pytest.mark.parametrize("seeds, labels", [(1, ["one seed"]), (2, ["mean over seeds", "± 1 std over seeds"])])
def test_improvement_legend_names_a_spread_only_when_seeds_repeat(seeds, labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tunewise.report.plots import _improvement

    points = [BudgetPoint(n, s, 0.5, 0.5 + 0.01 * n ** 0.5 + 0.001 * s, n * 0.1, 1.0) for n in (10, 20, 40) for s in range(seeds)]
    rows = summarize_points(points)
    fig, ax = plt.subplots()
    _improvement(rows, [r.size for r in rows], ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    plt.close(fig)


def test_a_zero_baseline_report_speaks_of_absolute_gains(tmp_path):
    """The pre-trained model scored 0 (a format it never produces): tables, captions and axes say gain."""
    points = [BudgetPoint(n, s, 0.0, min(1.0, n / 200 + 0.05 * s), n * 0.5, 2.0) for n in (25, 50, 100, 200) for s in range(2)]
    data = summarize_points(points)
    images = plot_all(tmp_path / "plots", data, None, metric_name="format_valid")
    text = render_html(title="LLM budget", recommendation=recommend(data, None, metric_name="format_valid"),
                       data_summary=data, images=images)
    assert "abs. gain" in text and "Absolute gain over the pre-trained model" in text
    assert "rel. improvement" not in text and "relative improvement" not in text.lower().split("<h2>")[0]
    assert "+0.150" in text  # 25 items: mean of 0.125 and 0.175, in the metric's units, no %


def test_item_axes_label_only_the_measured_sizes():
    # matplotlib's log axis labels minor ticks (3x10^2 4x10^2) that run together
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tunewise.report.plots import items_axis

    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([25, 50, 100, 200, 400], [1, 2, 3, 4, 5])
    items_axis(ax, [25, 50, 100, 200, 400])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["25", "50", "100", "200", "400"]
    assert [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()] == []


def test_forecast_section_says_how_far_to_trust_it():
    """The report's forecast names the calibration backtest's coverage at the horizon it shows."""
    rng = np.random.default_rng(0)
    points = [BudgetPoint(n, s, 0.5, 0.5 + 0.3 * (1 - (n / 25) ** -0.5) + rng.normal(0, 0.005), n / 10, 1.0)
              for n in (25, 50, 100, 200, 400) for s in range(3)]
    page = render_html(title="t", forecast=forecast(points, n_boot=40, seed=0))
    assert "How far to trust it" in page and "backtest" in page
