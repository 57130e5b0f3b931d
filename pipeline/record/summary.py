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


def pareto_png(records: list[Any], summary: StudySummary, path: Path) -> Path | None:
    """All finished trials on the first two objectives (one objective: against trial order),
    the front drawn as a step line and marked; None when no trial finished."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m, _ in summary.objectives]
    done = [r for r in records if r.status == "ok" and all(_finite(r.metrics.get(m)) for m in metrics)]
    if not done or not metrics:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    try:
        if len(metrics) >= 2:
            x_of = lambda r: r.metrics[metrics[0]]  # noqa: E731
            y_of = lambda r: r.metrics[metrics[1]]  # noqa: E731
            ax.set_xlabel(f"{metrics[0]} ({summary.objectives[0][1]})")
            ax.set_ylabel(f"{metrics[1]} ({summary.objectives[1][1]})")
        else:
            order = {r.trial_id: i for i, r in enumerate(done)}
            x_of = lambda r: order[r.trial_id]  # noqa: E731
            y_of = lambda r: r.metrics[metrics[0]]  # noqa: E731
            ax.set_xlabel("trial (start order)")
            ax.set_ylabel(f"{metrics[0]} ({summary.objectives[0][1]})")
        front = set(summary.front)
        rest = [r for r in done if r.trial_id not in front]
        on = sorted((r for r in done if r.trial_id in front), key=x_of)
        ax.scatter([x_of(r) for r in rest], [y_of(r) for r in rest], c="0.6", s=25, label="trial")
        ax.scatter([x_of(r) for r in on], [y_of(r) for r in on], c="C3", s=40, label="Pareto front")
        if len(metrics) >= 2 and len(on) > 1:
            ax.step([x_of(r) for r in on], [y_of(r) for r in on], where="post", c="C3", lw=1)
        for r in on:
            ax.annotate(r.trial_id, (x_of(r), y_of(r)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{len(on)} of {len(done)} finished trials on the front")
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


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
