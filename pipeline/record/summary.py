"""What a study's parent run holds at its end: each objective's best value and the trial that
reached it, the Pareto front, a picture of it and the trials table (written by
`Tracker.finish_parent`; `syncstudy pareto` and `runs` compute the same from the child runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.spec.metrics import METRICS
from syncmodel.errors import SyncStudyError


def pareto_front(points: list[tuple[str, list[float]]], modes: list[str]) -> list[str]:
    """Ids of the non-dominated points (each objective turned to 'max' first)."""
    signed = [(pid, [v if m == "max" else -v for v, m in zip(vals, modes)]) for pid, vals in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [pid for pid, a in signed if not any(dominates(b, a) for qid, b in signed if qid != pid)]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class StudySummary:
    objectives: list[tuple[str, str]]
    best: dict[str, tuple[float, str]] = field(default_factory=dict)  # metric → (value, trial id)
    front: list[str] = field(default_factory=list)  # trial ids, best first by the first objective
    finished: int = 0  # status ok with every objective finite (the trials the front is taken over)
    trials: int = 0

    def metrics(self) -> dict[str, float]:
        """The parent run's metrics: `best/<objective>`, `pareto_front_size`, `trials_finished`."""
        out = {f"best/{m}": v for m, (v, _) in self.best.items()}
        return {**out, "pareto_front_size": float(len(self.front)), "trials_finished": float(self.finished),
                "trials": float(self.trials)}  # fmt: skip

    def tags(self) -> dict[str, str]:
        """The parent run's tags: `syncstudy.best.<objective>` = the trial id, the front's ids."""
        out = {f"syncstudy.best.{m}": tid for m, (_, tid) in self.best.items()}
        return {**out, "syncstudy.pareto_front": ",".join(self.front)}


def summarize(records: list[Any], objectives: list[tuple[str, str]]) -> StudySummary:
    """`records`: `TrialRecord`s (trial_id, status, metrics); ties go to the earlier trial, as
    in `syncstudy runs`. Only trials with status ok and every objective finite count, as in
    `syncstudy pareto`."""
    metrics = [m for m, _ in objectives]
    modes = [mode for _, mode in objectives]
    done = [r for r in records if r.status == "ok" and all(_finite(r.metrics.get(m)) for m in metrics)]
    out = StudySummary(objectives=list(objectives), finished=len(done), trials=len(records))
    for m, mode in objectives:
        have = [r for r in records if r.status == "ok" and _finite(r.metrics.get(m))]
        if have:
            best = sorted(have, key=lambda r: -r.metrics[m] if mode == "max" else r.metrics[m])[0]
            out.best[m] = (float(best.metrics[m]), best.trial_id)
    if metrics:
        ids = set(pareto_front([(r.trial_id, [r.metrics[m] for m in metrics]) for r in done], modes))
        first, mode0 = objectives[0]
        ranked = sorted((r for r in done if r.trial_id in ids), key=lambda r: -r.metrics[first] if mode0 == "max" else r.metrics[first])
        out.front = [r.trial_id for r in ranked]
    return out


OUTLIER_GAP = 2.0  # an extreme value this many times the rest's span away from it is left off the axes
AXIS_PAD = 0.08  # each side of the axis range, as a share of the range


