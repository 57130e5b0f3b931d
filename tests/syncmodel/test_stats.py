"""syncmodel.stats: paired intervals, Holm, TOST, verdicts and power, against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from syncmodel import stats

A = [0.91, 0.93, 0.90, 0.95, 0.92]
B = [0.89, 0.92, 0.90, 0.91, 0.90]


def test_paired_difference_matches_scipy() -> None:
    res = stats.paired_difference(A, B)
    ref = sps.ttest_rel(A, B)
    ci = ref.confidence_interval(0.95)
    assert res.n == 5 and res.mean == pytest.approx(float(np.mean(np.subtract(A, B))), abs=1e-15)
    assert res.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res.low, res.high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))


def test_paired_difference_drops_missing_pairs_and_handles_constant_differences() -> None:
    res = stats.paired_difference([1.0, 2.0, math.nan, 4.0], [0.0, 1.0, 5.0, 3.0])
    assert res.n == 3 and res.mean == 1.0 and res.sd == 0.0 and res.p == 0.0
    assert math.isnan(stats.paired_difference([1.0, 2.0], [1.0, 2.0]).p)  # nothing to test
    assert math.isnan(stats.paired_difference([1.0], [0.0]).p)


def test_holm_by_hand() -> None:
    # m = 4: sorted 0.01, 0.02, 0.03, 0.04 → x4, x3, x2, x1 = 0.04, 0.06, 0.06 (running max), 0.04 → 0.06
    adjusted, reject = stats.holm([0.03, 0.01, math.nan, 0.04, 0.02])
    assert adjusted[:2] == pytest.approx([0.06, 0.04]) and math.isnan(adjusted[2])
    assert adjusted[3:] == pytest.approx([0.06, 0.06])
    assert reject == [False, True, False, False, False]
    assert stats.holm([0.5, 0.9])[0] == pytest.approx([1.0, 1.0])  # capped at 1


def test_tost_is_the_larger_one_sided_p() -> None:
    d = np.subtract(A, B)
    margin = 0.05
    low = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
    high = sps.ttest_1samp(d, margin, alternative="less").pvalue
    assert stats.tost(d, margin) == pytest.approx(max(low, high), rel=1e-12)
    assert stats.tost([0.0, 0.0, 0.0], 0.01) == 0.0 and stats.tost([0.02, 0.02], 0.01) == 1.0
    assert math.isnan(stats.tost([0.1], 0.01))


@pytest.mark.parametrize(
    ("mean", "p_diff", "p_eq", "better", "expected"),
    [
        (0.1, 0.01, 0.9, "higher", "better"),
        (0.1, 0.01, 0.9, "lower", "worse"),
        (-0.1, 0.01, 0.9, "lower", "better"),
        (0.001, 0.5, 0.01, "higher", "equivalent"),
        (0.001, 0.5, 0.2, "higher", "inconclusive"),  # the old tables' "tie"
        (0.001, math.nan, math.nan, "higher", "–"),
    ],
)
def test_verdict_rule(mean: float, p_diff: float, p_eq: float, better: str, expected: str) -> None:
    assert stats.verdict(mean, p_diff, p_eq, better) == expected


def test_margins_are_positive_and_cover_the_composite() -> None:
    assert all(v > 0 for v in stats.MARGINS.values())
    assert {"accuracy", "interpretability", "consistency_ari_corrected", "location_instability"} <= set(stats.MARGINS)


M = 4000  # simulated experiments per power check


@pytest.mark.parametrize("kind", ["tost", "difference"])
def test_power_matches_simulation(kind: str) -> None:
    sd, margin = 1.0, 1.0
    n = stats.seeds_for_power(sd, margin, kind=kind)
    expected = stats.power(n, sd, margin, kind)
    assert expected >= stats.POWER > stats.power(n - 1, sd, margin, kind)  # the fewest seeds
    rng = np.random.default_rng(0)
    true = 0.0 if kind == "tost" else margin  # TOST: power to show equivalence of equal conditions
    d = rng.normal(true, sd, size=(M, n))
    if kind == "tost":
        hits = [stats.tost(row, margin) < stats.ALPHA for row in d]
    else:
        hits = [stats.paired_difference(row, np.zeros(n)).p < stats.ALPHA for row in d]
    # a binomial proportion of M draws: 4 standard errors (two-sided chance ~6e-5)
    assert abs(np.mean(hits) - expected) < 4 * math.sqrt(expected * (1 - expected) / M)


def test_seeds_for_power_scales_with_the_spread() -> None:
    # the sample size of a test at a fixed standardised effect depends only on sd / margin,
    # and halving the margin needs roughly four times the seeds
    assert stats.seeds_for_power(0.01, 0.005) == stats.seeds_for_power(2.0, 1.0)
    n1, n2 = stats.seeds_for_power(1.0, 1.0), stats.seeds_for_power(1.0, 0.5)
    assert 3 * n1 < n2 < 5 * n1
    assert stats.seeds_for_power(0.0, 1.0) == 2 and stats.seeds_for_power(math.nan, 1.0) == 0


@pytest.mark.parametrize("kind", ["tost", "difference"])
def test_seeds_for_power_is_the_first_n_of_a_linear_scan(kind: str) -> None:
    # the search starts from a normal approximation and bisects; a plain scan is the reference
    for sd in (0.1, 0.3, 0.7, 1.0, 1.7, 2.5, 6.0):
        scan = next(n for n in range(2, 5000) if stats.power(n, sd, 1.0, kind) >= stats.POWER)
        assert stats.seeds_for_power(sd, 1.0, kind=kind) == scan
    assert stats.seeds_for_power(100.0, 1.0, kind=kind, most=50) == 51  # "more than 50"
