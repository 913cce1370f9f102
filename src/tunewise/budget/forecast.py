"""Learning-curve forecast: how good will the model be with more labels, and how many for a target.

A data sweep measures ``metric(N)`` at a few training-set sizes, several seeds each. This
module fits saturating curves to those points, picks the form that best predicts sizes it
did not see (leave-one-size-out), and puts a bootstrap interval around every answer.

Curve forms (``x = N / N_max``, the fit is done on this scale for conditioning; the
``params`` reported are in items):

* ``pow3``: ``m(N) = a - b * N**(-c)``: inverse power law (Frey & Fisher 1999; Figueroa et
  al. 2012; Hestness et al. 2017),
* ``exp3``: ``m(N) = a - b * exp(-c * N)``: exponential saturation (Domhan et al. 2015),
* ``logistic3``: ``m(N) = a / (1 + exp(-k * (ln N - d)))``: logistic in ``log N``, an
  S-shaped curve for tasks that need a minimum of data before they improve.

``a`` is the asymptote, so a target above it is "not reachable on this curve". All metrics
are assumed to lie in [0, 1] and to grow with N (``a <= 1``, ``b >= 0``).

References:
    Frey & Fisher, "Modeling decision tree performance with the power law", AISTATS 1999.
    Figueroa et al., "Predicting sample size required for classification performance",
    BMC Med. Inform. Decis. Mak. 12:8, 2012 (inverse power law + bootstrap intervals).
    Hestness et al., "Deep learning scaling is predictable, empirically", arXiv:1712.00409.
    Domhan, Springenberg & Hutter, "Speeding up automatic hyperparameter optimization of deep
    neural networks by extrapolation of learning curves", IJCAI 2015 (pow3, exp3, ...).
    Viering & Loog, "The shape of learning curves: a review", IEEE TPAMI 2022.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from tunewise.budget.roi import BudgetPoint
from tunewise.errors import TunewiseError

MIN_SIZES = 3
MAX_FACTOR = 10.0  # forecasts further than 10x the largest measured size are guesses


def _pow3(x, a, b, c):
    return a - b * np.power(x, -c)


def _exp3(x, a, b, c):
    return a - b * np.exp(-c * x)


def _logistic3(x, a, k, d):
    with np.errstate(over="ignore"):
        return a / (1.0 + np.exp(-k * (np.log(x) - d)))


def _start_a(y: np.ndarray) -> list[float]:
    top, spread = float(np.max(y)), float(np.ptp(y))
    return sorted({min(top + 0.02, 0.999), min(top + spread + 0.01, 0.999)})


def _pow3_inits(x, y):
    x0, y0 = x.min(), y[x == x.min()].mean()
    return [(a, max((a - y0) * x0**c, 1e-6), c) for a in _start_a(y) for c in (0.3, 0.7, 1.2)]


def _exp3_inits(x, y):
    x0, y0 = x.min(), y[x == x.min()].mean()
    return [
        (a, min(max((a - y0) * math.exp(c * x0), 1e-6), 1.9), c)
        for a in _start_a(y)
        for c in (2.0, 8.0, 30.0)
    ]


def _logistic3_inits(x, y):
    x0, y0 = x.min(), max(y[x == x.min()].mean(), 1e-3)
    out = []
    for a in _start_a(y):
        for k in (0.5, 1.0, 2.0):
            ratio = max(a / y0 - 1.0, 1e-6)
            out.append((a, k, math.log(x0) + math.log(ratio) / k))
    return out


def _pow3_inverse(t, a, b, c):
    return 0.0 if b <= 0 else (b / (a - t)) ** (1.0 / c) if t < a else math.inf


def _exp3_inverse(t, a, b, c):
    if t >= a:
        return math.inf
    return 0.0 if a - b >= t else -math.log((a - t) / b) / c


def _logistic3_inverse(t, a, k, d):
    if t >= a:
        return math.inf
    return 0.0 if t <= 0 else math.exp(d - math.log(a / t - 1.0) / k)


@dataclass(frozen=True)
class CurveForm:
    """A learning-curve family: its function on ``x = N / scale``, bounds, starts, inverse."""

    name: str
    formula: str
    func: Callable[..., np.ndarray]
    bounds: tuple[tuple[float, ...], tuple[float, ...]]
    inits: Callable[[np.ndarray, np.ndarray], list[tuple[float, ...]]]
    inverse: Callable[..., float]
    param_names: tuple[str, ...]
    # Map the x-scale parameters to item-scale ones, for reporting: (params, scale) -> params.
    to_items: Callable[[Sequence[float], float], tuple[float, ...]]


FORMS: dict[str, CurveForm] = {
    f.name: f
    for f in (
        CurveForm("pow3", "a - b * N^(-c)", _pow3, ((0, 0, 1e-3), (1, np.inf, 3)),
                  _pow3_inits, _pow3_inverse, ("a", "b", "c"),
                  lambda p, s: (p[0], p[1] * s ** p[2], p[2])),
        CurveForm("exp3", "a - b * exp(-c * N)", _exp3, ((0, 0, 1e-3), (1, 2, 1e3)),
                  _exp3_inits, _exp3_inverse, ("a", "b", "c"),
                  lambda p, s: (p[0], p[1], p[2] / s)),
        CurveForm("logistic3", "a / (1 + exp(-k * (ln N - d)))", _logistic3,
                  ((0, 1e-2, -20), (1, 20, 20)), _logistic3_inits, _logistic3_inverse,
                  ("a", "k", "d"), lambda p, s: (p[0], p[1], p[2] + math.log(s))),
    )
}


@dataclass(frozen=True)
class CurveFit:
    """One fitted curve. ``params`` are on the ``x = N / scale`` axis."""

    form: str
    params: tuple[float, ...]
    scale: float
    sse: float

    def predict(self, sizes) -> np.ndarray:
        x = np.asarray(sizes, dtype=float) / self.scale
        return FORMS[self.form].func(x, *self.params)

    def size_for(self, target: float) -> float:
        """Smallest N with ``m(N) >= target``; ``inf`` when the asymptote is below it."""
        return FORMS[self.form].inverse(target, *self.params) * self.scale

    @property
    def params_items(self) -> dict[str, float]:
        form = FORMS[self.form]
        return dict(zip(form.param_names, map(float, form.to_items(self.params, self.scale))))


def fit_curve(sizes, metrics, form: str, scale: float | None = None, starts=None) -> CurveFit | None:
    """Least-squares fit of one form with several starting points; None when all fail.

    Uses ``scipy.optimize.curve_fit`` (trust-region reflective, bounded). Several starts
    because a saturating fit with three parameters has flat valleys: the best of them wins.
    """
    n = np.asarray(sizes, dtype=float)
    y = np.asarray(metrics, dtype=float)
    scale = float(scale or n.max())
    x = n / scale
    spec = FORMS[form]
    lo, hi = (np.asarray(b, dtype=float) for b in spec.bounds)
    best: CurveFit | None = None
    for p0 in starts or spec.inits(x, y):
        # p0 must lie strictly inside the bounds for "trf".
        p0 = np.clip(np.asarray(p0, dtype=float), lo + 1e-9, np.where(np.isinf(hi), 1e12, hi - 1e-9))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                p, _ = curve_fit(spec.func, x, y, p0=p0, bounds=(lo, hi), method="trf", maxfev=4000)
            except (RuntimeError, ValueError):
                continue
        sse = float(np.sum((spec.func(x, *p) - y) ** 2))
        if math.isfinite(sse) and (best is None or sse < best.sse):
            best = CurveFit(form, tuple(float(v) for v in p), scale, sse)
    return best


def _arrays(points: Sequence[BudgetPoint]) -> tuple[np.ndarray, np.ndarray]:
    pts = [p for p in points if p.kind == "data" and math.isfinite(p.metric_after)]
    return (np.array([p.size for p in pts], dtype=float),
            np.array([p.metric_after for p in pts], dtype=float))


def _require_sizes(n: np.ndarray, what: str = "a forecast") -> list[int]:
    distinct = sorted({int(v) for v in n})
    if len(distinct) < MIN_SIZES:
        raise TunewiseError(
            f"--sizes: {what} needs at least {MIN_SIZES} distinct grid sizes with finished "
            f"points; got {len(distinct)} ({', '.join(map(str, distinct)) or 'none'}). Add sizes, "
            "e.g. --sizes 25,50,100,200"
        )
    return distinct


def select_form(
    n: np.ndarray, y: np.ndarray, forms: Sequence[str]
) -> tuple[str, dict[str, float], dict[str, CurveFit | None]]:
    """Score each form by leave-one-size-out RMSE and pick the lowest.

    For each distinct size, fit on the other sizes and predict the mean metric at the one
    left out; a form that fails to fit any fold scores ``inf``. Ties and all-``inf`` fall back
    to the in-sample fit, then to the order of ``forms``.

    Returns:
        ``(best, rmse_by_form, full_data_fit_by_form)``.
    """
    scale = float(n.max())
    scores: dict[str, float] = {}
    for name in forms:
        errors = []
        for size in np.unique(n):
            keep = n != size
            fit = fit_curve(n[keep], y[keep], name, scale=scale)
            if fit is None:
                errors = [math.inf]
                break
            errors.append(float(fit.predict([size])[0] - y[~keep].mean()) ** 2)
        scores[name] = math.sqrt(float(np.mean(errors)))
    full = {f: fit_curve(n, y, f) for f in forms}
    in_sample = {f: full[f].sse if full[f] else math.inf for f in forms}
    best = min(forms, key=lambda f: (scores[f], in_sample[f], forms.index(f)))
    return best, scores, full


def form_weights(scores: dict[str, float], fits: dict[str, CurveFit | None]) -> dict[str, float]:
    """Model-averaging weights ``w_f ∝ 1 / RMSE_f^2`` (0 for a form that failed to fit)."""
    floor = 1e-6  # a perfect held-out score must not take all the weight
    raw = {f: 1.0 / max(s, floor) ** 2 if math.isfinite(s) and fits.get(f) else 0.0
           for f, s in scores.items()}
    total = sum(raw.values())
    return {f: w / total for f, w in raw.items()} if total else {}


def _bootstrap(n, y, fits, weights, n_boot: int, rng: np.random.Generator) -> list[CurveFit]:
    """Refit on two-stage resamples, each with a form drawn from the model-averaging weights.

    Stage 1 resamples sizes with replacement (where the curve was measured), stage 2 the
    seeds within each drawn size (training noise). Draws with fewer than 3 distinct sizes are
    redrawn, since a 3-parameter curve needs them. Drawing the form per resample puts the
    uncertainty of model selection into the interval, which a single form would hide.
    """
    by_size = defaultdict(list)
    for size, metric in zip(n, y):
        by_size[size].append(metric)
    sizes = np.array(sorted(by_size))
    names = list(weights)
    probs = np.array([weights[f] for f in names])
    out = []
    for _ in range(n_boot):
        form = names[rng.choice(len(names), p=probs)]
        chosen = sizes
        bn, by = [], []
        for size in chosen:
            draw = rng.choice(np.asarray(by_size[size]), size=len(by_size[size]), replace=True)
            bn.extend([size] * len(draw))
            by.extend(draw)
        # Start from the full-data optimum: resamples are near it, one start is enough.
        full = fits[form]
        boot = fit_curve(bn, by, form, scale=full.scale, starts=[full.params])
        if boot is not None:
            out.append(boot)
    return out


@dataclass
class ForecastResult:
    """Forecast of the metric at ``sizes`` with a bootstrap interval at ``level``."""

    form: str
    formula: str
    params: dict[str, float]
    cv_rmse: dict[str, float]
    sizes: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    level: float
    observed_sizes: list[int]
    observed_mean: list[float]
    observed_std: list[float]
    n_boot: int
    weights: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fit: CurveFit | None = field(default=None, repr=False)
    boot: list[CurveFit] = field(default_factory=list, repr=False)

    @property
    def max_measured(self) -> int:
        return max(self.observed_sizes)

    def draws(self, sizes) -> np.ndarray:
        """Bootstrap predictions, shape ``(n_boot, len(sizes))``."""
        return np.stack([b.predict(sizes) for b in self.boot])

    def predict(self, sizes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(center, low, high)`` at any sizes.

        The center is the median over bootstrap fits (bagging, so it averages over forms as
        the interval does); without bootstrap it is the selected form's full-data fit.
        """
        if not self.boot:
            mean = self.fit.predict(sizes)
            return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
        draws = self.draws(sizes)
        tail = 100 * (1 - self.level) / 2
        low, mid, high = np.percentile(draws, [tail, 50, 100 - tail], axis=0)
        return mid, low, high


