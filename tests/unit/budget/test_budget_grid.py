"""Budget grids and nested subsets."""

from __future__ import annotations

import numpy as np
import pytest

from tunewise.budget.grid import check_grid, default_grid, nested_subsets, parse_sizes
from tunewise.errors import TunewiseError


def test_default_grid_is_geometric_and_ends_at_all_data():
    grid = default_grid(1000)
    # log2(1000 / 25) = 5.3 -> 6 sizes; 25 * 40 ** (k / 5) rounded.
    assert grid == [25, 52, 109, 229, 478, 1000]
    ratios = np.diff(np.log(grid))
    assert np.allclose(ratios, ratios.mean(), atol=0.03)  # equal ratios, up to rounding


def test_default_grid_points_and_caps():
    assert default_grid(1000, points=3) == [25, 158, 1000]  # 25 * 40 ** 0.5 = 158.1
    assert len(default_grid(10**6)) == 8  # about one size per doubling, at most 8
    assert default_grid(100) == [25, 50, 100]  # at least 3
    assert default_grid(1000, points=1) == [1000]
    assert default_grid(1000, start=10, points=4)[-1] == 1000


def test_default_grid_with_less_data_than_start():
    assert default_grid(20) == [5, 10, 20]  # start lowered to 20 // 4
    assert default_grid(1) == [1]


def test_default_grid_errors_name_the_option():
    with pytest.raises(TunewiseError, match="--data"):
        default_grid(0)
    with pytest.raises(TunewiseError, match="--start-size"):
        default_grid(100, start=0)
    with pytest.raises(TunewiseError, match="--grid-points"):
        default_grid(100, points=0)


def test_check_grid_caps_with_a_warning():
    sizes, warnings = check_grid([5000, 50, 25], n_available=1200)
    assert sizes == [25, 50, 1200]
    assert len(warnings) == 1 and "--sizes" in warnings[0] and "capped to 1200" in warnings[0]


def test_check_grid_without_cap_is_an_error():
    with pytest.raises(TunewiseError, match=r"--sizes: 5000 is larger than the 1200"):
        check_grid([25, 5000], n_available=1200, cap=False)


def test_check_grid_dedupes_and_validates():
    sizes, warnings = check_grid([50, 50.0, 25], n_available=100)
    assert sizes == [25, 50] and any("repeated" in w for w in warnings)
    for bad in ([], [0], [12.5], ["ten"], [True]):
        with pytest.raises(TunewiseError, match="--sizes"):
            check_grid(bad, n_available=100)


def test_parse_sizes():
    assert parse_sizes("25, 50,100,") == [25, 50, 100]
    with pytest.raises(TunewiseError, match="--sizes: '1e3'"):
        parse_sizes("25,1e3")


def test_nested_subsets_are_nested_seeded_and_sized():
    subsets = nested_subsets(500, [25, 100, 400], seed=3)
    assert {k: len(v) for k, v in subsets.items()} == {25: 25, 100: 100, 400: 400}
    assert set(subsets[25]) <= set(subsets[100]) <= set(subsets[400])
    assert all(v == sorted(set(v)) for v in subsets.values())
    assert all(0 <= i < 500 for i in subsets[400])
    assert nested_subsets(500, [25, 100, 400], seed=3) == subsets  # reproducible
    assert nested_subsets(500, [25], seed=4)[25] != subsets[25]  # another seed, another draw


def test_nested_subsets_rejects_sizes_above_data():
    with pytest.raises(TunewiseError, match="--sizes"):
        nested_subsets(10, [5, 20], seed=0)
