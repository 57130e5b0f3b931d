"""Sample efficiency of the samplers (issue 28): the hypervolume of a study's finished trials
after 8, 16, 24 and 48 trials, for NSGA-II, multi-objective TPE, the GP sampler and random,
on the digits study's search space and on the rigid-part comparison's (`sinn` arm).

Method: tabular replay. Training is the cost (15-30 s a trial on the 2-core VM), so each
space has a table of real trials, trained once: random-sampler studies over the space
(bench/sampler_table_digits.yaml, bench/sampler_table_shapes.yaml; more finished study
folders of the same space, train settings (the seed aside) and evaluation may be pooled; any
other is refused, naming the setting). A replay drives the sampler as
`launch` does (pipeline.search builds the distributions and the sampler from the spec; at
most `concurrency` trials run at once and end in the order they started; a proposal that
repeats a running or finished trial is not a trial, as in pipeline.search.StudySearcher) and
answers each trial with the table's nearest row: fewest mismatched choices first, then the
Euclidean distance with every numeric dimension scaled to [0, 1] (log ranges on the log
scale). The sampler is told that row's objective values (a row that failed or diverged: the
trial FAILs, as in a study). What it cannot see: structure finer than the table's spacing;
two suggestions near one row get the same values.

Reported per space, sampler and seed: the hypervolume (pipeline.hypervolume) of the first n
finished trials for every n up to the budget against a reference fixed here, the distinct
table rows touched, the distance from each suggestion to its row; per sampler the mean and
spread over seeds; and how many trials the study's own sampler (studies/digits.yaml,
studies/compare-shapes.yaml) needs for random's mean 48-trial hypervolume (target: <= 16).

    python bench/sampler_efficiency.py --digits runs/sampler-table-digits \\
        --shapes runs/sampler-table-shapes runs/compare-shapes/sinn-r0 ... \\
        --seeds 10 --json docs/experiments/sampler_efficiency.json \\
        --png docs/experiments/sampler_efficiency.png

    # the replay against real training: the suggestions that became finished trials 8, 16,
    # 24 and 48 of one replay, each trained and evaluated through `syncstudy train` and
    # `syncstudy evaluate` with the table's settings; replayed vs real objective values
    python bench/sampler_efficiency.py --check digits --digits runs/sampler-table-digits --out runs/sampler-check

Samplers are named as a spec's `sampler:` section, `name[:key=value,...]`
(`nsga2:population_size=4`); `default` is the study's own. Exit 2 with one line on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline import search
from pipeline.hypervolume import hypervolume
from pipeline.lock import held
from pipeline.record.digest import check
from pipeline.record.tables import REBUILD, TRIALS, has_parts, read_trials
from pipeline.record.tracking import TERMINAL
from pipeline.repeats import REASKS, point_of, space_size
from pipeline.safe_files import refuse_link
from pipeline.spec import StudySpec, load_spec
from pipeline.spec.arms import load_comparison
from pipeline.spec.reading import read_yaml
from pipeline.trial import trial_config
from syncmodel.config import TrainConfig
from syncmodel.errors import SyncStudyError

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = (8, 16, 24, 48)
TARGET_TRIALS = 16  # issue 28: the default reaches random's 48-trial hypervolume by this many


@dataclass(frozen=True)
class Space:
    """A benchmarked search space: its table's spec, the study whose sampler is the default
    (and the arm of a comparison), the hypervolume's reference point."""

    table_spec: Path
    study: Path
    arm: str | None
    reference: dict[str, float]


SPACES = {
    # both objectives lie in [0, 1]; as bench/mo_asha.py
    "digits": Space(ROOT / "bench/sampler_table_digits.yaml", ROOT / "studies/digits.yaml", None,
                    {"val_acc": 0.0, "interpretability": 0.0}),
    # compare-shapes.yaml's `reference` (fixed before its run; a test keeps the two equal)
    "shapes": Space(ROOT / "bench/sampler_table_shapes.yaml", ROOT / "studies/compare-shapes.yaml", "sinn",
                    {"val_acc": 0.0, "location_instability": 0.2, "interpretability": 0.0}),
}  # fmt: skip

