"""Inference for comparisons of conditions over seeds (docs/design.md §1.5).

Every verdict of a results table comes from a *paired* difference (candidate minus reference,
the same seeds), its 95% t-interval and paired t-test; the p-values of one table (a family)
are Holm-corrected; "equivalent" is said only when a TOST against a margin fixed in advance
(`MARGINS`) rejects, Holm-corrected too; anything else is "inconclusive", never "tie".
`seeds_for_power` says how many seeds a contrast needs for 80% power at its margin.

Needs scipy (the t, noncentral t and chi2 distributions); scikit-learn brings it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
POWER = 0.8

# Equivalence margins per metric, fixed in advance (issue 24, before the runs they will judge;
# docs/design.md §1.5 gives the reason of each): a paired mean difference inside ±margin is
# too small to change a reading of the tables. In the metric's own units.
MARGINS: dict[str, float] = {
    "accuracy": 0.01,  # the project's "within one point of plain"
    "location_instability": 0.005,  # ICNN's scale: its filters differ by ~0.01-0.02
    "location_instability_heldout": 0.005,
    "location_instability_part_heldout": 0.005,
    "detectors_calibrated": 1.0,  # one unit
    "unique_parts_calibrated": 1.0,  # one part
    "detector_iou": 0.01,
    "selectivity": 0.02,  # on a 0..1 index
    "mis_above_chance": 0.01,
    "consistency_ari": 0.05,
    "consistency_ari_corrected": 0.05,
    "class_purity": 0.02,
    "distributedness": 0.01,  # one effective neuron in 64 is 0.016
    "module_distributedness": 0.05,  # half an effective unit in K - 1 = 9
    "between_module_distributedness": 0.05,  # the same, counted between modules
    "ablation_own_drop_beyond_random": 0.01,  # one point of a class's accuracy
    "spread": 0.05,  # the focus loss moves it by ~0.3 (digits)
    "interpretability": 0.01,
    "interpretability_v2": 0.01,
    "interpretability_v1": 0.001,  # its values were ~0.01-0.03
}


@dataclass(frozen=True)
class Paired:
    """A paired difference `a - b` over n pairs: mean, sd, the 95% t-interval and test p."""

    n: int
    mean: float
    sd: float
    low: float
    high: float
    p: float  # two-sided paired t-test of mean 0 (NaN with n < 2 or sd 0 and mean 0)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Paired:
    """Paired t analysis of `a[i] - b[i]` (Student 1908; the same as `scipy.stats.ttest_rel`).

    Pairs with a non-finite side are dropped. With sd 0 the interval is the point and p is 0
    (a nonzero mean) or NaN (all differences 0: nothing to test).
    """
    from scipy import stats

    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    nan = math.nan
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(1, mean, nan, nan, nan, nan)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    if se == 0:
        p = nan if mean == 0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Paired(n, mean, sd, mean - half, mean + half, p)


def tost(diffs: Sequence[float], margin: float) -> float:
    """p of the two one-sided tests of equivalence (Schuirmann 1987) of paired differences.

    H0: |mean| >= margin, rejected when both `mean > -margin` and `mean < margin` are shown by
    one-sided t-tests at the level; p = the larger of the two one-sided p. NaN with fewer than
    2 finite differences.
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n = int(d.size)
    if n < 2:
        return math.nan
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    p_low = float(stats.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_high = float(stats.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    return max(p_low, p_high)


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> tuple[list[float], list[bool]]:
    """Holm's step-down adjustment (Holm 1979) of one family of p-values.

    Sorted ascending, the i-th (0-based) of m is multiplied by m - i; the running maximum
    keeps the order; capped at 1. A hypothesis is rejected where its adjusted p < alpha —
    the same decisions as the step-down procedure, with the family-wise error at most alpha.
    NaN p-values (no test) are not in the family: they stay NaN and are never rejected.
    """
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, float(p[i]) * (m - rank)))
        adjusted[i] = running
    return adjusted.tolist(), [bool(v < alpha) for v in np.nan_to_num(adjusted, nan=1.0)]


