"""Learning-curve forecast: the metric at sizes not yet labeled, and the labels for a target.

Fits saturating curves to a data sweep (``metric(N)`` at a few sizes, several seeds each),
scores each form on sizes it did not see (leave-one-size-out), and puts a bootstrap
interval around every answer. Forms (fitted on ``x = N / N_max`` for conditioning;
reported ``params`` are in items):

* ``pow3``: ``m(N) = a - b * N^(-c)``, inverse power law (Frey & Fisher 1999; Figueroa et
  al. 2012; Hestness et al. 2017);
* ``exp3``: ``m(N) = a - b * exp(-c * N)``, exponential saturation (Domhan et al. 2015);
* ``logistic3``: ``m(N) = a / (1 + exp(-k * (ln N - d)))``, logistic in ``log N``: an
  S-curve for tasks that need a minimum of data before they improve.
``a`` is the asymptote: a target above it is "not reachable on this curve". The forms rise
to an asymptote in [0, 1] (bounds ``0 <= a <= 1``, ``b >= 0``); a lower-is-better metric (a
loss, WER) is fitted mirrored (:class:`_Axis`) and reported in its own units.

The interval is calibrated on a backtest of real learning curves
(``benchmarks/forecast_calibration.py``: fit on the sizes up to a quarter of the largest,
predict the largest): split-conformal scaling of the bootstrap's spread (:class:`Calibration`).
:meth:`ForecastResult.trust` quotes that backtest at the horizon asked for, and the forecast's
``warnings`` say when the data cannot support a sharp answer (few sizes, a curve still steep).

References:
    Frey & Fisher, "Modeling decision tree performance with the power law", AISTATS 1999.
    Figueroa et al., "Predicting sample size required for classification performance",
    BMC Med. Inform. Decis. Mak. 12:8, 2012 (inverse power law with bootstrap intervals).
    Hestness et al., "Deep learning scaling is predictable, empirically", arXiv:1712.00409.
    Domhan, Springenberg & Hutter, "Speeding up automatic hyperparameter optimization of deep
    neural networks by extrapolation of learning curves", IJCAI 2015.
    Davidson & Flachaire, "The wild bootstrap, tamed at last", J. Econometrics 146, 2008
    (Rademacher signs on HC3-scaled residuals).
    Lei, G'Sell, Rinaldo, Tibshirani & Wasserman, "Distribution-free predictive inference for
    regression", JASA 113, 2018 (split conformal; locally scaled residuals).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from tunewise.budget import calibration as _cal
from tunewise.budget.calibration import Calibration, Trust
from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError

MIN_SIZES = 3
MAX_FACTOR = 10.0  # further than 10x the largest measured size a forecast is a guess


def _logistic3(x, a, k, d):
    with np.errstate(over="ignore"):  # exp overflow -> inf -> m = 0, the right limit
        return a / (1.0 + np.exp(-k * (np.log(x) - d)))


# Inverses: the smallest x with m(x) >= t; inf when t is at or above the asymptote a.
_INVERSES = {
    "pow3": lambda t, a, b, c: math.inf if t >= a else (b / (a - t)) ** (1 / c) if b > 0 else 0.0,
    "exp3": lambda t, a, b, c: (math.inf if t >= a else 0.0 if a - b >= t
                                else -math.log((a - t) / b) / c),
    "logistic3": lambda t, a, k, d: (math.inf if t >= a else 0.0 if t <= 0
                                     else math.exp(d - math.log(a / t - 1.0) / k)),
}


class CurveForm(NamedTuple):
    """A learning-curve family on ``x = N / scale``; ``to_items`` maps params to N-scale."""

    formula: str
    func: Callable[..., np.ndarray]
    bounds: tuple[tuple[float, ...], tuple[float, ...]]
    inverse: Callable[..., float]
    param_names: tuple[str, ...]
    to_items: Callable[[Sequence[float], float], tuple[float, ...]]


FORMS: dict[str, CurveForm] = {
    "pow3": CurveForm("a - b * N^(-c)", lambda x, a, b, c: a - b * np.power(x, -c),
                      ((0, 0, 1e-3), (1, np.inf, 3)), _INVERSES["pow3"], ("a", "b", "c"),
                      lambda p, s: (p[0], p[1] * s ** p[2], p[2])),
    "exp3": CurveForm("a - b * exp(-c * N)", lambda x, a, b, c: a - b * np.exp(-c * x),
                      ((0, 0, 1e-3), (1, 2, 1e3)), _INVERSES["exp3"], ("a", "b", "c"),
                      lambda p, s: (p[0], p[1], p[2] / s)),
    "logistic3": CurveForm("a / (1 + exp(-k * (ln N - d)))", _logistic3,
                           ((0, 1e-2, -20), (1, 20, 20)), _INVERSES["logistic3"],
                           ("a", "k", "d"), lambda p, s: (p[0], p[1], p[2] + math.log(s))),
}


def _starts(x: np.ndarray, y: np.ndarray, form: str) -> list[tuple[float, ...]]:
    """Starts near the data: a just above max(y), a few rates, through the smallest size."""
    x0, y0 = x.min(), max(float(y[x == x.min()].mean()), 1e-3)
    top, spread = float(np.max(y)), float(np.ptp(y))
    out = []
    for a in sorted({min(top + 0.02, 0.999), min(top + spread + 0.01, 0.999)}):
        gap = max(a - y0, 1e-6)
        if form == "pow3":
            out += [(a, gap * x0**c, c) for c in (0.3, 0.7, 1.2)]
        elif form == "exp3":
            out += [(a, min(gap * math.exp(c * x0), 1.9), c) for c in (2.0, 8.0, 30.0)]
        else:
            out += [(a, k, math.log(x0) + math.log(max(a / y0 - 1, 1e-6)) / k) for k in (0.5, 1, 2)]
    return out


@dataclass(frozen=True)
class CurveFit:
    """One fitted curve; ``params`` are on the ``x = N / scale`` axis."""

    form: str
    params: tuple[float, ...]
    scale: float
    sse: float

    def predict(self, sizes) -> np.ndarray:
        return FORMS[self.form].func(np.asarray(sizes, dtype=float) / self.scale, *self.params)

    def size_for(self, target: float) -> float:
        """Smallest N with ``m(N) >= target``; ``inf`` when the asymptote is below it."""
        try:
            return FORMS[self.form].inverse(target, *self.params) * self.scale
        except OverflowError:  # reachable only beyond any float: treat as never
            return math.inf

    @property
    def params_items(self) -> dict[str, float]:
        spec = FORMS[self.form]
        return dict(zip(spec.param_names, map(float, spec.to_items(self.params, self.scale))))


def fit_curve(sizes, metrics, form: str, scale=None, starts=None) -> CurveFit | None:
    """Bounded least squares (``curve_fit``, "trf"); several starts for the flat valleys."""
    n, y = np.asarray(sizes, dtype=float), np.asarray(metrics, dtype=float)
    scale = float(scale or n.max())
    x, spec = n / scale, FORMS[form]
    lo, hi = (np.asarray(b, dtype=float) for b in spec.bounds)
    best: CurveFit | None = None
    for p0 in starts or _starts(x, y, form):
        p0 = np.clip(p0, lo + 1e-9, np.where(np.isinf(hi), 1e12, hi - 1e-9))  # "trf": inside
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
            try:
                p, _ = curve_fit(spec.func, x, y, p0, bounds=(lo, hi), method="trf", maxfev=4000)
            except (RuntimeError, ValueError):
                continue
        sse = float(np.sum((spec.func(x, *p) - y) ** 2))
        if math.isfinite(sse) and (best is None or sse < best.sse):
            best = CurveFit(form, tuple(float(v) for v in p), scale, sse)
    return best


def _arrays(points: Sequence[BudgetPoint]) -> tuple[np.ndarray, np.ndarray]:
    pts = [p for p in points if p.kind == "data" and math.isfinite(p.metric_after)]
    return np.array([p.size for p in pts], float), np.array([p.metric_after for p in pts], float)


def _require_sizes(n: np.ndarray, what: str = "a forecast") -> list[int]:
    distinct = sorted({int(v) for v in n})
    if len(distinct) < MIN_SIZES:
        raise TunewiseError(
            f"--sizes: {what} needs at least {MIN_SIZES} distinct grid sizes with finished "
            f"points; got {len(distinct)} ({', '.join(map(str, distinct)) or 'none'}). Add "
            "sizes, e.g. --sizes 25,50,100,200"
        )
    return distinct


def select_form(n: np.ndarray, y: np.ndarray, forms: Sequence[str]):
    """Score forms by leave-one-size-out RMSE; also return model-averaging weights.

    Each fold fits the other sizes (from the full-data optimum, 5x cheaper than multi-start)
    and predicts the mean at the size left out. Best: lowest RMSE (ties: in-sample error,
    then order of ``forms``). Weights: ``w_f ∝ 1 / RMSE_f^2``, 0 for a form that never fits.

    Returns:
        ``(best, rmse_by_form, weights_by_form, full_data_fit_by_form)``.
    """
    full = {f: fit_curve(n, y, f) for f in forms}
    scores: dict[str, float] = {}
    for name in forms:
        errors = []
        for size in np.unique(n):
            keep = n != size
            fit = (full[name] and fit_curve(n[keep], y[keep], name, n.max(), [full[name].params])
                   or fit_curve(n[keep], y[keep], name, scale=n.max()))
            errors.append(math.inf if fit is None else
                          float(fit.predict([size])[0] - y[~keep].mean()) ** 2)
        scores[name] = math.sqrt(float(np.mean(errors)))
    sse = {f: full[f].sse if full[f] else math.inf for f in forms}
    best = min(forms, key=lambda f: (scores[f], sse[f], forms.index(f)))
    # The 1e-6 floor stops a perfect held-out score from taking all the weight.
    raw = {f: max(v, 1e-6) ** -2 if math.isfinite(v) and full[f] else 0 for f, v in scores.items()}
    total = sum(raw.values())
    weights = {f: w / total for f, w in raw.items()} if total else {best: 1.0}
    return best, scores, weights, full


def _leverage(fit: CurveFit, n: np.ndarray) -> np.ndarray:
    """Hat-matrix diagonal ``h = diag(J (J'J)^+ J')``, J by forward differences at the fit."""
    p, base = np.asarray(fit.params), fit.predict(n)
    step = np.maximum(np.abs(p), 1e-3) * 1e-6
    jac = np.stack([(replace(fit, params=tuple(p + step[k] * np.eye(len(p))[k])).predict(n)
                     - base) / step[k] for k in range(len(p))], axis=1)
    return np.clip(np.einsum("ij,ji->i", jac, np.linalg.pinv(jac.T @ jac) @ jac.T), 0, 0.95)


def _bootstrap(n, y, fits, weights, n_boot: int, rng, resample: str = "wild") -> list[CurveFit]:
    """Refit on ``n_boot`` resamples, each with a form drawn from the averaging ``weights``.

    ``"wild"`` keeps every (size, seed) point and flips the sign of its residual from the
    drawn form's fit at random, the residual scaled by ``1 / (1 - h_i)`` (HC3, ``h_i`` its
    leverage): seed noise stays where it was measured and the end sizes that steer an
    extrapolation keep their full spread. ``"seeds"`` redraws each size's seeds. Drawing the
    form per resample puts model-selection uncertainty in the interval. Synthetic check (7
    sizes x 3 seeds, noise sd 0.01): the 95% interval held the truth at 10x the data in
    64-92% of draws ("seeds": 42-83%), so read it as a lower bound on the uncertainty.
    """
    sizes, names = np.unique(n), [f for f, w in weights.items() if w > 0]
    groups, probs = [y[n == s] for s in sizes], np.array([weights[f] for f in names])
    scaled = {f: (y - fits[f].predict(n)) / (1 - _leverage(fits[f], n)) for f in names}
    out = []
    for _ in range(n_boot):
        full = fits[names[rng.choice(len(names), p=probs / probs.sum())]]
        if resample == "wild":
            bn, by = n, full.predict(n) + scaled[full.form] * rng.choice([-1.0, 1.0], len(y))
        else:
            bn = np.repeat(sizes, [len(g) for g in groups])
            by = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
        # Resamples sit near the full-data optimum, so one start from it is enough.
        boot = fit_curve(bn, by, full.form, scale=full.scale, starts=[full.params])
        if boot is not None:
            out.append(boot)
    return out


class _Axis(NamedTuple):
    """Metric <-> fitting axis: the forms rise to an asymptote in [0, 1].

    A higher-is-better metric in [0, 1] is fitted as it is; a lower-is-better one (a loss, WER)
    is mirrored, ``z = (top - y) / top``, so that its fall becomes a rise. ``top`` is 1 for a
    metric within [0, 1], else twice its largest measured value (a loss above 1).
    """

    higher: bool
    top: float

    def to_fit(self, y):
        y = np.asarray(y, dtype=float)
        return y / self.top if self.higher else (self.top - y) / self.top

    def to_metric(self, z):
        z = np.asarray(z, dtype=float)
        return z * self.top if self.higher else self.top - z * self.top


def _axis(y: np.ndarray, higher: bool) -> _Axis:
    largest = float(np.max(np.abs(y))) if y.size else 1.0
    return _Axis(bool(higher), 1.0 if largest <= 1 else 2.0 * largest)


@dataclass
class ForecastResult:
    """Forecast at ``sizes``: ``mean`` (bagged median; calibrated: moved by the backtest's bias beyond
    the measured range), ``low``/``high`` at ``level``.

    With ``interval="calibrated"`` (the default) the interval is that of the mean metric over as
    many seeds as were measured, scaled from the bootstrap fits' spread and the seed noise by the
    backtest of ``benchmarks/forecast_calibration.py`` (:class:`Calibration`), which also moves
    the centre beyond the measured range. ``interval="bootstrap"``: percentiles of the bootstrap
    fits alone.
    """

    form: str
    formula: str
    params: dict[str, float]
    cv_rmse: dict[str, float]
    weights: dict[str, float]
    sizes: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    level: float
    observed_sizes: list[int]
    observed_mean: list[float]
    observed_std: list[float]
    warnings: list[str] = field(default_factory=list)
    fit: CurveFit | None = field(default=None, repr=False)
    boot: list[CurveFit] = field(default_factory=list, repr=False)
    higher_is_better: bool = True
    axis_top: float = 1.0
    slope: float = 0.0  # fitted gain over the last measured doubling (metric units; > 0: improving)
    noise_sd: float = 0.0  # seed noise of a mean over the measured seeds (metric units)
    calibration: Calibration | None = None  # None: bootstrap-only interval
    seed: int = 0  # of the bootstrap

    @property
    def interval(self) -> str:
        return "bootstrap" if self.calibration is None else "calibrated"

    @property
    def _axis(self) -> _Axis:
        return _Axis(self.higher_is_better, self.axis_top)

    def draws(self, sizes) -> np.ndarray:  # (n_boot, len(sizes)), metric units
        return self._axis.to_metric(np.stack([b.predict(sizes) for b in self.boot]))

    def spread(self, sizes, floor: float | None = None) -> np.ndarray:
        """The scale the calibrated interval multiplies, on the fitting axis (:class:`Calibration`).

        ``floor``: per doubling beyond the largest measured size; default the calibration's (0 without one).
        """
        z = np.stack([b.predict(sizes) for b in self.boot])
        if floor is None:
            floor = self.calibration.floor if self.calibration is not None else 0.0
        doublings = np.log2(np.maximum(np.asarray(sizes, dtype=float) / self.observed_sizes[-1], 1.0))
        return np.sqrt(np.std(z, axis=0) ** 2 + (self.noise_sd / self.axis_top) ** 2 + (floor * doublings) ** 2)

    def predict(self, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(center, low, high)`` at ``sizes``; the interval at ``level``.

        Bootstrap: the median and percentiles of the bootstrap fits (mixing forms). Calibrated:
        see :class:`Calibration`; the bounds stay inside the metric's range.
        """
        axis = self._axis
        if not self.boot:
            return axis.to_metric(self.fit.predict(sizes)), *np.full((2, len(sizes)), np.nan)
        if self.calibration is None:
            tail = 100 * (1 - self.level) / 2
            low, mid, high = np.percentile(self.draws(sizes), [tail, 50, 100 - tail], axis=0)
            return mid, low, high  # metric units: ordered in either direction
        z = np.stack([b.predict(sizes) for b in self.boot])  # (n_boot, len(sizes)), fitting axis
        spread = self.spread(sizes)
        beyond = np.asarray(sizes, dtype=float) > self.observed_sizes[-1]
        mid = np.median(z, axis=0) + self.calibration.bias * spread * beyond
        half = self.calibration.q(self.level) * spread
        low, high = np.clip(mid - half, 0, 1), np.clip(mid + half, 0, 1)
        if not self.higher_is_better:
            low, high = high, low  # mirrored: the top of z is the bottom of the metric
        return axis.to_metric(mid), axis.to_metric(low), axis.to_metric(high)

    def trust(self, size: int) -> Trust:
        """The backtest's coverage and typical error at this forecast's horizon, and whether to trust it
        (:func:`tunewise.budget.calibration.trust`)."""
        return _cal.trust(self, size)