SAMPLERS = (
    "random", "nsga2:population_size=4", "nsga2:population_size=8", "tpe",
    "tpe:n_startup_trials=6", "gp", "gp:n_startup_trials=6", "default",
)  # fmt: skip

# Trial config fields a pooled folder may set differently from the table's spec: the seed (a
# comparison's repeat k trains with seed k) and where or how it ran, which change no result.
FREE_FIELDS = ("seed", "device", "num_workers", "checkpoint_every", "data_root", "download")


class BenchError(SyncStudyError):
    """Bad input to the benchmark: the message names the flag, file or folder."""


# --------------------------------------------------------------------------- the table


def _stored(value: Any) -> Any:
    """A param value as trials.parquet stores it (lists and mappings as JSON text)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


@dataclass
class Table:
    """The real trials of one space, in a fixed order (folder, then trial id).

    `coords`: (rows, numeric dims) positions in [0, 1]; `choices`: (rows, categorical dims)
    stored values; `values`: each row's objectives, None for a trial that did not finish with
    finite ones (status other than ok, or a missing value)."""

    spec: StudySpec
    ids: list[str]
    numeric: list[str]
    categorical: list[str]
    coords: np.ndarray
    choices: list[tuple[Any, ...]]
    values: list[tuple[float, ...] | None]
    commits: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def scale(value: float, dist: Any) -> float:
    """`value`'s position in a numeric distribution's range, in [0, 1] (log ranges on the log
    scale); 0 for a range of one value."""
    low, high = float(dist.low), float(dist.high)
    if high == low:
        return 0.0
    if dist.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (float(value) - low) / (high - low)


def table_of(spec: StudySpec, folders: Sequence[tuple[str, list[Any]]]) -> Table:
    """A `Table` from (label, TrialRow list) pairs: every terminal row, checked against the
    spec (searched values inside the space, the other train settings equal but `FREE_FIELDS`)."""
    dists = search.distributions(spec)
    numeric = [n for n, d in dists.items() if not hasattr(d, "choices")]
    categorical = [n for n, d in dists.items() if hasattr(d, "choices")]
    metrics = [o.metric for o in spec.objectives]
    expected = {**spec.train.to_dict(), **search.fixed_params(spec)}
    ids, coords, choices, values = [], [], [], []
    commits: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for label, rows in folders:
        for row in sorted(rows, key=lambda r: r.trial_id):
            where = f"{label}: trial {row.trial_id}"
            if row.status not in TERMINAL:
                raise BenchError(f"{where} has status {row.status!r}: not a finished study's table")
            for name, want in expected.items():
                if name in dists or name in FREE_FIELDS or name not in row.params:
                    continue
                if not _same(row.params[name], _stored(want)):
                    raise BenchError(
                        f"{where}: {name} is {row.params[name]!r}, the table's spec has {_stored(want)!r} "
                        f"({spec.source.name}): another study's trial"
                    )
            position = []
            for name in numeric:
                v = row.params.get(name)
                d = dists[name]
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not d.low <= v <= d.high:
                    raise BenchError(f"{where}: {name} = {v!r} is outside the space [{d.low}, {d.high}]")
                position.append(scale(v, d))
            picked = []
            for name in categorical:
                v = row.params.get(name)
                allowed = [_stored(c) for c in spec.search[name].choices or ()]
                if v not in allowed:
                    raise BenchError(f"{where}: {name} = {v!r} is not one of the space's choices {allowed}")
                picked.append(v)
            got = [row.metrics.get(m) for m in metrics]
            ok = row.status == "ok" and all(isinstance(v, (int, float)) and math.isfinite(v) for v in got)
            ids.append(f"{label}/{row.trial_id}")
            coords.append(position)
            choices.append(tuple(picked))
            values.append(tuple(float(v) for v in got) if ok else None)
            commits[str(row.commit)] = commits.get(str(row.commit), 0) + 1
            statuses[row.status] = statuses.get(row.status, 0) + 1
    if not any(v is not None for v in values):
        raise BenchError(f"{', '.join(label for label, _ in folders)}: no finished trial to replay")
    array = np.asarray(coords, dtype=float).reshape(len(ids), len(numeric))
    return Table(spec, ids, numeric, categorical, array, choices, values, commits, statuses)


def read_folder(folder: Path, spec: StudySpec) -> list[Any]:
    """A finished study's trials from its trials.parquet, as `runs` and `pareto` read them: the
    folder not held by a driver, its tables compacted and matching their digest, its trials
    evaluated as `spec` evaluates them (its study.yaml's `evaluation`, pictures aside: the
    table holds the values, not how they were measured)."""
    if not folder.is_dir():
        raise BenchError(f"{folder}: no such study folder")
    if held(folder):
        raise BenchError(f"{folder}: a driver holds it (the study runs); replay it once it has ended")
    if has_parts(folder):
        raise BenchError(f"{folder}: per-trial tables not compacted (the study runs, or its driver died)")
    if not check(folder, TRIALS, REBUILD):  # a mismatch raises DamagedFile, naming the file
        raise BenchError(f"{folder}: no {TRIALS} with a digest (tables.sha256): not a finished study's table")
    saved = folder / "study.yaml"
    refuse_link(saved)
    if not saved.is_file():
        raise BenchError(f"{saved}: missing: how the folder's trials were evaluated is unknown")
    doc = read_yaml(saved)
    evaluation = dict(doc.get("evaluation") or {}) if isinstance(doc, dict) else {}
    want = dataclasses.asdict(spec.evaluation)
    evaluation.pop("pictures", None)
    want.pop("pictures", None)
    if evaluation != want:
        # a key the saved spec lacks is a setting of an older release: not known to be the same
        raise BenchError(
            f"{saved}: its trials were evaluated with {evaluation}, the table's spec ({spec.source.name}) "
            f"evaluates with {want}: not the same measurement"
        )
    return read_trials(folder) or []


def nearest(table: Table, params: dict[str, Any]) -> tuple[int, float, int]:
    """The row that answers a suggestion (`params`: decoded searched values): the fewest
    mismatched choices, then the smallest Euclidean distance in the scaled numeric
    dimensions, then the first in table order. Returns (row, distance, mismatches)."""
    dists = search.distributions(table.spec)
    q = np.array([scale(params[n], dists[n]) for n in table.numeric], dtype=float)
    d2 = ((table.coords - q) ** 2).sum(axis=1) if table.numeric else np.zeros(len(table))
    want = tuple(_stored(params[n]) for n in table.categorical)
    mismatches = np.array([sum(a != b for a, b in zip(row, want)) for row in table.choices], dtype=float)
    # every scaled coordinate lies in [0, 1], so d2 <= len(numeric): one mismatch outweighs any distance
    key = mismatches * (len(table.numeric) + 1) + d2
    i = int(np.argmin(key))
    return i, float(math.sqrt(d2[i])), int(mismatches[i])


# --------------------------------------------------------------------------- one replay


@dataclass
class Replay:
    """One sampler's run over a table: finished trials in the order they ended."""

    rows: list[int] = field(default_factory=list)  # table row of each finished trial
    suggested: list[dict[str, Any]] = field(default_factory=list)  # its decoded params
    distances: list[float] = field(default_factory=list)
    mismatches: list[int] = field(default_factory=list)
    reused: int = 0  # repeats of a finished trial, told its values, not trials
    waited: int = 0  # repeats of a running trial, told its values when it ended
    trained_repeats: int = 0
    seconds: float = 0.0

    def hypervolumes(self, table: Table, reference: Sequence[float]) -> list[float]:
        """Hypervolume of the first n finished trials, n = 1..len(rows)."""
        modes = [o.mode for o in table.spec.objectives]
        out, done = [], []
        for r in self.rows:
            if table.values[r] is not None:
                done.append(table.values[r])
            out.append(hypervolume(done, reference, modes) if done else 0.0)
        return out

    def distinct(self, n: int) -> int:
        return len(set(self.rows[:n]))


