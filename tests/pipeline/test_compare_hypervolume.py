"""pipeline.hypervolume against an independent implementation: Optuna's WFG
(`optuna._hypervolume.compute_hypervolume`, minimisation), on random fronts."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume

from pipeline.hypervolume import hypervolume

EPS = sys.float_info.epsilon


def _optuna(points: np.ndarray, reference: np.ndarray, modes: list[str]) -> float:
    """Optuna's hypervolume of the points strictly better than the reference (it asks for
    minimisation and points inside the reference box: a `max` objective negated)."""
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    loss, ref = points * signs, reference * signs
    inside = loss[np.all(loss < ref, axis=1)]
    return float(compute_hypervolume(inside, ref)) if len(inside) else 0.0


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", range(20))
def test_exact_on_a_dyadic_grid(d: int, seed: int) -> None:
    """Coordinates k/64 with k < 64 and a reference on the grid: every difference is a
    multiple of 2^-6 below 1, every box's volume a multiple of 2^-6d below 1 (at most 18
    significant bits), and every sum of at most 64^d such boxes at most 36 bits: float64
    holds all of it exactly, so both implementations must agree to the last bit."""
    rng = np.random.default_rng(seed)
    modes = [["min", "max"][int(b)] for b in rng.integers(0, 2, d)]
    points = rng.integers(1, 63, size=(int(rng.integers(1, 25)), d)) / 64.0
    reference = np.array([0.0 if m == "max" else 1.0 for m in modes]) + rng.integers(-8, 1, d) / 64.0 * np.array(
        [-1.0 if m == "max" else 1.0 for m in modes]
    )
    ours = hypervolume(points.tolist(), reference.tolist(), modes)
    assert ours == _optuna(points, reference, modes)
    signs = np.array([-1.0 if m == "max" else 1.0 for m in modes])
    if np.any(np.all(points * signs < reference * signs, axis=1)):
        assert ours > 0  # a point inside the box dominates a volume of at least 2^-6d


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", range(20))
def test_continuous_fronts_agree_to_float_rounding(d: int, seed: int) -> None:
    """Real-valued points. Both sum nonnegative boxes, each a product of d differences of
    coordinates in [0, 1]: a difference is off by at most u = eps/2 relative, a product of
    d by (2d) u, and a sum of m nonnegative terms adds at most m u of the total; with
    m <= n^(d-1) boxes and a total <= 1 (the unit box), each result is within
    (2d + n^(d-1)) u of the true volume, and the two within twice that."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 30))
    modes = ["max"] + ["min"] * (d - 1)
    points = rng.uniform(0.0, 1.0, size=(n, d))
    reference = np.array([0.0] + [1.0] * (d - 1))
    ours = hypervolume(points.tolist(), reference.tolist(), modes)
    theirs = _optuna(points, reference, modes)
    bound = 2 * (2 * d + n ** (d - 1)) * (EPS / 2)
    assert abs(ours - theirs) <= bound
    assert ours > 0


def test_hand_made_front_and_edges() -> None:
    """Two points against (0, 0.2), val_acc max and instability min: the union of
    [0, 0.9] x [0.05, 0.2] and [0, 0.95] x [0.1, 0.2] is 0.9 * 0.15 + 0.05 * 0.1."""
    modes = ["max", "min"]
    front = [[0.9, 0.05], [0.95, 0.1]]
    assert hypervolume(front, [0.0, 0.2], modes) == pytest.approx(0.9 * 0.15 + 0.05 * 0.1, abs=8 * EPS)
    # a dominated point adds nothing; one on or beyond the reference, or NaN, counts not
    assert hypervolume(front + [[0.8, 0.15]], [0.0, 0.2], modes) == hypervolume(front, [0.0, 0.2], modes)
    assert hypervolume([[0.9, 0.2], [0.0, 0.1], [float("nan"), 0.1]], [0.0, 0.2], modes) == 0.0
    assert hypervolume([], [0.0, 0.2], modes) == 0.0
