"""The answer of a comparison (pipeline.spec.arms), from its studies' tables: per arm and
repeat the Pareto front on the objectives (measured on the validation split) and its
hypervolume against the spec's reference point; per pair of arms the paired difference of
hypervolume over the repeats with its 95% interval, Holm over the table, TOST against the
spec's margin and the verdict (syncmodel.stats); per arm and objective the params'
importances. `syncstudy compare` prints it; the comparison's parent run holds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.hypervolume import hypervolume
from pipeline.paths import storage_of
from pipeline.record.summary import axis_limits, pareto_front
from pipeline.record.tables import StudyTables, TrialRow
from pipeline.spec.arms import ComparisonSpec
from syncmodel import stats


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class RepeatResult:
    """One arm's study of one repeat."""

    arm: str
    repeat: int
    study: str
    rows: list[TrialRow] = field(default_factory=list)  # every trial of the study
    front: list[TrialRow] = field(default_factory=list)  # best first by the first objective
    finished: int = 0  # status ok with every objective finite
    hypervolume: float = math.nan  # NaN: the study has no trial yet (not launched)


@dataclass
class Pair:
    """Arm `a` minus arm `b`: the paired difference of hypervolume over the repeats."""

    a: str
    b: str
    diff: stats.Paired
    p_tost: float
    p_holm: float = math.nan
    p_tost_holm: float = math.nan
    verdict: str = "–"  # a's hypervolume vs b's: better | worse | equivalent | inconclusive


@dataclass
class ComparisonResult:
    spec: ComparisonSpec
    repeats: dict[str, list[RepeatResult]]  # arm → its repeats
    pairs: list[Pair]
    importances: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # arm → metric → param → share

    def arm_hypervolumes(self, arm: str) -> list[float]:
        return [r.hypervolume for r in self.repeats[arm]]

    def pooled_front(self, arm: str) -> list[tuple[int, TrialRow]]:
        """The front of the arm's finished trials over all repeats, as (repeat, row), best
        first by the first objective (what the picture draws)."""
        metrics = [o.metric for o in self.spec.objectives]
        done = [(r.repeat, row) for r in self.repeats[arm] for row in r.rows if _done(row, metrics)]
        keyed = {f"{k}/{row.trial_id}": (k, row) for k, row in done}
        ids = set(pareto_front([(key, [row.metrics[m] for m in metrics]) for key, (_, row) in keyed.items()], self.spec.modes()))
        return _best_first([keyed[i] for i in keyed if i in ids], self.spec)


def _done(row: TrialRow, metrics: list[str]) -> bool:
    return row.status == "ok" and all(_finite(row.metrics.get(m)) for m in metrics)


def _best_first(items: list[tuple[int, TrialRow]], spec: ComparisonSpec) -> list[tuple[int, TrialRow]]:
    first = spec.objectives[0]
    sign = -1.0 if first.mode == "max" else 1.0
    return sorted(items, key=lambda kr: (sign * kr[1].metrics[first.metric], kr[0], kr[1].trial_id))


def study_rows(storage: Path) -> list[TrialRow]:
    """A study's trials from its tables (the compacted ones and any per-trial parts: a
    study still running or interrupted counts with what it has); [] for a study not launched."""
    if not storage.is_dir():
        return []
    return sorted(StudyTables(storage).trials.values(), key=lambda r: r.trial_id)


def repeat_result(spec: ComparisonSpec, arm: str, k: int, rows: list[TrialRow]) -> RepeatResult:
    """Front and hypervolume of one study's trials."""
    metrics = [o.metric for o in spec.objectives]
    modes = spec.modes()
    done = [r for r in rows if _done(r, metrics)]
    ids = set(pareto_front([(r.trial_id, [r.metrics[m] for m in metrics]) for r in done], modes))
    front = [row for _, row in _best_first([(k, r) for r in done if r.trial_id in ids], spec)]
    reference = [spec.reference[m] for m in metrics]
    hv = hypervolume([[r.metrics[m] for m in metrics] for r in front], reference, modes) if rows else math.nan
    return RepeatResult(arm, k, spec.arms[arm][k].name, rows, front, len(done), hv)