def verdict(mean: float, p_difference: float, p_equivalence: float, better: str, alpha: float = ALPHA) -> str:
    """The verdict of one contrast from its Holm-adjusted p-values.

    "better" / "worse" (by the sign of the mean paired difference and whether higher or lower
    is `better`) only where the adjusted difference p < alpha; else "equivalent" only where
    the adjusted TOST p < alpha at the metric's fixed margin; else "inconclusive". A
    difference shown *and* inside the margin is reported as the difference (both are true;
    the interval beside it says how small). "–" where neither test could run.
    """
    if math.isnan(p_difference) and math.isnan(p_equivalence):
        return "–"
    if p_difference < alpha:
        higher = mean > 0
        return "better" if higher == (better == "higher") else "worse"
    if p_equivalence < alpha:
        return "equivalent"
    return "inconclusive"


def power(n: int, sd: float, margin: float, kind: str = "tost", alpha: float = ALPHA) -> float:
    """Power of a paired test with n seeds whose differences have standard deviation `sd`.

    - kind "difference": the two-sided paired t-test at level alpha when the true difference
      is `margin`: `P(|T| > t_{1-alpha/2, n-1})`, T noncentral t with n - 1 degrees of freedom
      and noncentrality `margin sqrt(n) / sd`.
    - kind "tost": TOST at level alpha when the true difference is 0. It rejects iff
      `|mean| < margin - t_{1-alpha, n-1} s / sqrt(n)`; mean and s are independent (normal
      differences), so power = `E_s[max(0, 2 Phi((margin - t s/sqrt(n)) sqrt(n)/sd) - 1)]`,
      integrated over `s sqrt(n-1)/sd ~ chi_{n-1}` (Gauss-Legendre over its bulk).
    """
    from scipy import stats

    if n < 2:
        return 0.0
    if sd == 0:
        return 1.0
    df = n - 1
    if kind == "difference":
        crit = float(stats.t.ppf(1 - alpha / 2, df))
        nc = margin * math.sqrt(n) / sd
        value = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
        if not math.isfinite(value):  # scipy's nct fails far in the tail: the normal limit
            value = float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc))
        return value
    if kind != "tost":
        raise ValueError(f"kind must be 'tost' or 'difference', not {kind!r}")
    crit = float(stats.t.ppf(1 - alpha, df))
    root = math.sqrt(n)
    # t = s sqrt(df) / sd follows the chi distribution (smooth density, sd about 0.7 around
    # sqrt(df)); beyond t_max the TOST cannot reject. Gauss-Legendre over its bulk (+-10)
    t_max = margin * root / crit / sd * math.sqrt(df)
    lo, hi = max(0.0, math.sqrt(df) - 10.0), min(t_max, math.sqrt(df) + 10.0)
    if hi <= lo:
        return 0.0
    x, w = _gauss_legendre()
    t = lo + (hi - lo) * (x + 1) / 2
    s = sd * t / math.sqrt(df)
    inner = 2 * stats.norm.cdf((margin - crit * s / root) * root / sd) - 1
    value = (hi - lo) / 2 * np.sum(w * np.clip(inner, 0.0, 1.0) * stats.chi.pdf(t, df))
    return float(min(max(value, 0.0), 1.0))


_NODES = 256  # Gauss-Legendre nodes of the TOST power integral


@functools.cache
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(_NODES)  # an eigenproblem: computed once


def seeds_for_power(
    sd: float, margin: float, target: float = POWER, alpha: float = ALPHA, kind: str = "tost", most: int = 1000
) -> int:
    """The fewest seeds (>= 2) whose paired test reaches `target` power (`power`), given the
    observed standard deviation `sd` of the paired differences; `most` + 1 if even `most` do
    not (report it as "more than most"). NaN sd → 0 (no estimate)."""
    if not math.isfinite(sd):
        return 0
    from scipy import stats

    # power rises with n: start from the normal approximation, widen, then bisect
    z = stats.norm.ppf(1 - alpha) + stats.norm.ppf(1 - (1 - target) / 2) if kind == "tost" else (
        stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
    )  # fmt: skip
    guess = min(max(int((z * sd / margin) ** 2), 2), most)
    low, high = guess - 1, guess
    while high < most and power(high, sd, margin, kind, alpha) < target:
        low, high = high, min(2 * high, most)
    if power(high, sd, margin, kind, alpha) < target:
        return most + 1
    while low > 1 and power(low, sd, margin, kind, alpha) >= target:
        high, low = low, max(low // 2, 1)
    while high - low > 1:
        mid = (low + high) // 2
        if power(mid, sd, margin, kind, alpha) >= target:
            high = mid
        else:
            low = mid
    return max(high, 2)