def _slope(fits: dict[str, CurveFit | None], weights: dict[str, float], largest: float) -> float:
    """Gain of the model-averaged fit over the last measured doubling (fitting axis)."""
    total = 0.0
    for name, w in weights.items():
        if w > 0 and fits.get(name) is not None:
            a, b = fits[name].predict([largest / 2, largest])
            total += w * float(b - a)
    return total


def _noise_sd(n: np.ndarray, y: np.ndarray) -> float:
    """Pooled within-size standard deviation over ``sqrt(k)``: the seed noise of a k-seed mean."""
    sizes = np.unique(n)
    dev = np.concatenate([y[n == s] - y[n == s].mean() for s in sizes])
    dof = dev.size - sizes.size
    if dof < 1:
        return 0.0
    k = max(int((n == sizes[-1]).sum()), 1)
    return math.sqrt(float(np.sum(dev**2)) / dof / k)


def forecast(
    points: Sequence[BudgetPoint],
    sizes: Sequence[int] | None = None,
    *,
    forms: Sequence[str] | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    max_factor: float = MAX_FACTOR,
    resample: str = "wild",
    interval: str = "calibrated",
    higher_is_better: bool | None = None,
) -> ForecastResult:
    """Fit a learning curve to a data sweep and forecast the metric at ``sizes``.

    Args:
        points: finished data-sweep points (``metric_after`` is the curve's y).
        sizes: sizes to forecast; default the measured ones and 2x, 4x, 8x the largest (the
            horizons the backtest checked).
        forms: candidate forms (keys of :data:`FORMS`); default all.
        n_boot: bootstrap resamples (0: no interval, the best form's fit alone).
        level: two-sided interval level.
        seed: seed of the bootstrap.
        max_factor: refuse sizes beyond this multiple of the largest measured size.
        resample: "wild" or "seeds" (see :func:`_bootstrap`).
        interval: "calibrated" (the bootstrap's spread and the seed noise, scaled and centred by
            the backtest: :class:`Calibration`) or "bootstrap" (percentiles of the bootstrap fits).
        higher_is_better: the metric's direction; None: the points' own
            (``BudgetPoint.higher_is_better``). A falling metric is fitted mirrored.

    Raises:
        TunewiseError: fewer than 3 distinct sizes (``--sizes``), sizes beyond ``max_factor``
            (``--forecast-sizes``), an unknown form, level, interval or resampling scheme.
    """
    n, y = _arrays(points)
    measured = _require_sizes(n)
    forms = list(forms or FORMS)
    if unknown := [f for f in forms if f not in FORMS]:
        raise TunewiseError(f"--curve: unknown form(s) {unknown}; choose from {list(FORMS)}")
    if not 0 < level < 1:
        raise TunewiseError(f"--level: must be in (0, 1), e.g. 0.95; got {level}")
    if resample not in ("wild", "seeds"):
        raise TunewiseError(f"--resample: choose 'wild' or 'seeds'; got {resample!r}")
    if interval not in ("calibrated", "bootstrap"):
        raise TunewiseError(f"--interval: choose 'calibrated' or 'bootstrap'; got {interval!r}")
    largest = measured[-1]
    sizes = [int(s) for s in (sizes if sizes is not None else
                              [*measured, 2 * largest, 4 * largest, 8 * largest])]
    if bad := [s for s in sizes if s < 1 or s > max_factor * largest]:
        raise TunewiseError(
            f"--forecast-sizes: {bad} outside 1..{int(max_factor * largest)} ({max_factor:g}x "
            f"the largest measured size, {largest}); measure larger sizes to forecast further"
        )
    if higher_is_better is None:
        higher_is_better = all(getattr(p, "higher_is_better", True) for p in points if p.kind == "data")
    axis = _axis(y, higher_is_better)
    z = axis.to_fit(y)
    name, scores, weights, fits = select_form(n, z, forms)
    if (fit := fits[name]) is None:
        direction = "grows" if higher_is_better else "falls"
        raise TunewiseError(f"--sizes: no learning curve fits these points; check that the metric {direction} "
                            "with the number of items, or add sizes and seeds")
    boot = _bootstrap(n, z, fits, weights, n_boot, np.random.default_rng(seed), resample)
    params = fit.params_items
    params[FORMS[name].param_names[0]] = float(axis.to_metric(params[FORMS[name].param_names[0]]))
    result = ForecastResult(
        name, FORMS[name].formula, params, scores, weights, sizes, [], [], [], level,
        measured, [float(y[n == s].mean()) for s in measured],
        [float(np.std(y[n == s], ddof=1)) if (n == s).sum() > 1 else 0.0 for s in measured],
        fit=fit, boot=boot, higher_is_better=bool(higher_is_better), axis_top=axis.top,
        slope=_slope(fits, weights, largest) * axis.top, noise_sd=_noise_sd(n, y),
        calibration=_cal.CALIBRATION if interval == "calibrated" else None, seed=seed,
    )
    result.mean, result.low, result.high = (v.tolist() for v in result.predict(sizes))
    if fit.params[0] > 0.995:
        result.warnings.append(
            "the fitted asymptote is at the metric's ceiling (1.0): the curve has not started "
            "to saturate in the measured range, so forecasts far out are optimistic" if higher_is_better else
            "the fitted asymptote is at the metric's floor (0): the curve has not started to level off in the "
            "measured range, so forecasts far out are optimistic"
        )
    result.warnings.extend(_cal.sharpness_notes(result))
    return result