def forecast(
    points: Sequence[BudgetPoint],
    sizes: Sequence[int] | None = None,
    *,
    forms: Sequence[str] | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    max_factor: float = MAX_FACTOR,
) -> ForecastResult:
    """Fit a learning curve to a data sweep and forecast the metric at ``sizes``.

    Args:
        points: finished data-sweep points (``metric_after`` is the curve's y).
        sizes: sizes to forecast; default: measured sizes and 2x, 5x, 10x the largest.
        forms: candidate forms (names in :data:`FORMS`); default all.
        n_boot: bootstrap resamples for the interval (0: no interval).
        level: two-sided interval level, e.g. 0.95.
        seed: seed of the bootstrap.
        max_factor: refuse sizes beyond this multiple of the largest measured size.

    Raises:
        TunewiseError: fewer than 3 distinct sizes (``--sizes``), sizes out of range
            (``--forecast-sizes``), unknown form or bad level.
    """
    n, y = _arrays(points)
    measured = _require_sizes(n)
    forms = list(forms or FORMS)
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise TunewiseError(f"--curve: unknown form(s) {unknown}; choose from {list(FORMS)}")
    if not 0 < level < 1:
        raise TunewiseError(f"--level: must be in (0, 1), e.g. 0.95; got {level}")
    largest = measured[-1]
    sizes = [int(s) for s in (sizes if sizes is not None else [*measured, *(k * largest for k in (2, 5, 10))])]
    bad = [s for s in sizes if s < 1 or s > max_factor * largest]
    if bad:
        raise TunewiseError(
            f"--forecast-sizes: {bad} outside 1..{int(max_factor * largest)} ({max_factor:g}x the "
            f"largest measured size, {largest}); measure larger sizes to forecast further"
        )
    name, scores, fits = select_form(n, y, forms)
    fit = fits[name]
    if fit is None:
        raise TunewiseError(
            "--sizes: no learning curve could be fitted to these points; check that the metric "
            "grows with the number of items, or add sizes and seeds"
        )
    weights = form_weights(scores, fits) or {name: 1.0}
    boot = _bootstrap(n, y, fits, weights, n_boot, np.random.default_rng(seed))
    result = ForecastResult(
        form=name, formula=FORMS[name].formula, params=fit.params_items, cv_rmse=scores,
        sizes=sizes, mean=[], low=[], high=[], level=level, observed_sizes=measured,
        observed_mean=[float(y[n == s].mean()) for s in measured],
        observed_std=[float(y[n == s].std(ddof=1)) if (n == s).sum() > 1 else 0.0 for s in measured],
        n_boot=len(boot), weights=weights, fit=fit, boot=boot,
    )
    mean, low, high = result.predict(sizes)
    result.mean, result.low, result.high = mean.tolist(), low.tolist(), high.tolist()
    if fit.params[0] > 0.995:
        result.warnings.append(
            "the fitted asymptote is at the metric's ceiling (1.0): the curve has not started "
            "to saturate in the measured range, so forecasts far out are optimistic"
        )
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


