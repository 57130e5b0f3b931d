"""Chance-corrected module consistency (`module_consistency_corrected`): 0 for partitions that
agree only as much as random ones of the same module sizes, 1 for identical ones, and no credit
from merging modules into fewer, larger ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from syncmodel.metrics import module_consistency, module_consistency_corrected
from syncmodel.metrics.modules import CONSISTENCY_PERMUTATIONS, _contingency_ari

C = 64
PAIRS = 200  # random partition pairs per check


def _partition(sizes: list[int], rng: np.random.Generator) -> torch.Tensor:
    """C neurons: modules of `sizes` at random places, the rest unsynchronised (-1)."""
    labels = np.full(C, -1)
    labels[: sum(sizes)] = np.repeat(np.arange(len(sizes)), sizes)
    return torch.from_numpy(rng.permutation(labels))


def test_vectorised_ari_is_sklearns() -> None:
    rng = np.random.default_rng(0)
    b = rng.integers(0, 5, C)
    rows = np.stack([rng.permutation(rng.integers(0, 7, C)) for _ in range(1)])
    rows = np.stack([rng.permutation(rows[0]) for _ in range(10)])
    got = _contingency_ari(rows, b)
    assert got == pytest.approx([adjusted_rand_score(r, b) for r in rows], abs=1e-12)


def test_identical_partitions_score_one_and_degenerate_ones_nan() -> None:
    a = _partition([8, 8, 4, 4, 2], np.random.default_rng(1))
    res = module_consistency_corrected(a, a.clone())
    assert res["ari"] == pytest.approx(1.0) and res["corrected"] == 1.0
    assert res["ari"] == pytest.approx(module_consistency(a, a)["ari"], abs=1e-12)
    one = torch.zeros(C, dtype=torch.long)
    assert all(math.isnan(v) for v in module_consistency_corrected(one, a).values())


# Under the null (b unrelated to a, same module sizes) the observed ARI and the R null ARIs are
# exchangeable, so the chance that it lies strictly above the 190th of R = 200 sorted null
# values (the 95% point) is at most (R + 1 - 190) / (R + 1) = 11/201, ties only lowering it.
P_ABOVE = (CONSISTENCY_PERMUTATIONS + 1 - math.ceil(0.95 * CONSISTENCY_PERMUTATIONS)) / (
    CONSISTENCY_PERMUTATIONS + 1
)
# a binomial proportion of PAIRS draws: at most P_ABOVE plus 4 standard errors
BOUND = P_ABOVE + 4 * math.sqrt(P_ABOVE * (1 - P_ABOVE) / PAIRS)


def _random_pairs(sizes: list[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw ARI and corrected consistency of PAIRS pairs of unrelated same-size partitions."""
    rng = np.random.default_rng(seed)
    raw, corrected = [], []
    for i in range(PAIRS):
        res = module_consistency_corrected(_partition(sizes, rng), _partition(sizes, rng), seed=i)
        raw.append(res["ari"])
        corrected.append(res["corrected"])
    return np.array(raw), np.array(corrected)


FINE = [4] * 8  # 8 modules of 4, 32 neurons unsynchronised
COARSE = [32]  # the same 32 neurons merged into one module


@pytest.mark.parametrize("sizes", [FINE, COARSE], ids=["fine", "coarse"])
def test_random_partitions_of_the_same_sizes_score_about_zero(sizes: list[int]) -> None:
    _, corrected = _random_pairs(sizes, seed=len(sizes))
    assert np.mean(corrected > 0) <= BOUND
    assert corrected.mean() <= BOUND  # each value is at most 1


def test_fewer_larger_modules_raise_raw_credit_but_not_the_corrected_one() -> None:
    raw_fine, corr_fine = _random_pairs(FINE, seed=10)
    raw_coarse, corr_coarse = _random_pairs(COARSE, seed=11)
    # the flaw: max(0, ARI), v1's consistency credit, earns about sd_null / sqrt(2 pi) by
    # chance, and the null's spread grows as modules get fewer and larger: the coarse mean
    # credit exceeds the fine one by more than 4 standard errors of the difference
    plus_c, plus_f = np.maximum(raw_coarse, 0), np.maximum(raw_fine, 0)
    se = math.sqrt((plus_c.var(ddof=1) + plus_f.var(ddof=1)) / PAIRS)
    assert plus_c.mean() - plus_f.mean() > 4 * se
    # the corrected credit stays within the exchangeability bound at both granularities
    assert corr_coarse.mean() <= BOUND and corr_fine.mean() <= BOUND


def test_real_agreement_survives_the_correction() -> None:
    # B = A with 4 of its 32 module members moved out (unsynchronised): mostly the same modules
    rng = np.random.default_rng(3)
    a = _partition(FINE, rng)
    b = a.clone()
    members = (a >= 0).nonzero()[:, 0]
    b[members[rng.choice(members.numel(), 4, replace=False)]] = -1
    res = module_consistency_corrected(a, b)
    assert res["ari"] > res["null_quantile"] and 0 < res["corrected"] < 1
    assert res["corrected"] == pytest.approx((res["ari"] - res["null_quantile"]) / (1 - res["null_quantile"]))