def pair_table(spec: ComparisonSpec, hv: dict[str, list[float]]) -> list[Pair]:
    """Every two arms (in spec order, the earlier first): the paired difference of their
    hypervolumes over the repeats (repeat k with repeat k: the same seeds), TOST against the
    margin; both families of p-values Holm-adjusted over the table; the verdict from them
    (higher hypervolume is better)."""
    arms = list(spec.arms)
    pairs: list[Pair] = []
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            diffs = [x - y for x, y in zip(hv[a], hv[b])]
            pairs.append(Pair(a, b, stats.paired_difference(hv[a], hv[b]), stats.tost(diffs, spec.margin)))
    p_holm, _ = stats.holm([p.diff.p for p in pairs])
    t_holm, _ = stats.holm([p.p_tost for p in pairs])
    for pair, ph, th in zip(pairs, p_holm, t_holm):
        pair.p_holm, pair.p_tost_holm = ph, th
        pair.verdict = stats.verdict(pair.diff.mean, ph, th, better="higher")
    return pairs


def compare(spec: ComparisonSpec, importances: bool = True) -> ComparisonResult:
    """The whole answer from the studies' folders (a study not launched yet counts as NaN)."""
    repeats: dict[str, list[RepeatResult]] = {}
    for arm, specs in spec.arms.items():
        repeats[arm] = [repeat_result(spec, arm, k, study_rows(storage_of(s))) for k, s in enumerate(specs)]
    hv = {arm: [r.hypervolume for r in rs] for arm, rs in repeats.items()}
    result = ComparisonResult(spec, repeats, pair_table(spec, hv))
    if importances:
        from pipeline.importance import param_importances

        for arm, rs in repeats.items():
            rows = [row for r in rs for row in r.rows]  # pooled over repeats: one space per arm
            result.importances[arm] = {
                o.metric: param_importances(spec.arms[arm][0], rows, o.metric, o.mode) for o in spec.objectives
            }
    return result


# --------------------------------------------------------------------------- output


def held_out_metrics(row: TrialRow) -> dict[str, float]:
    """The trial's metrics on the test split (never selected on: reported beside the front)."""
    return {m: v for m, v in sorted(row.metrics.items()) if m.startswith("test_") and _finite(v)}


def to_dict(result: ComparisonResult) -> dict[str, Any]:
    """The answer as JSON-able data (`compare --json`, the parent run's comparison.json)."""
    spec = result.spec
    metrics = [o.metric for o in spec.objectives]
    searched = {arm: list(specs[0].searched()) for arm, specs in spec.arms.items()}

    def num(v: Any) -> Any:
        return float(v) if _finite(v) else None

    def member(k: int, row: TrialRow, arm: str) -> dict[str, Any]:
        return {
            "repeat": k, "trial_id": row.trial_id,
            "objectives": {m: num(row.metrics[m]) for m in metrics},
            "test": {m: num(v) for m, v in held_out_metrics(row).items()},
            "params": {n: row.params.get(n) for n in searched[arm]},
        }  # fmt: skip

    return {
        "comparison": spec.name,
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in spec.objectives],
        "reference": dict(spec.reference),
        "equivalence_margin": {"hypervolume": spec.margin},
        "repeats": spec.repeats,
        "samples": spec.samples,
        "arms": {
            arm: {
                "fields": spec.arm_fields[arm],
                "hypervolume": [num(r.hypervolume) for r in rs],
                "hypervolume_mean": num(_mean([r.hypervolume for r in rs])),
                "studies": [
                    {"repeat": r.repeat, "study": r.study, "trials": len(r.rows), "finished": r.finished,
                     "hypervolume": num(r.hypervolume), "front": [member(r.repeat, row, arm) for row in r.front]}
                    for r in rs
                ],
                "front": [member(k, row, arm) for k, row in result.pooled_front(arm)],
                "importances": result.importances.get(arm, {}),
            }
            for arm, rs in result.repeats.items()
        },
        "pairs": [
            {
                "a": p.a, "b": p.b, "n": p.diff.n, "mean": num(p.diff.mean), "sd": num(p.diff.sd),
                "low": num(p.diff.low), "high": num(p.diff.high), "p": num(p.diff.p), "p_holm": num(p.p_holm),
                "p_tost": num(p.p_tost), "p_tost_holm": num(p.p_tost_holm), "verdict": p.verdict,
            }
            for p in result.pairs
        ],
    }  # fmt: skip


def _mean(values: list[float]) -> float:
    have = [v for v in values if _finite(v)]
    return sum(have) / len(have) if have else math.nan


def _f(v: Any, spec: str = ".4g") -> str:
    return format(v, spec) if _finite(v) else "-"