def _check_target(target: float) -> None:
    if not (isinstance(target, (int, float)) and 0 <= target <= 1):
        raise TunewiseError(
            f"--target: must be a metric value in [0, 1] (the metric's range); got {target}"
        )


def labels_for_target(
    source: ForecastResult | Sequence[BudgetPoint], target: float, **forecast_kwargs
) -> TargetEstimate:
    """How many labeled items the fitted curve needs to reach ``target``.

    Inverts the curve (``pow3``: ``N = (b / (a - t))^(1/c)``; ``exp3``:
    ``N = -ln((a - t) / b) / c``; ``logistic3``: ``N = exp(d - ln(a/t - 1) / k)``). A target at
    or above the asymptote ``a`` is "not reachable on this curve". The interval is the
    percentile interval of the same inverse over the bootstrap fits (unreachable draws count
    as infinitely many items).

    Args:
        source: a :class:`ForecastResult`, or data-sweep points to fit one from.
        target: metric value to reach, in [0, 1].
        **forecast_kwargs: passed to :func:`forecast` when ``source`` is points.

    Raises:
        TunewiseError: naming ``--target`` when it is outside [0, 1].
    """
    _check_target(target)
    result = source if isinstance(source, ForecastResult) else forecast(source, **forecast_kwargs)
    fit, largest = result.fit, result.max_measured
    a = fit.params[0]
    pct = f"{100 * result.level:.0f}%"
    low = high = None
    if result.boot:
        draws = np.array([b.size_for(target) for b in result.boot])
        tail = (1 - result.level) / 2
        # "inverted_cdf" picks actual draws, so infinite (unreachable) draws stay infinite.
        low, high = (float(np.quantile(draws, q, method="inverted_cdf")) for q in (tail, 1 - tail))
        low = max(low, 1.0)
    need = fit.size_for(target)
    if not math.isfinite(need):
        msg = (f"{target:g} is not reachable on this curve: the fitted asymptote is {a:.3f}"
               f" ({result.form}: {result.formula})")
        if high is not None and math.isfinite(low):
            msg += f"; {100 * float(np.mean(np.isfinite(draws))):.0f}% of bootstrap fits do reach it"
        return TargetEstimate(target, False, None, low, high, a, True, msg + ".")
    need = max(need, 1.0)
    beyond = need > MAX_FACTOR * largest
    span = ""
    if low is not None:
        upper = f"{high:,.0f}" if math.isfinite(high) else "not reachable"
        span = f" ({pct} interval {low:,.0f} to {upper})"
    msg = f"about {need:,.0f} labeled items{span} to reach {target:g}"
    if need <= min(result.observed_sizes):
        msg += f"; already reached at the smallest measured size ({min(result.observed_sizes)})"
    if beyond:
        msg += (f"; that is beyond {MAX_FACTOR:g}x the largest measured size ({largest}), "
                "so treat it as a rough extrapolation")
    return TargetEstimate(target, True, need, low, high, a, beyond, msg + ".")


