"""Knee stability: the knee recomputed on bootstrap resamples of seeds (or folds), hand-built cases."""

from __future__ import annotations

import math

import pytest

from tunewise.budget.roi import BudgetPoint
from tunewise.budget.stability import knee_stability

SIZES = (100, 200, 400)
# Seed A: r = 0.5, 0.25, 0.3 -> ROI 0.005, 0.00125, 0.00075: 0.00125 <= 0.3 * 0.005, knee at 200.
# Seed B: r = 0.5, 0.5, 0.5  -> ROI 0.005, 0.0025, 0.00125: knee at 400.
# Mean of A and B: r = 0.5, 0.375, 0.4 -> ROI 0.005, 0.001875, 0.001: knee at 400.
# Resampling two seeds draws AA (p = 1/4, knee 200), AB or BA (1/2, knee 400), BB (1/4, knee 400).
A, B = (0.5, 0.25, 0.3), (0.5, 0.5, 0.5)


def _points(curves, before=0.4, **extra):
    return [BudgetPoint(n, seed, before, before * (1 + r), n / 10, 1.0, extra=dict(extra.get("extra", {})))
            for seed, curve in enumerate(curves) for n, r in zip(SIZES, curve)]


def test_knee_moves_between_the_seeds_knees_with_the_right_shares():
    stab = knee_stability(_points([A, B]), resamples=2000, seed=0)
    assert stab.knee == 400 and stab.units == 2 and stab.unit_name == "seeds"
    assert stab.low == 200 and stab.high == 400 and stab.share == 1.0  # the central 80% holds both knees
    assert stab.share_same == pytest.approx(0.75, abs=0.04)  # P(not AA) = 3/4
    assert stab.share_none == 0.0
    assert stab.text == "knee at 400 items (in 100% of 2,000 resamples of the 2 seeds between 200 and 400 items)"
    narrow = knee_stability(_points([A, B]), resamples=2000, level=0.3, seed=0)  # 35th-65th percentile: 400
    assert narrow.low == narrow.high == 400
    assert narrow.text.startswith("knee at 400 items in 7") and "% of 2,000 resamples" in narrow.text


def test_seeded_and_deterministic():
    pts = _points([A, B, (0.5, 0.3, 0.35)])
    assert knee_stability(pts, seed=3) == knee_stability(pts, seed=3)


def test_one_seed_says_the_stability_cannot_be_measured():
    stab = knee_stability(_points([A]))
    assert not stab.measurable and stab.low is None and stab.share is None
    assert stab.text == ("knee at 200 items (one seed per size: how stable the knee is cannot be measured; run at "
                         "least 3 seeds, e.g. --seeds 3)")


def test_no_knee_in_any_resample():
    flat = [(0.1, 0.2, 0.4), (0.11, 0.21, 0.42)]  # ROI constant 0.001: never falls
    stab = knee_stability(_points(flat))
    assert stab.knee is None and stab.low is None and stab.share_none == 1.0
    assert stab.text == "no knee up to 400 items in 100% of 1,000 resamples of the 2 seeds"


def test_folds_are_the_repetition_unit_when_the_points_carry_them():
    pts = [BudgetPoint(n, 0, 0.4, 0.4 * (1 + r), 1.0, 1.0, extra={"fold": k})
           for k, curve in enumerate([A, B]) for n, r in zip(SIZES, curve)]
    stab = knee_stability(pts)
    assert stab.units == 2 and stab.unit_name == "folds" and stab.low == 200 and stab.high == 400


def test_a_size_some_seeds_have_not_reached_keeps_its_measured_mean():
    # Seed B stopped before 400 items: resamples drawing only B fall back to A's 400-item point.
    pts = [p for p in _points([A, B]) if not (p.seed == 1 and p.size == 400)]
    stab = knee_stability(pts, resamples=500)
    assert stab.knee is not None and all(math.isfinite(x) for x in (stab.share, stab.share_same))
    assert knee_stability([]) is None


def test_a_k_fold_sweep_names_its_repetitions_folds():
    # tunewise.folds runs fold s as seed s: the caller names the unit
    stab = knee_stability(_points([A, B]), unit_name="folds")
    assert stab.unit_name == "folds" and "resamples of the 2 folds" in stab.text
