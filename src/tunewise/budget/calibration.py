"""The forecast's calibration and its evidence: constants from the committed backtest.

``benchmarks/forecast_calibration.py`` backtests :func:`tunewise.budget.forecast.forecast` on
every learning curve measured here (fit on the sizes up to ``largest / h``, predict the largest,
for horizons h = 2, 4, 8) and writes ``benchmarks/results/forecast_calibration.json``. The
constants below are copied from it, and a test (tests/unit/budget/test_forecast_calibration.py)
checks that they still match it, so they cannot drift from the committed table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tunewise.budget.forecast import ForecastResult


@dataclass(frozen=True)
class BacktestRow:
    """How the forecast did in the committed backtest at one horizon (target / largest fitted size)."""

    horizon: int
    curves: int
    coverage80: float
    coverage95: float
    median_error: float  # points: metric x 100
    within2: float  # share of curves predicted within 2 points
    mean_width80: float  # points


@dataclass(frozen=True)
class Calibration:
    """The calibrated interval's constants, from the backtest (split-conformal on its residuals).

    ``spread`` is the forecast's own uncertainty at a size, ``sqrt(sd_boot^2 + noise^2 + (floor *
    doublings)^2)`` on the fitting axis: the bootstrap fits' standard deviation there, the seed noise
    of a k-seed mean, and ``floor`` per doubling beyond the largest measured size (a flat curve can
    still turn upwards: the bootstrap alone then sees no uncertainty at all). The interval at
    ``level`` is the centre ± ``quantiles[level] * spread``; levels between the stored ones are
    interpolated on the normal quantile scale, beyond them scaled by the normal quantiles' ratio.
    Beyond the largest measured size the centre moves by ``bias * spread``; the shipped bias is 0
    (the backtest measured a bias shift and left it out: it raised the median error on the
    tunewise curves, see benchmarks/results/forecast_calibration.md).
    """

    bias: float
    quantiles: dict[float, float]
    floor: float = 0.0  # spread added per doubling beyond the largest measured size (fitting axis)

    def q(self, level: float) -> float:
        from scipy.stats import norm

        levels = sorted(self.quantiles)
        z = norm.ppf(0.5 + np.asarray(levels) / 2)
        zl = float(norm.ppf(0.5 + level / 2))
        qs = np.array([self.quantiles[v] for v in levels])
        if zl <= z[0]:
            return float(qs[0] * zl / z[0])
        if zl >= z[-1]:
            return float(qs[-1] * zl / z[-1])
        return float(np.interp(zl, z, qs))


# From benchmarks/results/forecast_calibration.json (tests/unit/budget/test_forecast_calibration.py
# checks that they match it): the calibration tuned on every backtest curve, and the backtest at each
# horizon, where each curve was judged with the calibration tuned on the OTHER curves only.
CALIBRATION = Calibration(bias=0.0, quantiles={0.5: 0.265, 0.8: 0.4692, 0.9: 0.6517, 0.95: 0.8369}, floor=0.04)
BACKTEST: dict[int, BacktestRow] = {
    2: BacktestRow(2, 28, 0.8571, 0.9286, 1.1126, 0.7143, 4.7131),
    4: BacktestRow(4, 21, 0.8095, 0.9048, 1.9039, 0.5714, 8.6225),
    8: BacktestRow(8, 15, 0.7333, 1.0000, 5.0596, 0.2000, 15.3818),
}
TRUST_P = 0.10  # a horizon is not trusted where the backtest shows its 80% interval under-covering at this significance
SHARP_POINTS = 2.0  # a forecast is "sharp" when its 80% interval stays within this many points either side
FLAT_POINTS = 1.0  # a score within this many points of 0 at every measured size has not started to learn


def stuck_at_zero(result: ForecastResult) -> bool:
    """Whether a higher-is-better score stayed at 0 over every measured size (e.g. exact match while an LLM
    first learns the answer format): no curve fitted to it can say where it starts to rise. A curve flat at
    any other level is forecast as flat (that answer held in the backtest)."""
    return result.higher_is_better and 100 * max(result.observed_mean) < FLAT_POINTS


@dataclass(frozen=True)
class Trust:
    """How far a forecast at ``size`` can be trusted, from the backtest and from its own interval.

    ``trusted``: the horizon (``size`` / largest measured size) is inside the backtested range and
    the backtest's 80% interval held its nominal coverage there. ``sharp``: this forecast's own
    80% interval is within :data:`SHARP_POINTS` of its centre.
    """

    size: int
    horizon: float
    row: BacktestRow | None
    trusted: bool
    sharp: bool
    half_width80: float  # points
    text: str


def holds(row: BacktestRow) -> bool:
    """Whether the backtest is consistent with the 80% interval's nominal coverage at that horizon.

    A one-sided binomial test of "covers 80%" against "covers less": with 17 curves, 12 covered
    (71%) is within the binomial spread (p = 0.24); 11 of 20 (55%) is not (p = 0.01).
    """
    from scipy.stats import binomtest

    covered = round(row.coverage80 * row.curves)
    return bool(binomtest(covered, row.curves, 0.8, alternative="less").pvalue >= TRUST_P)


def row_for(horizon: float) -> BacktestRow | None:
    """The backtest row at the nearest backtested horizon at or beyond ``horizon`` (None: beyond them all)."""
    return next((BACKTEST[h] for h in sorted(BACKTEST) if h >= horizon - 1e-9), None)


def trust(result: ForecastResult, size: int) -> Trust:
    """The backtest's coverage and typical error at ``result``'s horizon for ``size``, and whether to trust it.

    The horizon is ``size`` over the largest measured size; its evidence is the backtest row at
    the nearest backtested horizon at or beyond it (conservative). Beyond the largest backtested
    horizon, where the backtest's 80% interval fell short of :data:`TRUST_COVERAGE`, or for an
    uncalibrated (bootstrap-only) interval, it is not trusted.
    """
    largest = result.observed_sizes[-1]
    horizon = size / largest
    if result.boot:
        mid, low, high = (float(v[0]) for v in replace(result, level=0.8).predict([size]))
        half = 100 * max(high - mid, mid - low)
    else:
        half = math.nan
    sharp = bool(half <= SHARP_POINTS)
    if horizon <= 1:
        return Trust(size, horizon, None, True, sharp, half, f"{size} is inside the measured range (up to {largest}).")
    if stuck_at_zero(result):
        return Trust(size, horizon, None, False, sharp, half,
                     f"the metric stayed at 0 over the measured sizes ({min(result.observed_sizes)} to {largest} items): "
                     f"no fitted curve can say where it starts to rise, so {size} is not forecast; measure larger sizes.")
    row = row_for(horizon)
    if row is None:
        far = f"the {max(BACKTEST)}x the forecast was backtested at" if BACKTEST else "any backtested horizon"
        return Trust(size, horizon, None, False, sharp, half,
                     f"{size} is {horizon:.1f}x the largest measured size ({largest}), beyond {far}: not trusted "
                     "that far; measure larger sizes.")
    trusted = holds(row) and result.calibration is not None
    text = (f"Backtest at {row.horizon}x the largest fitted size ({row.curves} measured curves): the 80% interval "
            f"held the observed value on {100 * row.coverage80:.0f}% of them (95%: {100 * row.coverage95:.0f}%); "
            f"median error {row.median_error:.1f} points, within {SHARP_POINTS:g} points on {100 * row.within2:.0f}%.")
    if not trusted:
        text += " Not trusted this far" + ("" if result.calibration is not None else " (uncalibrated bootstrap interval)") + "."
    return Trust(size, horizon, row, trusted, sharp, half, text)


def sharpness_notes(res: ForecastResult) -> list[str]:
    """Say when the data cannot support a forecast within 2 points, and why."""
    beyond = [s for s in res.sizes if s > res.observed_sizes[-1]]
    if not beyond or not res.boot:
        return []
    far = max(beyond)
    trust = res.trust(far)
    notes = []
    if not trust.trusted:
        notes.append(f"forecast at {far}: {trust.text}")
    if not trust.sharp:
        why = []
        gain = 100 * abs(res.slope)
        if gain >= 1:
            why.append(f"the curve still gains {gain:.1f} points per doubling at {res.observed_sizes[-1]} items")
        if len(res.observed_sizes) <= 3:  # the fewest sizes a forecast accepts
            why.append(f"only {len(res.observed_sizes)} sizes were measured")
        notes.append(f"the 80% interval at {far} is ±{trust.half_width80:.1f} points, wider than the ±{SHARP_POINTS:g} "
                     f"a sharp forecast needs{(': ' + ' and '.join(why)) if why else ''}; measure larger sizes "
                     f"(e.g. {2 * res.observed_sizes[-1]}) to narrow it")
    return notes