def report(result: ComparisonResult) -> list[str]:
    """The answer as text lines: per arm the hypervolumes and the pooled front with its test
    metrics, the pair table with the verdict rules, the importances."""
    spec = result.spec
    metrics = [o.metric for o in spec.objectives]
    ref = ", ".join(f"{m} {spec.reference[m]:g}" for m in metrics)
    lines = [
        f"comparison {spec.name!r}{' (smoke form)' if spec.smoke else ''}: {len(spec.arms)} arms x "
        f"{spec.repeats} repeats x {spec.samples} trials; objectives "
        + ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives)
        + f"; hypervolume against the reference point ({ref})",
    ]
    for arm, rs in result.repeats.items():
        hvs = "  ".join(f"r{r.repeat} {_f(r.hypervolume)} ({r.finished}/{len(r.rows)})" for r in rs)
        lines += ["", f"arm {arm}: hypervolume {hvs}   mean {_f(_mean([r.hypervolume for r in rs]))}"]
        front = result.pooled_front(arm)
        if not front:
            lines.append("  no finished trial yet")
            continue
        tests = sorted({m for _, row in front for m in held_out_metrics(row)})
        names = list(spec.arms[arm][0].searched())
        rows = [["repeat", "trial", *metrics, *tests, *names]]
        for k, row in front:
            rows.append([f"r{k}", row.trial_id, *(_f(row.metrics[m]) for m in metrics),
                         *(_f(row.metrics.get(m)) for m in tests), *(_param(row.params.get(n)) for n in names)])  # fmt: skip
        split = spec.arms[arm][0].evaluation.split
        where = (
            "validation split" if split == "val"
            else "evaluation metrics on the test split's first images: selected on them"
        )  # fmt: skip
        lines += [f"  front over its repeats ({where}; test metrics beside, never selected on):"]
        lines += ["  " + line for line in _table(rows)]
        for metric, found in result.importances.get(arm, {}).items():
            shares = ", ".join(f"{n} {v:.2f}" for n, v in found.items()) if found else "n/a (the objective or no param varies)"
            lines.append(f"  importance for {metric} (fANOVA): {shares}")
    lines += ["", f"paired difference of hypervolume (a - b) over {spec.repeats} repeats, 95% t-interval:"]
    rows = [["a", "b", "n", "mean", "95% interval", "p", "p Holm", "TOST p Holm", "verdict"]]
    for p in result.pairs:
        rows.append([p.a, p.b, str(p.diff.n), _f(p.diff.mean), f"[{_f(p.diff.low)}, {_f(p.diff.high)}]",
                     _f(p.diff.p, ".3g"), _f(p.p_holm, ".3g"), _f(p.p_tost_holm, ".3g"), p.verdict])  # fmt: skip
    lines += ["  " + line for line in _table(rows)]
    lines.append(
        f"verdicts: better/worse (a's hypervolume vs b's) where the Holm-adjusted paired t-test p < "
        f"{stats.ALPHA}; else 'equivalent' only where the Holm-adjusted TOST p < {stats.ALPHA} at the "
        f"margin ±{spec.margin:g} fixed in the spec; else 'inconclusive'"
    )
    return lines


def _param(v: Any) -> str:
    return _f(v) if isinstance(v, float) else str(v)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def fronts_png(result: ComparisonResult, path: Path) -> Path | None:
    """The arms' fronts overlaid on the first two objectives: each arm's finished trials
    (all repeats) as faint dots, its pooled front as a staircase; None with fewer than two
    objectives or no finished trial."""
    spec = result.spec
    if len(spec.objectives) < 2:
        return None
    (mx, modex), (my, modey) = [(o.metric, o.mode) for o in spec.objectives[:2]]
    metrics = [o.metric for o in spec.objectives]
    done = {arm: [row for r in rs for row in r.rows if _done(row, metrics)] for arm, rs in result.repeats.items()}
    xs = [row.metrics[mx] for rows in done.values() for row in rows]
    ys = [row.metrics[my] for rows in done.values() for row in rows]
    if not xs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        for i, (arm, rows) in enumerate(done.items()):
            color = f"C{i % 10}"
            ax.scatter([r.metrics[mx] for r in rows], [r.metrics[my] for r in rows], c=color, s=12, alpha=0.3)
            front = sorted((row.metrics[mx], row.metrics[my]) for _, row in result.pooled_front(arm))
            hv = _mean(result.arm_hypervolumes(arm))
            if front:
                where = "pre" if modex == "max" else "post"
                ax.step([x for x, _ in front], [y for _, y in front], where=where, c=color, lw=1.5,
                        marker="o", ms=5, label=f"{arm} (HV mean {_f(hv)})")  # fmt: skip
        ax.set_xlim(*axis_limits(xs))
        ax.set_ylim(*axis_limits(ys))
        ax.set_xlabel(f"{mx} ({modex})")
        ax.set_ylabel(f"{my} ({modey})")
        ax.set_title(f"{spec.name}: Pareto fronts over {spec.repeats} repeats", fontsize=10)
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
