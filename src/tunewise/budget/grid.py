"""Budget grids for a data sweep, and the nested, seeded subsets that realise them.

A data sweep trains at several training-set sizes. Two choices keep its curve honest:

* **geometric spacing**: returns diminish roughly with ``log N`` (the power-law learning
  curve, see :mod:`tunewise.budget.forecast`), so equal ratios between sizes spend the
  budget where the curve bends, and the last size is all the labeled data there is;
* **nested subsets**: for one seed, the subset of size ``n_i`` is contained in the subset of
  size ``n_j > n_i`` (prefixes of one permutation). The difference between two sizes is then
  "more data" and not "other data", which lowers the variance of the marginal ROI.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from tunewise.errors import TunewiseError

MIN_POINTS = 3  # a forecast needs at least three distinct sizes
MAX_DEFAULT_POINTS = 8  # each size costs one run per seed; more rarely changes the knee


def default_grid(n_available: int, start: int = 25, points: int | None = None) -> list[int]:
    """Geometric grid of training-set sizes from ``start`` to all available items.

    ``size_k = round(start * (n_available / start) ** (k / (points - 1)))``, deduplicated.
    With ``points=None`` there is about one size per doubling
    (``round(log2(n_available / start)) + 1``), clamped to [3, 8].

    Args:
        n_available: labeled training items available; the grid ends exactly here.
        start: smallest size. When it is not below ``n_available`` it is lowered to
            ``n_available // 4`` (at least 1) so that there is still a curve to measure.
        points: number of sizes; fewer come back when rounding makes sizes coincide.

    Returns:
        Increasing sizes, the last one equal to ``n_available``.

    Raises:
        TunewiseError: when there is no data, or ``start``/``points`` are not positive.
    """
    if n_available < 1:
        raise TunewiseError(
            f"--data: the training set has {n_available} labeled items; a budget sweep needs "
            "at least one (check the file and its split)"
        )
    if start < 1:
        raise TunewiseError(f"--start-size: must be at least 1; got {start}")
    if points is not None and points < 1:
        raise TunewiseError(f"--grid-points: must be at least 1; got {points}")
    if start >= n_available:
        start = max(1, n_available // 4)
    if start == n_available:
        return [n_available]
    if points is None:
        points = round(math.log2(n_available / start)) + 1
        points = min(max(points, MIN_POINTS), MAX_DEFAULT_POINTS)
    if points == 1:
        return [n_available]
    raw = np.geomspace(start, n_available, points)
    sizes = sorted({int(round(x)) for x in raw})
    sizes[-1] = n_available  # guard against float round-off at the end point
    return sizes


def parse_sizes(text: str) -> list[int]:
    """Parse ``"25,50,100"`` (as typed after ``--sizes``) into integers."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise TunewiseError(
                f"--sizes: {part!r} is not a whole number; write sizes like --sizes 25,50,100"
            ) from None
    return out


def check_grid(
    grid: Iterable[int], n_available: int, cap: bool = True
) -> tuple[list[int], list[str]]:
    """Validate a user grid against the data that exists.

    Args:
        grid: requested sizes, in any order.
        n_available: labeled training items available.
        cap: replace sizes above ``n_available`` by ``n_available`` (with a warning) instead
            of failing.

    Returns:
        ``(sizes, warnings)``: sorted unique sizes, and one-line messages to show the user.

    Raises:
        TunewiseError: naming ``--sizes`` for an empty grid, a size below 1 or not a whole
            number, or (with ``cap=False``) a size above the data.
    """
    requested = list(grid)
    if not requested:
        raise TunewiseError("--sizes: no sizes given; pass e.g. --sizes 25,50,100 or omit it")
    warnings: list[str] = []
    sizes: set[int] = set()
    for size in requested:
        try:
            whole = not isinstance(size, bool) and float(size).is_integer()
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise TunewiseError(f"--sizes: {size!r} is not a whole number of items")
        size = int(size)
        if size < 1:
            raise TunewiseError(f"--sizes: {size} is below 1; every size must be at least 1")
        if size > n_available:
            if not cap:
                raise TunewiseError(
                    f"--sizes: {size} is larger than the {n_available} labeled items available; "
                    f"use sizes up to {n_available} or provide more data"
                )
            warnings.append(
                f"--sizes: {size} is larger than the {n_available} labeled items available; "
                f"capped to {n_available}"
            )
            size = n_available
        sizes.add(size)
    if len(sizes) < len(requested):
        warnings.append(f"--sizes: repeated sizes removed; running {sorted(sizes)}")
    return sorted(sizes), warnings


def nested_subsets(n_items: int, sizes: Sequence[int], seed: int) -> dict[int, list[int]]:
    """Seeded, nested subsets of ``range(n_items)``, one per size.

    All sizes take prefixes of the same permutation drawn from
    ``numpy.random.default_rng(seed)``, so ``subset[a] ⊂ subset[b]`` whenever ``a < b``, and
    another seed gives another draw. Indices come back sorted (the trainer shuffles).

    Raises:
        TunewiseError: naming ``--sizes`` when a size exceeds ``n_items``.
    """
    bad = [s for s in sizes if not 0 <= s <= n_items]
    if bad:
        raise TunewiseError(
            f"--sizes: {bad} outside 0..{n_items} (the labeled items available); "
            "run check_grid first or lower the sizes"
        )
    order = np.random.default_rng(seed).permutation(n_items)
    return {int(s): sorted(order[: int(s)].tolist()) for s in sizes}
