"""The Pareto picture (`pareto.png` on a study's parent run) stays readable with an outlier:
the axes fit the front and the trials near it, a far outlier is drawn on the edge it lies
beyond (with its values in the key) instead of stretching the axes, and the front is
numbered (a key beside the axes) rather than labelled with overlapping trial ids."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.record.summary import (
    axis_limits,
    choose_on_front,
    core_range,
    pareto_png,
    plan_pareto,
    summarize,
)

OBJECTIVES = [("val_acc", "max"), ("interpretability", "max")]


def _trial(tid: str, acc: float, interp: float) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, status="ok", metrics={"val_acc": acc, "interpretability": interp})


def _study(*outliers: tuple[float, float], n: int = 14, seed: int = 0) -> list[SimpleNamespace]:
    """`n` trials at val_acc 0.95-0.98, interpretability 0.2-0.5, then the outliers."""
    rng = random.Random(seed)
    trials = [_trial(f"t{i:02d}", 0.95 + 0.03 * rng.random(), 0.2 + 0.3 * rng.random()) for i in range(n)]
    return trials + [_trial(f"out{i}", acc, interp) for i, (acc, interp) in enumerate(outliers)]


# ------------------------------------------------------------------ the limits (pure)
def test_a_far_outlier_is_left_out_of_the_limits() -> None:
    values = [0.951, 0.955, 0.96, 0.962, 0.97, 0.975, 0.98, 0.38]
    lo, hi = axis_limits(values)
    assert 0.94 < lo < 0.951 and 0.98 < hi < 0.99  # the rest fill the axis, with a margin
    assert core_range(values) == (0.951, 0.98)


def test_two_outliers_together_are_left_out() -> None:
    values = [0.38, 0.41, 0.95, 0.955, 0.96, 0.965, 0.97, 0.98]
    assert core_range(values) == (0.95, 0.98)


def test_values_without_a_far_outlier_keep_their_range() -> None:
    assert core_range([0.2, 0.35, 0.5, 0.61, 0.9]) == (0.2, 0.9)  # spread, no gap twice the rest
    assert core_range([0.9, 0.92, 0.94, 0.96, 0.80]) == (0.80, 0.96)  # a step, not a far one


@pytest.mark.parametrize(
    "values",
    [[0.5, 0.5, 0.5, 0.5, 0.9], [0.1, 0.9], [0.7]],
    ids=["the-rest-all-equal", "two-values", "one-value"],
)
def test_nothing_is_left_out_without_a_scale(values: list[float]) -> None:
    assert core_range(values) == (min(values), max(values))
    lo, hi = axis_limits(values)
    assert lo < min(values) and hi > max(values)


def test_at_most_a_quarter_is_left_out() -> None:
    # three far low values of eight: leaving them out would take more than a quarter (two)
    values = [0.0, 0.0, 0.0, 0.9, 0.91, 0.92, 0.93, 0.94]
    assert core_range(values) == (0.0, 0.94)
    assert core_range([*values[1:], 0.95]) == (0.9, 0.95)  # two of eight: they go


# ------------------------------------------------------------------ the picture's plan
def test_the_outlier_is_marked_on_the_edge_not_in_the_limits() -> None:
    records = _study((0.38, 0.05))
    plot = plan_pareto(records, summarize(records, OBJECTIVES))
    assert plot is not None and plot.xlim is not None
    assert plot.xlim[0] > 0.9  # the axes fit the trials at 0.95+, not the one at 0.38
    assert set(plot.outside) == {"out0"}  # ... and it is still drawn: on the left edge, its y kept
    assert plot.outside["out0"] == (plot.xlim[0], 0.05)
    assert plot.ylim[0] < 0.05 < plot.ylim[1]
    assert "out0: 0.38, 0.05" in plot.label("out0")
    for tid in plot.front:  # the front fills the axes
        x, y = plot.points[tid]
        assert plot.xlim[0] < x < plot.xlim[1] and plot.ylim[0] < y < plot.ylim[1]


def test_an_outlier_on_the_front_is_numbered_and_marked() -> None:
    records = _study((0.41, 0.95))  # the most interpretable trial, far below in accuracy
    summary = summarize(records, OBJECTIVES)
    plot = plan_pareto(records, summary)
    assert plot is not None and plot.xlim is not None
    assert "out0" in plot.front and "out0" in plot.outside
    assert plot.label("out0").startswith(f"{plot.front.index('out0') + 1}. out0")
    assert plot.chosen == choose_on_front(records, OBJECTIVES)[0].trial_id  # starred: export's choice
    assert plot.chosen != "out0"


def test_one_objective_fits_its_axis_and_marks_the_outlier_below() -> None:
    records = _study((0.38, 0.3))
    plot = plan_pareto(records, summarize(records, OBJECTIVES[:1]))
    assert plot is not None and plot.xlim is None  # x: the trials in start order
    assert plot.ylim[0] > 0.9 and plot.outside == {"out0": (plot.points["out0"][0], plot.ylim[0])}


def test_the_picture_is_written(tmp_path: Path) -> None:
    records = _study((0.38, 0.05), (0.41, 0.95))
    path = pareto_png(records, summarize(records, OBJECTIVES), tmp_path / "pareto.png")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = pareto_png(records, summarize(records, OBJECTIVES[:1]), tmp_path / "one.png")  # against trial order
    assert one is not None and one.stat().st_size > 0