@dataclass(frozen=True)
class TargetEstimate:
    """Labels needed to reach ``target``; ``size`` is None when it is not reachable."""

    target: float
    reachable: bool
    size: float | None
    low: float | None
    high: float | None
    asymptote: float
    beyond_range: bool
    message: str


def labels_for_target(
    source: ForecastResult | Sequence[BudgetPoint], target: float, **forecast_kwargs
) -> TargetEstimate:
    """How many labeled items the fitted curves need to reach ``target``.

    Inverts each curve (``pow3``: ``N = (b / (a - t))^(1/c)``; ``exp3``:
    ``N = -ln((a - t) / b) / c``; ``logistic3``: ``N = exp(d - ln(a/t - 1) / k)``); at or
    above the asymptote ``a`` it needs infinitely many. The estimate is the median over the
    bootstrap fits (as in :meth:`ForecastResult.predict`), the interval their percentiles;
    "not reachable on this curve" when the median is infinite.

    Args:
        source: a :class:`ForecastResult`, or data-sweep points to fit one from.
        target: metric value to reach, in [0, 1] (a lower-is-better metric: the value to get
            down to; a loss above 1 may go up to twice its largest measured value).
        **forecast_kwargs: passed to :func:`forecast` when ``source`` is points.

    Raises:
        TunewiseError: naming ``--target`` when it is outside the metric's range.
    """
    res = source if isinstance(source, ForecastResult) else forecast(source, **forecast_kwargs)
    top = res.axis_top
    if not (isinstance(target, (int, float)) and 0 <= target <= top):
        raise TunewiseError(f"--target: must be a metric value in [0, {top:g}]; got {target}")
    # On the fitting axis the curve rises, so "reach the target" is z >= z_target in both directions.
    z_target = float(res._axis.to_fit(target))
    fits, tail = res.boot or [res.fit], (1 - res.level) / 2
    draws = np.array([f.size_for(z_target) for f in fits])
    # "inverted_cdf" picks actual draws, so infinite (unreachable) draws stay infinite.
    need, low, high = (float(np.quantile(draws, q, method="inverted_cdf"))
                       for q in (0.5, tail, 1 - tail))
    asymptote = float(res._axis.to_metric(np.median([f.params[0] for f in fits])))
    if not math.isfinite(need):
        share = 100 * float(np.mean(np.isfinite(draws)))
        msg = (f"{target:g} is not reachable on this curve: the fitted asymptote is {asymptote:.3f}"
               f" ({res.form}: {res.formula}); {share:.0f}% of bootstrap fits reach it.")
        return TargetEstimate(target, False, None, None, None, asymptote, True, msg)
    need, low = max(need, 1.0), max(low, 1.0)
    beyond = need > MAX_FACTOR * (largest := res.observed_sizes[-1])
    upper = f"{high:,.0f}" if math.isfinite(high) else "not reachable"
    msg = (f"About {need:,.0f} labeled items ({100 * res.level:.0f}% interval {low:,.0f} to "
           f"{upper}) to reach {target:g}")
    if need <= min(res.observed_sizes):
        msg += f"; already reached at the smallest measured size ({min(res.observed_sizes)})"
    if beyond:
        msg += (f"; beyond {MAX_FACTOR:g}x the largest measured size ({largest}), so treat it "
                "as a rough extrapolation")
    return TargetEstimate(target, True, need, low, high, asymptote, beyond, msg + ".")