@dataclass(frozen=True)
class ValidationResult:
    """Forecast made from small sizes only, checked against the largest measured size."""

    fit_sizes: list[int]
    size: int
    predicted: float
    low: float
    high: float
    observed: float
    observed_std: float
    inside: bool
    abs_error: float
    rel_error: float
    form: str
    level: float
    text: str


def validate_forecast(
    points: Sequence[BudgetPoint],
    fit_fraction: float = 0.25,
    *,
    forms: Sequence[str] | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> ValidationResult:
    """Fit only on sizes ``<= fit_fraction * largest`` and predict the largest measured size.

    This is the honest test of a forecast: the curve never saw the point it is judged on,
    and the extrapolation factor (4x with the default) is like the one users ask for.

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
    fit_sizes = _require_sizes(
        np.array([p.size for p in small]),
        f"a forecast validation (fitting on sizes <= {fit_fraction:g} x {largest} = {cut:g})",
    )
    result = forecast(small, [largest], forms=forms, n_boot=n_boot, level=level, seed=seed,
                      max_factor=math.inf)
    observed = y[n == largest]
    obs, pred = float(observed.mean()), result.mean[0]
    low, high = result.low[0], result.high[0]
    inside = bool(low <= obs <= high)
    err = abs(pred - obs)
    std = float(observed.std(ddof=1)) if observed.size > 1 else 0.0
    text = (
        f"Fitted on sizes {fit_sizes[0]} to {fit_sizes[-1]} only, the {result.form} curve "
        f"predicted {pred:.3f} ({100 * level:.0f}% interval {low:.3f} to {high:.3f}) at {largest} "
        f"items; observed {obs:.3f} ± {std:.3f}: {'inside' if inside else 'OUTSIDE'} the interval "
        f"(error {err:.3f}, {100 * err / obs if obs else math.nan:.1f}% of the observed value)."
    )
    return ValidationResult(fit_sizes, largest, pred, low, high, obs, std, inside, err,
                            err / obs if obs else math.nan, result.form, level, text)