def sampler_spec(table_spec: Path, section: dict[str, Any], budget: int, smoke: bool = False) -> StudySpec:
    """The table's spec with `section` as its sampler and `budget` samples, checked as
    `validate` checks a spec (a bad sampler section: one line naming the field)."""
    base = {"name": "random", "seed": None, "n_startup_trials": None, "population_size": None}
    return load_spec(
        table_spec, smoke=smoke, overrides={"sampler": {**base, **section}, "samples": budget},
        check_data=False, writable=False,
    )  # fmt: skip


def replay(spec: StudySpec, table: Table, budget: int) -> Replay:
    """Drive `spec`'s sampler (its seed included) for `budget` finished trials, each answered
    by its nearest table row."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    dists = search.distributions(spec)
    size = space_size(dists)
    study = optuna.create_study(
        directions=["maximize" if o.mode == "max" else "minimize" for o in spec.objectives],
        sampler=search.make_sampler(spec),
    )
    out = Replay()
    points: dict[Any, int] = {}  # point → Optuna number of the trial that trains it (running or COMPLETE)
    point_of_trial: dict[int, Any] = {}
    finished: dict[int, tuple[float, ...] | None] = {}  # Optuna number → values (None: FAIL)
    held_by: dict[int, list[Any]] = {}
    running: deque[tuple[Any, int]] = deque()
    asked = 0

    def tell(trial: Any, values: tuple[float, ...] | None) -> None:
        if values is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, list(values))

    while len(out.rows) < budget:
        while len(running) < max(1, spec.concurrency) and asked < budget:
            for asks in range(REASKS + 1):
                trial = study.ask(dists)
                point = point_of(trial.params, dists)
                same = points.get(point)
                if same is None:
                    break
                if asks == REASKS or (size is not None and len(points) >= size):
                    out.trained_repeats += 1
                    break
                if same in finished:
                    tell(trial, finished[same])
                    out.reused += 1
                else:
                    held_by.setdefault(same, []).append(trial)
                    out.waited += 1
            points.setdefault(point, trial.number)
            point_of_trial[trial.number] = point
            params = search.decode_params(spec.search, trial.params)
            row, distance, mismatched = nearest(table, params)
            running.append((trial, row))
            out.suggested.append(params)
            out.distances.append(distance)
            out.mismatches.append(mismatched)
            asked += 1
        trial, row = running.popleft()  # trials end in the order they started
        values = table.values[row]
        finished[trial.number] = values
        if values is None and points.get(point_of_trial[trial.number]) == trial.number:
            del points[point_of_trial[trial.number]]  # a failed point may be proposed and trained again
        tell(trial, values)
        for other in held_by.pop(trial.number, []):
            tell(other, values)
        out.rows.append(row)
    # suggestions in the order asked; the finished order is the same (first in, first out)
    out.seconds = time.perf_counter() - started
    return out


# --------------------------------------------------------------------------- a space's runs


def parse_sampler(text: str) -> dict[str, Any]:
    """`name[:key=value,...]` → a sampler section (values as YAML scalars)."""
    name, _, rest = text.partition(":")
    section: dict[str, Any] = {"name": name}
    for part in filter(None, rest.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise BenchError(f"--samplers: {text!r}: options are key=value, got {part!r}")
        section[key] = yaml.safe_load(value)
    return section


def label_of(section: dict[str, Any]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in section.items() if k not in ("name", "seed") and v is not None)
    return section["name"] + (f":{opts}" if opts else "")


def default_section(space: Space) -> dict[str, Any]:
    """The sampler section of the study this space benchmarks (seed left out)."""
    if space.arm is None:
        sampler = load_spec(space.study, check_data=False, writable=False).sampler
    else:
        sampler = load_comparison(space.study, check_data=False, writable=False).arms[space.arm][0].sampler
    return {k: v for k, v in dataclasses.asdict(sampler).items() if k != "seed" and v is not None}


def summary(curves: list[list[float]]) -> dict[str, list[float]]:
    """Per n: mean, standard deviation, min and max over seeds."""
    columns = list(zip(*curves))
    return {
        "mean": [statistics.fmean(c) for c in columns],
        "sd": [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns],
        "min": [min(c) for c in columns],
        "max": [max(c) for c in columns],
    }


def trials_to_reach(curve: Sequence[float], target: float) -> int | None:
    """The first n (1-based) with curve[n-1] >= target, or None."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target), None)


