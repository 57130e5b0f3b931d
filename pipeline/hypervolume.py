"""The hypervolume indicator (Zitzler & Thiele 1998): the volume of objective space that a set
of points dominates, bounded by a reference point.

Each objective is turned to minimisation first (a `max` objective negated, its reference
too); only points strictly better than the reference on every objective count. The volume
is computed exactly, as a sum of boxes: 2-D by a sweep over the points sorted on the first
objective, more dimensions by slicing along the last one (each slab the hypervolume of the
points at or below it in one dimension fewer). Enough for the fronts of a study (tens of
points); tests/pipeline/test_compare_hypervolume.py checks it against Optuna's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], modes: Sequence[str]) -> float:
    """The hypervolume of `points` (any set: dominated points add nothing) against
    `reference`, each objective's direction given by `modes` ("max" | "min"). 0.0 when no
    point is strictly better than the reference on every objective."""
    d = len(reference)
    if len(modes) != d:
        raise ValueError(f"{len(modes)} modes for a {d}-D reference point")
    signs = [-1.0 if m == "max" else 1.0 for m in modes]
    ref = [s * float(r) for s, r in zip(signs, reference)]
    inside = []
    for p in points:
        if len(p) != d:
            raise ValueError(f"a {len(p)}-D point against a {d}-D reference point")
        q = [s * float(v) for s, v in zip(signs, p)]
        # a non-finite value dominates nothing measurable (NaN) or everything (-inf): left out
        if all(math.isfinite(v) and v < r for v, r in zip(q, ref)):
            inside.append(q)
    return _volume(inside, ref) if inside else 0.0


def _volume(points: list[list[float]], ref: list[float]) -> float:
    """Hypervolume of minimisation points, all strictly below `ref`."""
    d = len(ref)
    if d == 1:
        return ref[0] - min(p[0] for p in points)
    if d == 2:
        total, best_y = 0.0, ref[1]
        # sorted by x, then y: of points with one x the lowest y comes first; a point adds
        # the strip from its x to ref x between its y and the lowest y seen so far
        for x, y in sorted(points):
            if y < best_y:
                total += (ref[0] - x) * (best_y - y)
                best_y = y
        return total
    ordered = sorted(points, key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(ordered):
        top = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if top > p[-1]:
            total += (top - p[-1]) * _volume([q[:-1] for q in ordered[: i + 1]], ref[:-1])
    return total