def core_range(values: list[float], gap: float = OUTLIER_GAP) -> tuple[float, float]:
    """The range of `values` (finite, at least one) without its far outliers: the lowest (or
    highest) few values are left out when the step from them to the rest is more than `gap`
    times the span of the rest, again while any such cut is left; at most a quarter of the
    values in all (one of three), never below two, and never against a rest whose values are
    all equal (no scale to compare with)."""
    vals = sorted(values)
    budget = max(1, len(vals) // 4) if len(vals) >= 3 else 0
    lo, hi = 0, len(vals) - 1
    while budget > 0:
        cuts = []  # (how far, new lo, new hi)
        for k in range(1, budget + 1):
            if hi - lo - k >= 1 and vals[hi] > vals[lo + k]:
                cuts.append(((vals[lo + k] - vals[lo + k - 1]) / (vals[hi] - vals[lo + k]), lo + k, hi))
            if hi - lo - k >= 1 and vals[hi - k] > vals[lo]:
                cuts.append(((vals[hi - k + 1] - vals[hi - k]) / (vals[hi - k] - vals[lo]), lo, hi - k))
        if not cuts or max(cuts)[0] <= gap:
            break
        _, new_lo, new_hi = max(cuts)
        budget -= (new_lo - lo) + (hi - new_hi)
        lo, hi = new_lo, new_hi
    return vals[lo], vals[hi]


def axis_limits(values: list[float], pad: float = AXIS_PAD, gap: float = OUTLIER_GAP) -> tuple[float, float]:
    """Axis limits that `core_range(values)` fills, with `pad` of its span either side (a
    single value: ±5% of it, or ±0.05 at 0); the far outliers fall outside."""
    lo, hi = core_range(values, gap)
    margin = (hi - lo) * pad if hi > lo else (abs(lo) * 0.05 or 0.05)
    return lo - margin, hi + margin


@dataclass
class ParetoPlot:
    """What `pareto_png` draws, decided without matplotlib (tests/pipeline/test_pareto_plot.py):
    points (trial id, x, y), the axis limits, the front numbered best first (1, 2, ...), the
    trial `syncstudy export` takes by default, and the points outside the limits (drawn at
    the edge, clamped, with their values)."""

    xlabel: str
    ylabel: str
    points: dict[str, tuple[float, float]]
    front: list[str]
    xlim: tuple[float, float] | None  # None: matplotlib's (the trial order axis)
    ylim: tuple[float, float]
    chosen: str | None = None
    outside: dict[str, tuple[float, float]] = field(default_factory=dict)  # trial → clamped (x, y)

    def label(self, trial_id: str) -> str:
        """The key's line for a front trial or an outlier: its number (front), id and values."""
        x, y = self.points[trial_id]
        num = f"{self.front.index(trial_id) + 1}. " if trial_id in self.front else ""
        mark = " (export)" if trial_id == self.chosen else ""
        return f"{num}{trial_id}{mark}: {x:.4g}, {y:.4g}" if self.xlim is not None else f"{num}{trial_id}{mark}: {y:.4g}"


def plan_pareto(records: list[Any], summary: StudySummary) -> ParetoPlot | None:
    """The layout of the Pareto picture (see `ParetoPlot`); None when no trial finished."""
    metrics = [m for m, _ in summary.objectives]
    done = [r for r in records if r.status == "ok" and all(_finite(r.metrics.get(m)) for m in metrics)]
    if not done or not metrics:
        return None
    modes = [mode for _, mode in summary.objectives]
    if len(metrics) >= 2:
        points = {r.trial_id: (float(r.metrics[metrics[0]]), float(r.metrics[metrics[1]])) for r in done}
        xlabel, ylabel = f"{metrics[0]} ({modes[0]})", f"{metrics[1]} ({modes[1]})"
    else:
        points = {r.trial_id: (float(i), float(r.metrics[metrics[0]])) for i, r in enumerate(done)}
        xlabel, ylabel = "trial (start order)", f"{metrics[0]} ({modes[0]})"
    xlim = axis_limits([x for x, _ in points.values()]) if len(metrics) >= 2 else None
    ylim = axis_limits([y for _, y in points.values()])
    try:
        chosen = default_choice(records, summary.objectives).trial_id
    except SyncStudyError:
        chosen = None
    plot = ParetoPlot(xlabel, ylabel, points, list(summary.front), xlim, ylim, chosen)
    for tid, (x, y) in points.items():
        cx = x if xlim is None else min(max(x, xlim[0]), xlim[1])
        cy = min(max(y, ylim[0]), ylim[1])
        if (cx, cy) != (x, y):
            plot.outside[tid] = (cx, cy)
    return plot


def _edge_marker(plot: ParetoPlot, x: float, y: float, cx: float, cy: float) -> str:
    """A triangle pointing the way the clamped point lies off the axes."""
    if cy != y:
        return "v" if y < cy else "^"
    return "<" if x < cx else ">"


def pareto_png(records: list[Any], summary: StudySummary, path: Path) -> Path | None:
    """All finished trials on the first two objectives (one objective: against trial order),
    the front drawn as a step line, numbered best first with a key beside the axes, the trial
    `export` takes starred; the axes fit the front and its neighbourhood, and a far outlier
    is drawn as a triangle on the edge it lies beyond (its values in the key). None when no
    trial finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot = plan_pareto(records, summary)
    if plot is None:
        return None
    fig, ax = plt.subplots(figsize=(9, 4.8), dpi=110)
    try:
        ax.set_xlabel(plot.xlabel)
        ax.set_ylabel(plot.ylabel)
        ax.set_ylim(*plot.ylim)
        if plot.xlim is not None:
            ax.set_xlim(*plot.xlim)
        front = set(plot.front)
        inside = {t: p for t, p in plot.points.items() if t not in plot.outside}
        rest = [p for t, p in inside.items() if t not in front]
        on = [inside[t] for t in plot.front if t in inside]
        ax.scatter([x for x, _ in rest], [y for _, y in rest], c="0.6", s=22, label="trial", zorder=2)
        ax.scatter([x for x, _ in on], [y for _, y in on], c="C3", s=36, label="Pareto front", zorder=3)
        if plot.xlim is not None and len(plot.front) > 1:
            line = sorted(plot.outside.get(t, plot.points[t]) for t in plot.front)
            # the edge of what the front dominates: through the corners on the worse side
            where = "pre" if summary.objectives[0][1] == "max" else "post"
            ax.step([x for x, _ in line], [y for _, y in line], where=where, c="C3", lw=1, zorder=1)
        if plot.chosen is not None and plot.chosen in inside:
            cx, cy = inside[plot.chosen]
            ax.scatter([cx], [cy], marker="*", s=160, facecolors="none", edgecolors="k", lw=1,
                       label="export's choice", zorder=4)  # fmt: skip
        for i, tid in enumerate(plot.front):
            if tid in inside:  # numbers alternate above-left and below-right along the front
                dx, dy = (-4, 4) if i % 2 == 0 else (4, -4)
                ax.annotate(str(i + 1), inside[tid], xytext=(dx, dy), textcoords="offset points", fontsize=8,
                            ha="right" if dx < 0 else "left", va="bottom" if dy > 0 else "top", color="C3")  # fmt: skip
        if plot.outside:
            edge = [(tid, *plot.points[tid], *plot.outside[tid]) for tid in plot.outside]
            for tid, x, y, cx, cy in edge:
                ax.scatter([cx], [cy], marker=_edge_marker(plot, x, y, cx, cy), s=60, clip_on=False, zorder=5,
                           c="C3" if tid in front else "0.4")  # fmt: skip
                ax.annotate(tid, (cx, cy), xytext=(6 if cx < plot.xlim[1] else -6, 0) if plot.xlim else (6, 0),
                            textcoords="offset points", fontsize=7, va="center",
                            ha="left" if not plot.xlim or cx < plot.xlim[1] else "right", annotation_clip=False)  # fmt: skip
            ax.scatter([], [], marker="<", c="0.4", s=40, label="beyond the axes")
        lines = ["front (best first):", *(plot.label(t) for t in plot.front[:KEY_LINES])]
        if len(plot.front) > KEY_LINES:
            lines.append(f"... {len(plot.front) - KEY_LINES} more")
        if plot.outside:
            lines += ["", "beyond the axes:", *(plot.label(t) for t in list(plot.outside)[:KEY_LINES])]
        fig.text(0.69, 0.92, "\n".join(lines), fontsize=7, va="top", ha="left", family="monospace")
        ax.set_title(f"{len(plot.front)} of {len(plot.points)} finished trials on the front", fontsize=10)
        ax.legend(loc="best", fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout(rect=(0, 0, 0.68, 1))
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


KEY_LINES = 15  # front trials listed beside the picture


def trials_table(records: list[Any], searched: list[str], summary: StudySummary) -> dict[str, list[Any]]:
    """The trials as columns (MLflow's `log_table`): id, status, on the front, the searched
    params, every final metric (None where a trial has none)."""
    names = sorted({k for r in records for k in r.metrics})
    front = set(summary.front)
    table: dict[str, list[Any]] = {"trial_id": [], "status": [], "pareto": []}
    table.update({f"params.{p}": [] for p in searched})
    table.update({m: [] for m in names})
    for r in records:
        table["trial_id"].append(r.trial_id)
        table["status"].append(r.status)
        table["pareto"].append(r.trial_id in front)
        for p in searched:
            table[f"params.{p}"].append(r.params.get(p))
        for m in names:
            v = r.metrics.get(m)
            table[m].append(float(v) if _finite(v) else None)
    return table


# How `runs`, `pareto` and `export` pick and order trials (`TrialRecord`s: trial_id,
# status, metrics), in launch order where values tie.
def metric_mode(metric: str, objectives: list[tuple[str, str]]) -> str:
    """The better direction of `metric`: the study's objective mode, else the catalogue's."""
    for name, mode in objectives:
        if name == metric:
            return mode
    if metric in METRICS:
        return METRICS[metric].mode
    return "min" if metric.endswith(("loss", "_time", "instability")) else "max"


def rank(records: list[Any], metric: str, mode: str) -> list[Any]:
    """Trials with a finite `metric`, best first (ties: the earlier trial)."""
    have = [r for r in records if _finite(r.metrics.get(metric))]
    return sorted(have, key=lambda r: -r.metrics[metric] if mode == "max" else r.metrics[metric])


def choose(
    records: list[Any], *, trial: str | None, metric: str, mode: str
) -> Any:
    if trial is not None:
        for r in records:
            if r.trial_id == trial:
                return r
        known = ", ".join(r.trial_id for r in records) or "none"
        raise SyncStudyError(f"--trial {trial}: no such trial in the study (trials: {known})")
    ok = [r for r in records if r.status == "ok"]
    ranked = rank(ok, metric, mode)
    if not ranked:
        raise SyncStudyError(f"no finished trial has a value for {metric!r}")
    return ranked[0]


FRONT_TOLERANCE = 0.01  # "within 1 point" of the best first objective (accuracies are in [0, 1])


def choose_on_front(
    records: list[Any], objectives: list[tuple[str, str]], tolerance: float = FRONT_TOLERANCE
) -> tuple[Any, list[Any]]:
    """A multi-objective study's default export: among the Pareto front's trials (finished,
    every objective finite) whose first objective is within `tolerance` of the best, the one
    best on the second objective (ties: the better first objective, then the earlier trial);
    e.g. the most interpretable trial within 1 point of the best accuracy. Returns (chosen,
    the front best first by the first objective)."""
    by_id = {r.trial_id: r for r in records}
    front = [by_id[t] for t in summarize(records, objectives).front]
    if not front:
        names = ", ".join(m for m, _ in objectives)
        raise SyncStudyError(f"no finished trial has a value for every objective ({names})")
    (first, mode1), (second, mode2) = objectives[0], objectives[1]
    sign1 = 1 if mode1 == "max" else -1
    sign2 = 1 if mode2 == "max" else -1
    best = max(sign1 * r.metrics[first] for r in front)
    near = [r for r in front if sign1 * r.metrics[first] >= best - tolerance]
    order = {r.trial_id: i for i, r in enumerate(records)}
    chosen = max(near, key=lambda r: (sign2 * r.metrics[second], sign1 * r.metrics[first], -order[r.trial_id]))
    return chosen, front


def default_choice(records: list[Any], objectives: list[tuple[str, str]]) -> Any:
    """The trial `syncstudy export` takes with neither `--trial` nor `--metric`: with two or
    more objectives `choose_on_front`'s, else the best by the (first) objective. Raises
    `SyncStudyError` when no finished trial has the values it needs."""
    if len(objectives) >= 2:
        return choose_on_front(records, objectives)[0]
    metric = objectives[0][0] if objectives else "test_acc"
    return choose(records, trial=None, metric=metric, mode=metric_mode(metric, objectives))