def run_space(
    name: str, folders: list[Path], samplers: list[str], seeds: list[int], budget: int,
    log: Any = None, smoke: bool = False,
) -> dict[str, Any]:
    """Every sampler x seed over one space's table: the JSON section of the space."""
    space = SPACES[name]
    table_spec = load_spec(space.table_spec, smoke=smoke, check_data=False, writable=False)
    table = table_of(table_spec, [(str(f), read_folder(f, table_spec)) for f in folders])
    reference = [space.reference[o.metric] for o in table_spec.objectives]
    default = label_of(default_section(space))
    sections: dict[str, dict[str, Any]] = {}
    for text in samplers:
        section = default_section(space) if text == "default" else parse_sampler(text)
        sections.setdefault(label_of(section), section)
    runs: dict[str, list[dict[str, Any]]] = {}
    for label, section in sections.items():
        spec = sampler_spec(space.table_spec, section, budget, smoke)
        runs[label] = []
        for seed in seeds:
            seeded = dataclasses.replace(spec, sampler=dataclasses.replace(spec.sampler, seed=seed))
            r = replay(seeded, table, budget)
            hv = r.hypervolumes(table, reference)
            runs[label].append({
                "seed": seed, "hypervolume": hv, "rows": r.rows,
                "distinct_rows": {str(n): r.distinct(n) for n in BUDGETS if n <= budget},
                "mean_distance": statistics.fmean(r.distances), "max_distance": max(r.distances),
                "mismatched_choices": sum(1 for m in r.mismatches if m),
                "exact": sum(1 for d, m in zip(r.distances, r.mismatches) if d == 0.0 and not m),
                "repeats": {"reused": r.reused, "waited": r.waited, "trained": r.trained_repeats},
                "seconds": round(r.seconds, 2),
            })  # fmt: skip
            if log is not None:
                marks = "  ".join(f"{n}:{hv[n - 1]:.4g}" for n in BUDGETS if n <= budget)
                print(f"{name} {label} seed {seed}: hv {marks}  rows {r.distinct(budget)}  {r.seconds:.1f} s", file=log)
    stats = {label: summary([run["hypervolume"] for run in rs]) for label, rs in runs.items()}
    out: dict[str, Any] = {
        "table": {
            "folders": [str(f) for f in folders], "rows": len(table),
            "finished_rows": sum(v is not None for v in table.values), "statuses": table.statuses,
            "commits": table.commits, "spec": str(space.table_spec.relative_to(ROOT)),
        },
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in table_spec.objectives],
        "reference": space.reference, "concurrency": table_spec.concurrency,
        "default": default, "samplers": list(sections), "runs": runs, "summary": stats,
    }  # fmt: skip
    if "random" in stats and len(stats["random"]["mean"]) == budget:
        target = stats["random"]["mean"][-1]
        by = min(TARGET_TRIALS, budget)
        reach = {}
        for label, s in stats.items():
            per_seed = [trials_to_reach(run["hypervolume"], target) for run in runs[label]]
            reach[label] = {
                "trials_to_random_final_mean": trials_to_reach(s["mean"], target),
                "by": by,
                "seeds_reaching_by": sum(1 for n in per_seed if n is not None and n <= by),
                # None: random's hypervolume is 0 (no trial beat the reference on every objective)
                "hv_at_by_over_random_final": s["mean"][by - 1] / target if target > 0 else None,
            }  # fmt: skip
        out["random_final_mean"] = target
        out["reach"] = reach
    return out