@dataclass(frozen=True)
class ValidationResult:
    """A forecast from the small sizes only, checked against the largest measured size."""

    fit_sizes: list[int]
    size: int
    predicted: float
    low: float
    high: float
    observed: float
    observed_std: float
    inside: bool
    abs_error: float
    form: str
    level: float
    text: str


def validate_forecast(
    points: Sequence[BudgetPoint], fit_fraction: float = 0.25, **forecast_kwargs
) -> ValidationResult:
    """Fit only on sizes ``<= fit_fraction * largest``; predict the largest measured size.

    The curve never sees the point it is judged on, and the extrapolation (4x by default)
    is like the ones users ask for. The observed value is a mean over ``k`` seeds, so it is
    checked against a prediction interval: every bootstrap draw gets seed noise
    ``N(0, s^2 / k)``, ``s`` the pooled within-size standard deviation of the fitted points.
    ``forecast_kwargs`` (``forms``, ``n_boot``, ``level``, ``seed``, ``resample``) go to
    :func:`forecast`.

    Raises:
        TunewiseError: ``--fit-fraction`` outside (0, 1), or fewer than 3 distinct sizes at
            or below the cut (``--sizes``).
    """
    if not 0 < fit_fraction < 1:
        raise TunewiseError(f"--fit-fraction: must be in (0, 1), e.g. 0.25; got {fit_fraction}")
    n, y = _arrays(points)
    largest = _require_sizes(n, "a forecast validation")[-1]
    cut = fit_fraction * largest
    small = [p for p in points if p.kind == "data" and p.size <= cut]
    what = f"a forecast validation (fitting on sizes <= {fit_fraction:g} x {largest} = {cut:g})"
    fit_sizes = _require_sizes(np.array([p.size for p in small]), what)
    res = forecast(small, [largest], max_factor=math.inf, **forecast_kwargs)
    observed = y[n == largest]
    obs, k = float(observed.mean()), observed.size
    pred, low, high = res.mean[0], res.low[0], res.high[0]
    if res.boot and res.calibration is None:  # the calibrated interval already carries the seed noise
        dev = np.concatenate([y[n == s] - y[n == s].mean() for s in fit_sizes])
        s2 = float(np.sum(dev**2)) / max(dev.size - len(fit_sizes), 1)
        rng = np.random.default_rng(forecast_kwargs.get("seed", 0) + 1)
        draws = res.draws([largest])[:, 0] + rng.normal(0.0, math.sqrt(s2 / k), len(res.boot))
        tail = 100 * (1 - res.level) / 2
        low, high = (float(v) for v in np.percentile(draws, [tail, 100 - tail]))
    std = float(np.std(observed, ddof=1)) if k > 1 else 0.0
    inside, err = bool(low <= obs <= high), abs(pred - obs)
    text = (
        f"Fitted on sizes {fit_sizes[0]} to {fit_sizes[-1]} only, the forecast ({res.form} "
        f"selected) predicted {pred:.3f} ({100 * res.level:.0f}% interval {low:.3f} to "
        f"{high:.3f}) at {largest} items; observed {obs:.3f} "
        f"{f'± {std:.3f} over {k} seeds' if k > 1 else '(one seed: no spread)'}: "
        f"{'inside' if inside else 'OUTSIDE'} the interval (error {err:.3f}, "
        f"{100 * err / obs if obs else math.nan:.1f}% of the observed value)."
    )
    return ValidationResult(fit_sizes, largest, pred, low, high, obs, std, inside, err,
                            res.form, res.level, text)
