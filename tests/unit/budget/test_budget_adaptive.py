"""Cheaper sweeps: the adaptive stop rule, the cost multiple, the report after every point,
and the time curve taken from the largest size's run (issue 17 item 3)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tunewise.budget.adaptive import adaptive_stop, cost_multiple, full_run_cost
from tunewise.budget.results import sweep_cost
from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError

SIZES = [10, 20, 40, 80, 160]
# Relative improvement over a 0.5 "before": +20% at 10 items, then almost flat. ROI per item
# 0.02, 0.0105, 0.0055, 0.0028: the ROI has fallen by 70% from its peak (0.02) at 40 items
# (0.0055 <= 0.006), so the knee is at 40 with 80 and 160 measured past it.
AFTER = {10: 0.60, 20: 0.605, 40: 0.61, 80: 0.612, 160: 0.613}


def _points(seeds, after=AFTER, sizes=SIZES, jitter=0.001):
    return [BudgetPoint(s, k, 0.5, after[s] + jitter * k, 10.0 * s / 160, 2.0) for k in seeds for s in sizes]


def test_stop_once_the_knee_holds_with_any_seed_left_out():
    decision = adaptive_stop(_points([0, 1]), SIZES)
    assert decision.stop and decision.knee_size == 40 and decision.seeds == 2
    assert "knee at 40 items" in decision.reason and "one seed left out" in decision.reason


def test_one_seed_is_not_enough():
    decision = adaptive_stop(_points([0]), SIZES)
    assert not decision.stop and "needs 2" in decision.reason


def test_a_missing_size_waits():
    decision = adaptive_stop(_points([0, 1], sizes=SIZES[:-1]), SIZES)
    assert not decision.stop and "[160]" in decision.reason


def test_no_knee_before_the_largest_size_goes_on():
    linear = {s: 0.5 + 0.001 * s for s in SIZES}  # ROI constant: no knee at all
    decision = adaptive_stop(_points([0, 1], after=linear), SIZES)
    assert not decision.stop and decision.knee_size is None and "knee not confirmed" in decision.reason


def test_a_knee_that_one_seed_moves_goes_on():
    # seed 1 alone keeps paying off up to 80 items (its knee is later): the mean's knee is not confirmed
    late = {10: 0.52, 20: 0.54, 40: 0.58, 80: 0.66, 160: 0.665}
    pts = _points([0]) + [p for p in _points([1], after=late)]
    decision = adaptive_stop(pts, SIZES)
    assert not decision.stop and "moves when one seed is left out" in decision.reason


def test_one_seed_at_the_largest_size_stays_when_that_seed_is_left_out():
    # largest_seeds=1: only seed 0 measured 160 items; leaving seed 0 out must not drop the size
    pts = [p for p in _points([0, 1]) if not (p.size == 160 and p.seed == 1)]
    decision = adaptive_stop(pts, SIZES)
    assert decision.stop and decision.knee_size == 40


def test_stop_width_reads_the_forecast_interval_at_the_largest_size():
    linear = {s: 0.5 + 0.001 * s for s in SIZES}
    fc = SimpleNamespace(sizes=[*SIZES, 320], low=[0.0] * 4 + [0.5, 0.4], high=[1.0] * 4 + [0.62, 0.9])  # 0.12 at 160
    stop = adaptive_stop(_points([0, 1], after=linear), SIZES, stop_width=0.15, forecast=fc)
    assert stop.stop and stop.width == pytest.approx(0.12) and "--stop-width 0.15" in stop.reason
    wide = adaptive_stop(_points([0, 1], after=linear), SIZES, stop_width=0.05, forecast=fc)
    assert not wide.stop and "> --stop-width 0.05" in wide.reason
    assert not adaptive_stop(_points([0, 1], after=linear), SIZES, stop_width=0.15).stop  # no forecast yet


@pytest.mark.parametrize("bad", [0, 1.5, -0.1])
def test_bad_stop_width_names_the_option(bad):
    with pytest.raises(TunewiseError, match="--stop-width"):
        adaptive_stop(_points([0, 1]), SIZES, stop_width=bad)


def test_full_run_cost_is_measured_at_the_full_size_else_scaled_by_size():
    pts = _points([0, 1])  # 160 items: 10 s training + 2 s evaluation per run
    seconds, how = full_run_cost(pts, 160)
    assert seconds == pytest.approx(12.0) and how.startswith("measured")
    seconds, how = full_run_cost(pts, 320)  # twice the items: twice the training, the same evaluation
    assert seconds == pytest.approx(22.0) and how.startswith("estimated from 160")
    assert full_run_cost([], 160) == (None, "no finished points")
    assert cost_multiple(36.0, 12.0) == pytest.approx(3.0) and cost_multiple(1.0, None) is None


def test_sweep_cost_counts_a_data_point_taken_from_the_time_run_once():
    data = [BudgetPoint(10, 0, 0.5, 0.6, 1.0, 2.0), BudgetPoint(20, 0, 0.5, 0.6, 4.0, 2.0, extra={"from_time_curve": True})]
    time = [BudgetPoint(20, 0, 0.5, 0.6, s, 2.0, epoch=e, kind="time") for e, s in ((1.0, 2.0), (2.0, 4.0))]
    cost = sweep_cost(data, time, None, n_available=20)
    # training: 1 s (10 items) + 4 s (the time run, which is also the 20-item point)
    assert cost["train_seconds"] == 5.0 and cost["runs"] == 2 and cost["data_points_from_time_run"] == 1
    assert cost["eval_seconds"] == 6.0  # one evaluation at 10 items, two on the time curve
    assert cost["full_run_seconds"] == 6.0 and cost["full_run_multiple"] == pytest.approx(11 / 6, abs=0.01)


# -- the sweep itself, on the tiny random model of tests/conftest.py ---------------------------

GRID = [6, 12, 24, 48]  # make_pairs(60) with eval_fraction 0.2 leaves 48 training pairs


@pytest.fixture(scope="module")
def config(tiny_st_model, tmp_path_factory) -> dict:
    from conftest import make_pairs

    path = tmp_path_factory.mktemp("adaptive-data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(60)), encoding="utf-8")
    return {"model": tiny_st_model, "data": {"train": str(path)}, "seed": 3,
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}}


@pytest.fixture(scope="module")
def cheap(config, tmp_path_factory):
    """One seed at the full size, and that run as the time curve (what the demo does)."""
    from tunewise.budget import run_budget

    out = tmp_path_factory.mktemp("cheap") / "sweep"
    return run_budget(config, sizes=GRID, seeds=2, eval_steps=3, largest_seeds=1, time_from_largest=True,
                      output_dir=out)


def test_time_curve_from_the_largest_run_is_also_its_data_point(cheap):
    data = [p for p in cheap.points if p.kind == "data"]
    time = [p for p in cheap.points if p.kind == "time"]
    assert sorted((p.size, p.seed) for p in data) == [(s, k) for s in GRID[:-1] for k in range(2)] + [(48, 0)]
    shared = next(p for p in data if p.size == 48)
    assert shared.extra["from_time_curve"] and shared.metric_after == time[-1].metric_after
    assert [p.epoch for p in time] == [0.5, 1.0] and time[-1].extra["final"]  # 6 steps per epoch, every 3
    assert cheap.cost["runs"] == 7 and cheap.cost["full_run"].startswith("measured at 48")
    assert cheap.cost["full_run_multiple"] > 1
    summary = json.loads(cheap.summary_path.read_text(encoding="utf-8"))
    assert summary["interim"] is False and summary["cost"]["full_run_multiple"] == cheap.cost["full_run_multiple"]
    md = (cheap.output_dir / "summary.md").read_text(encoding="utf-8")
    assert cheap.recommendation.text in md and "x one full run" in md


def test_bad_combinations_name_the_option(config, tmp_path):
    from tunewise.budget import run_budget

    with pytest.raises(TunewiseError, match="--epochs: the time curve reuses"):
        run_budget(config, sizes=GRID, epochs=3, time_from_largest=True, output_dir=tmp_path / "a")
    with pytest.raises(TunewiseError, match="--stop-width: only used with --adaptive"):
        run_budget(config, sizes=GRID, stop_width=0.02, output_dir=tmp_path / "b")
    with pytest.raises(TunewiseError, match="--largest-seeds"):
        run_budget(config, sizes=GRID, largest_seeds=0, output_dir=tmp_path / "c")


def test_a_sweep_stopped_after_its_first_point_leaves_a_valid_report(config, tmp_path, monkeypatch):
    import tunewise.budget.sweep as sweep
    from tunewise.budget import run_budget

    real, calls = sweep.run_job, []

    def stop_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between points
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "run_job", stop_second)
    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_budget(config, sizes=GRID, seeds=1, time_sweep=False, output_dir=out)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["interim"] is True and [r["size"] for r in summary["data"]] == [6]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.rstrip().endswith("</html>") and "interim report" in html
    assert not list(out.glob("*.tmp*"))  # written atomically: no temporary file left beside it


def test_adaptive_stop_skips_the_remaining_seeds_and_says_so(config, tmp_path, monkeypatch):
    import tunewise.budget.adaptive as adaptive
    from tunewise.budget import run_budget
    from tunewise.budget.adaptive import StopDecision

    seen = []

    def rule(points, sizes, **kwargs):
        seen.append(len(points))
        return StopDecision(True, "knee at 12 items (test)", 12, None, 1)

    monkeypatch.setattr(adaptive, "adaptive_stop", rule)
    result = run_budget(config, sizes=GRID, seeds=3, time_sweep=False, adaptive=True, output_dir=tmp_path / "ad")
    assert seen == [4]  # judged once, after the first seed's 4 points
    assert result.ran == 4 and {p.seed for p in result.points} == {0}
    assert result.adaptive["stopped"] and len(result.adaptive["skipped"]) == 8
    assert "6 items, seed 1" in result.adaptive["skipped"]
    html = result.report_path.read_text(encoding="utf-8")
    assert "adaptive: stopped after 1 seeds because the knee at 12 items (test); skipped 8 runs" in html