# --------------------------------------------------------------------------- the picture


def plot(result: dict[str, Any], path: Path) -> Path:
    """HV against finished trials, one panel per space: per sampler the mean over seeds and a
    band of one standard deviation; random's final mean dashed, the target trial count dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(result["spaces"])
    fig, axes = plt.subplots(1, len(spaces), figsize=(6.2 * len(spaces), 4.4), squeeze=False)
    for ax, name in zip(axes[0], spaces):
        sp = result["spaces"][name]
        for label, s in sp["summary"].items():
            n = np.arange(1, len(s["mean"]) + 1)
            mean, sd = np.array(s["mean"]), np.array(s["sd"])
            tag = f"{label} (default)" if label == sp["default"] else label
            (line,) = ax.plot(n, mean, lw=2.2 if label == sp["default"] else 1.4, label=tag)
            ax.fill_between(n, mean - sd, mean + sd, color=line.get_color(), alpha=0.12)
            marks = [b for b in result["budgets"] if b <= len(mean)]
            ax.plot(marks, mean[[b - 1 for b in marks]], "o", color=line.get_color(), ms=4)
        if "random_final_mean" in sp:
            ax.axhline(sp["random_final_mean"], color="0.3", ls="--", lw=1)
        if TARGET_TRIALS <= result["budget"]:
            ax.axvline(TARGET_TRIALS, color="0.5", ls=":", lw=1)
        ax.set_xlim(0.5, result["budget"] + 0.5)
        ax.set_ylim(bottom=0.0)  # a hypervolume is >= 0; the band's lower edge may not be
        ax.set_title(f"{name}: {sp['table']['finished_rows']} real trials, {len(result['seeds'])} seeds")
        ax.set_xlabel("finished trials")
        ax.set_ylabel("hypervolume (mean ± 1 sd over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- --check


def check_real(
    name: str, folders: list[Path], sampler: str, seed: int, picks: list[int], out: Path, smoke: bool = False
) -> list[dict[str, Any]]:
    """Train for real the suggestions that became finished trials `picks` (1-based) of one
    replay, with the table's settings (`syncstudy train`, then `syncstudy evaluate` on the
    spec's evaluation images, one thread per trial as the study's), and set their objectives
    beside the replayed ones (the nearest row's)."""
    space = SPACES[name]
    table_spec = load_spec(space.table_spec, smoke=smoke, check_data=False, writable=False)
    table = table_of(table_spec, [(str(f), read_folder(f, table_spec)) for f in folders])
    section = default_section(space) if sampler == "default" else parse_sampler(sampler)
    budget = max(picks)
    spec = sampler_spec(space.table_spec, {**section, "seed": seed}, budget, smoke)
    r = replay(spec, table, budget)
    base = TrainConfig.from_dict({**spec.train.to_dict(), **search.fixed_params(spec)})
    metrics = [o.metric for o in spec.objectives]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, int(spec.resources.cpu))), "PYTHONPATH": str(ROOT)}
    results = []
    for k in picks:
        params = r.suggested[k - 1]
        config = trial_config(base, spec.search, {n: _optuna_value(spec, n, v) for n, v in params.items()})
        folder = out / f"trial-{k:02d}"
        folder.mkdir(parents=True, exist_ok=False)
        (folder / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
        trained = _last_json([
            sys.executable, "-m", "pipeline.cli", "train", "--config", str(folder / "config.yaml"),
            "--out", str(folder / "train"), "--json", "--quiet",
        ], env)  # fmt: skip
        report: dict[str, Any] = {}
        if trained.get("status") == "ok" and spec.evaluation.enabled:
            cmd = [sys.executable, "-m", "pipeline.cli", "evaluate", str(trained["checkpoint"]), "--out", str(folder / "eval"), "--json", "--no-pictures"]
            if spec.evaluation.max_images is not None:
                cmd += ["--max-images", str(spec.evaluation.max_images)]
            split = getattr(spec.evaluation, "split", None)  # where the spec names the split a trial measures
            if split is not None:
                cmd += ["--split", split]
            report = _last_json(cmd, env)
        real = {**report, **trained}  # as a trial merges them: training's values over the evaluation's
        row = r.rows[k - 1]
        results.append({
            "trial": k, "params": params, "row": table.ids[row], "distance": r.distances[k - 1],
            "mismatched_choices": r.mismatches[k - 1], "status": trained.get("status"),
            "replayed": dict(zip(metrics, table.values[row])) if table.values[row] else None,
            "real": {m: real.get(m) for m in metrics},
        })  # fmt: skip
    return results


def _optuna_value(spec: StudySpec, name: str, value: Any) -> Any:
    """A decoded param back in the form Optuna proposes (`trial_config` decodes it again)."""
    p = spec.search[name]
    if p.kind == "categorical" and not isinstance(value, (type(None), bool, int, float, str)):
        return json.dumps(value, sort_keys=True)
    return value


def _last_json(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BenchError(f"{' '.join(cmd[2:4])} failed (exit {proc.returncode}): {tail}")
    return json.loads(lines[-1])


def _check_lines(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for res in results:
        metrics = list(res["real"])
        rep = res["replayed"] or {}
        parts = []
        for m in metrics:
            a, b = rep.get(m), res["real"][m]
            diff = f"{b - a:+.4f}" if isinstance(a, float) and isinstance(b, (int, float)) else "–"
            parts.append(f"{m} {a if a is None else round(a, 4)} → {b if b is None else round(b, 4)} ({diff})")
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in res["params"].items())
        lines.append(f"trial {res['trial']:>2} [{params}] row {res['row']} (distance {res['distance']:.3f}): " + "; ".join(parts))
    return lines


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits", nargs="+", type=Path, default=[], metavar="FOLDER", help="finished study folders of the digits table")
    p.add_argument("--shapes", nargs="+", type=Path, default=[], metavar="FOLDER", help="finished study folders of the shapes table")
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), help="name[:key=value,...] or default (the study's own)")
    p.add_argument("--seeds", type=int, default=10, help="sampler seeds 0..N-1 (default 10)")
    p.add_argument("--budget", type=int, default=max(BUDGETS), help="finished trials per replay (default 48)")
    p.add_argument("--smoke", action="store_true", help="the table specs' smoke form (a table from --smoke studies)")
    p.add_argument("--json", type=Path, help="write every curve here")
    p.add_argument("--png", type=Path, help="write the picture here")
    p.add_argument("--check", choices=list(SPACES), help="train a few replayed suggestions for real (see above)")
    p.add_argument("--check-sampler", default="default", help="the replay --check takes suggestions from")
    p.add_argument("--check-seed", type=int, default=0)
    p.add_argument("--check-trials", default="8,16,24,48", help="finished trials whose suggestions are trained")
    p.add_argument("--out", type=Path, help="--check: a new folder for the trained trials")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except SyncStudyError as exc:
        print(f"sampler_efficiency: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    tables = {name: getattr(args, name) for name in SPACES if getattr(args, name)}
    if not tables:
        raise BenchError("--digits or --shapes: give the finished study folders of at least one table")
    if args.check:
        if args.check not in tables:
            raise BenchError(f"--check {args.check}: give its table's folders with --{args.check}")
        if args.out is None or (args.out.exists() and any(args.out.iterdir())):
            raise BenchError("--out: --check needs a new or empty folder for the trials it trains")
        try:
            picks = sorted({int(k) for k in args.check_trials.split(",")})
        except ValueError:
            raise BenchError(f"--check-trials: comma-separated trial numbers, got {args.check_trials!r}") from None
        if not picks or picks[0] < 1:
            raise BenchError(f"--check-trials: trial numbers start at 1, got {args.check_trials!r}")
        results = check_real(args.check, tables[args.check], args.check_sampler, args.check_seed, picks, args.out, args.smoke)
        for line in _check_lines(results):
            print(line)
        (args.out / "check.json").write_text(json.dumps(results, indent=1))
        return 0
    if args.seeds < 1 or args.budget < 1:
        raise BenchError("--seeds and --budget: at least 1")
    for path in (args.json, args.png):
        if path is not None and not path.parent.is_dir():
            raise BenchError(f"{path}: its folder does not exist")
    started = time.time()
    seeds = list(range(args.seeds))
    result: dict[str, Any] = {
        "method": "tabular replay: each suggestion answered by its nearest real trial (bench/sampler_efficiency.py)",
        "budgets": [b for b in BUDGETS if b <= args.budget], "seeds": seeds, "budget": args.budget,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "optuna": __import__("optuna").__version__, "spaces": {},
    }  # fmt: skip
    for name, folders in tables.items():
        result["spaces"][name] = run_space(name, folders, args.samplers, seeds, args.budget, sys.stderr, args.smoke)
    result["seconds"] = round(time.time() - started, 1)
    for name, sp in result["spaces"].items():
        for label, reach in sp.get("reach", {}).items():
            tag = " (default)" if label == sp["default"] else ""
            n, by, ratio = reach["trials_to_random_final_mean"], reach["by"], reach["hv_at_by_over_random_final"]
            print(
                f"{name} {label}{tag}: random's {args.budget}-trial mean HV {sp['random_final_mean']:.4g} "
                f"reached at {n if n is not None else f'> {args.budget}'} trials (mean curve); "
                f"{reach['seeds_reaching_by']}/{len(seeds)} seeds by {by}; HV({by}) / random HV({args.budget}) = "
                + (f"{ratio:.3f}" if ratio is not None else "n/a (random's HV is 0)")
            )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    if args.png is not None:
        plot(result, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
