"""The sampler benchmark's tabular replay (bench/sampler_efficiency.py) on small synthetic
tables over the digits study's space: which row answers a suggestion, the hypervolume curves,
determinism by seed, repeats and failed rows as a study has them, the table folders it reads
and refuses, and that the table specs still match the studies they stand for. No Ray."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pipeline import search
from pipeline.record.digest import DamagedFile
from pipeline.record.tables import TRIALS, StudyTables, TrialRow
from pipeline.spec import Param, dump_resolved, load_spec
from pipeline.spec.arms import load_comparison

ROOT = Path(__file__).resolve().parents[2]


def _bench():  # noqa: ANN202 - bench/sampler_efficiency.py as a module (bench/ is not a package)
    if "bench_sampler_efficiency" not in sys.modules:
        path = ROOT / "bench" / "sampler_efficiency.py"
        spec = importlib.util.spec_from_file_location("bench_sampler_efficiency", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_sampler_efficiency"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules["bench_sampler_efficiency"]


B = _bench()
SPEC = load_spec(ROOT / "bench" / "sampler_table_digits.yaml", check_data=False, writable=False)
KINDS = ("spread", "outside", "gate")


def _row(i: int, searched: dict[str, Any], status: str = "ok", **metrics: float) -> TrialRow:
    params = {**SPEC.train.to_dict(), **search.fixed_params(SPEC), **searched}
    return TrialRow(trial_id=f"t{i:03d}", status=status, params=params, metrics=dict(metrics), commit="c0")


def _synthetic(n: int = 40, seed: int = 0) -> list[TrialRow]:
    """Rows spread over the space; accuracy falls and interpretability rises with the focus
    strength (a front to find), the gate kind a little better on both."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lam = float(10 ** rng.uniform(-3, 0))
        kind = KINDS[i % 3]
        bonus = 0.02 if kind == "gate" else 0.0
        strength = (math.log10(lam) + 3) / 3  # 0..1
        searched = {
            "lambda_focus": lam, "coupling_K": float(10 ** rng.uniform(-3, 0)),
            "epsilon": float(rng.uniform(0.2, 0.8)), "warmup_epochs": int(rng.integers(0, 3)),
            "focus_kind": kind,
        }  # fmt: skip
        rows.append(_row(i, searched, val_acc=0.98 - 0.3 * strength**2 + bonus,
                         interpretability=0.05 + 0.3 * strength + bonus))  # fmt: skip
    return rows


def _table(rows: list[TrialRow] | None = None, spec: Any = SPEC) -> Any:
    return B.table_of(spec, [("synthetic", _synthetic() if rows is None else rows)])


def _folder(path: Path, rows: list[TrialRow], spec: Any = SPEC) -> Path:
    """A finished study's folder as the driver leaves it: compacted tables, their digest and
    the resolved spec."""
    tables = StudyTables(path)
    for row in rows:
        tables.upsert_trial(row)
    tables.compact()
    dump_resolved(spec, path / "study.yaml")
    return path


def _spec_with(section: dict[str, Any], budget: int) -> Any:
    return B.sampler_spec(B.SPACES["digits"].table_spec, section, budget)


REFERENCE = [0.0, 0.0]


# --------------------------------------------------------------------------- nearest row


def test_a_suggestion_on_a_row_is_answered_by_that_row() -> None:
    rows = _synthetic()
    table = _table(rows)
    for i in (0, 7, 31):
        searched = {k: rows[i].params[k] for k in SPEC.searched()}
        assert B.nearest(table, searched) == (i, 0.0, 0)


def test_log_ranges_are_compared_on_the_log_scale() -> None:
    """lambda_focus 0.03 is nearer 0.001 than 0.1 on a linear scale (0.029 against 0.07), but
    nearer 0.1 on the log scale (0.52 decades against 1.48) that the range is searched on."""
    base = {"coupling_K": 0.01, "epsilon": 0.5, "warmup_epochs": 1, "focus_kind": "gate"}
    table = _table([_row(0, {**base, "lambda_focus": 0.001}, val_acc=0.9, interpretability=0.1),
                    _row(1, {**base, "lambda_focus": 0.1}, val_acc=0.8, interpretability=0.2)])  # fmt: skip
    row, distance, _ = B.nearest(table, {**base, "lambda_focus": 0.03})
    assert row == 1
    assert distance == pytest.approx((math.log10(0.1) - math.log10(0.03)) / 3)


def test_a_matching_choice_wins_over_a_nearer_row_of_another_choice() -> None:
    base = {"coupling_K": 0.01, "epsilon": 0.5, "warmup_epochs": 1}
    table = _table([_row(0, {**base, "lambda_focus": 0.01, "focus_kind": "spread"}, val_acc=0.9, interpretability=0.1),
                    _row(1, {**base, "lambda_focus": 1.0, "focus_kind": "gate"}, val_acc=0.8, interpretability=0.2)])  # fmt: skip
    assert B.nearest(table, {**base, "lambda_focus": 0.01, "focus_kind": "gate"})[0] == 1
    # no row has the choice: the nearest of those with the fewest mismatches
    assert B.nearest(table, {**base, "lambda_focus": 0.01, "focus_kind": "outside"})[::2] == (0, 1)


def test_ints_are_compared_as_ints() -> None:
    base = {"lambda_focus": 0.01, "coupling_K": 0.01, "epsilon": 0.5, "focus_kind": "gate"}
    table = _table([_row(i, {**base, "warmup_epochs": i}, val_acc=0.9, interpretability=0.1) for i in range(3)])
    for w in range(3):
        assert B.nearest(table, {**base, "warmup_epochs": w})[:2] == (w, 0.0)


# --------------------------------------------------------------------------- replay


@pytest.mark.parametrize(
    "section",
    [{"name": "random"}, {"name": "nsga2", "population_size": 4}, {"name": "tpe", "n_startup_trials": 4}],
    ids=["random", "nsga2", "tpe"],
)
def test_hypervolume_curves_never_fall(section: dict[str, Any]) -> None:
    table = _table()
    for seed in (0, 1):
        spec = _spec_with({**section, "seed": seed}, 16)
        r = B.replay(spec, table, 16)
        hv = r.hypervolumes(table, REFERENCE)
        assert len(hv) == len(r.rows) == 16
        assert all(b >= a for a, b in zip(hv, hv[1:]))
        front = [table.values[i] for i in r.rows]
        assert hv[-1] == pytest.approx(B.hypervolume(front, REFERENCE, ["max", "max"]))
        assert r.distinct(16) <= 16 and r.distinct(8) <= r.distinct(16)
        # trials end in the order they started: the k-th finished is the k-th suggestion's row
        assert r.rows == [B.nearest(table, p)[0] for p in r.suggested]


# Not the GP: it fits a model per trial (~1 s on a quiet core, minutes on a busy one); its
# proposals are checked in test_sampler_choice.py, and the replay around it is this one.
@pytest.mark.parametrize(
    "section",
    [{"name": "random"}, {"name": "nsga2", "population_size": 4}, {"name": "tpe", "n_startup_trials": 4}],
    ids=["random", "nsga2", "tpe"],
)
def test_a_replay_is_determined_by_its_seed(section: dict[str, Any]) -> None:
    table = _table()
    runs = [B.replay(_spec_with({**section, "seed": s}, 12), table, 12) for s in (5, 5, 6)]
    assert runs[0].rows == runs[1].rows and runs[0].suggested == runs[1].suggested
    assert runs[2].suggested != runs[0].suggested


def test_a_failed_row_fails_the_trial_and_adds_nothing() -> None:
    rows = _synthetic(6)
    rows = [dataclasses.replace(r, status="diverged", metrics={}) for r in rows[:3]] + rows[3:]
    table = _table(rows)
    assert table.values[:3] == [None] * 3 and table.statuses == {"diverged": 3, "ok": 3}
    r = B.replay(_spec_with({"name": "random", "seed": 0}, 12), table, 12)
    hv = r.hypervolumes(table, REFERENCE)
    done = [table.values[i] for i in r.rows if table.values[i] is not None]
    assert hv[-1] == pytest.approx(B.hypervolume(done, REFERENCE, ["max", "max"]))
    for n, row in enumerate(r.rows):  # a failed row leaves the curve where it was
        if table.values[row] is None:
            assert hv[n] == (hv[n - 1] if n else 0.0)


def test_repeats_of_a_used_up_space_are_told_then_trained() -> None:
    """A space of three choices: the sampler repeats itself; as in a study, a repeat is told the
    earlier trial's values and asked again, and once the three points are taken it is trained."""
    spec = dataclasses.replace(_spec_with({"name": "random", "seed": 0}, 9), search={
        **{n: p for n, p in SPEC.search.items() if p.kind == "fixed"},
        "focus_kind": Param("focus_kind", "categorical", choices=list(KINDS)),
    })  # fmt: skip
    rows = [_row(i, {"focus_kind": k}, val_acc=0.9 - 0.1 * i, interpretability=0.1 + 0.1 * i)
            for i, k in enumerate(KINDS)]  # fmt: skip
    table = B.table_of(spec, [("three", rows)])
    r = B.replay(spec, table, 9)
    assert len(r.rows) == 9 and set(r.rows) == {0, 1, 2}
    assert r.trained_repeats == 6 and r.reused + r.waited > 0


# --------------------------------------------------------------------------- the table


def test_pooled_rows_may_differ_in_seed_only() -> None:
    rows = _synthetic(4)
    rows[1] = dataclasses.replace(rows[1], params={**rows[1].params, "seed": 2})
    assert len(_table(rows)) == 4
    rows[2] = dataclasses.replace(rows[2], params={**rows[2].params, "epochs": 1})
    with pytest.raises(B.BenchError, match="trial t002: epochs is 1, the table's spec has 10"):
        _table(rows)


def test_a_row_outside_the_space_is_refused() -> None:
    rows = _synthetic(3)
    rows[0] = dataclasses.replace(rows[0], params={**rows[0].params, "coupling_K": 3.0})
    with pytest.raises(B.BenchError, match="coupling_K = 3.0 is outside the space"):
        _table(rows)


def test_only_a_finished_study_folder_is_read(tmp_path: Path) -> None:
    tables = StudyTables(tmp_path)
    for row in _synthetic(5):
        tables.upsert_trial(row)
    tables.write()  # per-trial parts, as while a study runs
    with pytest.raises(B.BenchError, match="not compacted"):
        B.read_folder(tmp_path, SPEC)
    tables.compact()
    with pytest.raises(B.BenchError, match="study.yaml: missing"):
        B.read_folder(tmp_path, SPEC)
    dump_resolved(SPEC, tmp_path / "study.yaml")
    assert [r.trial_id for r in B.read_folder(tmp_path, SPEC)] == [f"t{i:03d}" for i in range(5)]
    (tmp_path / "tables.sha256").unlink()
    with pytest.raises(B.BenchError, match="no trials.parquet with a digest"):
        B.read_folder(tmp_path, SPEC)
    tables.compact()
    (tmp_path / TRIALS).write_bytes((tmp_path / TRIALS).read_bytes()[:-9] + b"garbage!!")
    with pytest.raises(DamagedFile, match="trials.parquet"):
        B.read_folder(tmp_path, SPEC)


def test_a_folder_evaluated_otherwise_is_refused(tmp_path: Path) -> None:
    """Its rows hold values measured otherwise (other images): not rows of this table. Pictures
    change no value; a setting the saved spec lacks (an older release's) is not known to match."""
    other = dataclasses.replace(SPEC, evaluation=dataclasses.replace(SPEC.evaluation, pictures=True))
    _folder(tmp_path / "a", _synthetic(3), other)
    assert len(B.read_folder(tmp_path / "a", SPEC)) == 3
    other = dataclasses.replace(SPEC, evaluation=dataclasses.replace(SPEC.evaluation, max_images=100))
    _folder(tmp_path / "b", _synthetic(3), other)
    with pytest.raises(B.BenchError, match="'max_images': 100.*not the same measurement"):
        B.read_folder(tmp_path / "b", SPEC)
    saved = (tmp_path / "a" / "study.yaml").read_text().replace("  max_images: 500\n", "")
    (tmp_path / "a" / "study.yaml").write_text(saved)
    with pytest.raises(B.BenchError, match="not the same measurement"):
        B.read_folder(tmp_path / "a", SPEC)


def test_the_digits_table_spec_is_the_digits_study() -> None:
    study = load_spec(ROOT / "studies" / "digits.yaml", check_data=False, writable=False)
    assert SPEC.train == study.train and SPEC.search == study.search
    assert SPEC.objectives == study.objectives
    assert (SPEC.concurrency, SPEC.retries, SPEC.resources) == (study.concurrency, study.retries, study.resources)
    assert dataclasses.replace(SPEC.evaluation, pictures=True) == dataclasses.replace(study.evaluation, pictures=True)
    assert SPEC.sampler.name == "random"


def test_the_shapes_table_spec_is_the_comparisons_sinn_arm() -> None:
    table = load_spec(ROOT / "bench" / "sampler_table_shapes.yaml", check_data=False, writable=False)
    comparison = load_comparison(ROOT / "studies" / "compare-shapes.yaml", check_data=False, writable=False)
    arm = comparison.arms["sinn"][0]
    assert table.train == arm.train and table.search == arm.search and table.objectives == arm.objectives
    assert (table.concurrency, table.retries, table.resources, table.evaluation) == (
        arm.concurrency, arm.retries, arm.resources, arm.evaluation)  # fmt: skip
    assert B.SPACES["shapes"].reference == comparison.reference


def test_the_default_is_each_studys_own_sampler() -> None:
    """As the study files write it (seed aside): the comparison's arms take its `sampler:`."""
    for name, space in B.SPACES.items():
        raw = yaml.safe_load(space.study.read_text())["sampler"]
        raw = {"name": raw} if isinstance(raw, str) else raw
        assert B.default_section(space) == {k: v for k, v in raw.items() if k != "seed"}, name


# --------------------------------------------------------------------------- summaries, command line


def test_trials_to_reach_and_sampler_labels() -> None:
    assert B.trials_to_reach([0.1, 0.2, 0.2, 0.5], 0.2) == 2
    assert B.trials_to_reach([0.1, 0.2], 0.3) is None
    assert B.label_of(B.parse_sampler("nsga2:population_size=4")) == "nsga2:population_size=4"
    assert B.parse_sampler("gp:n_startup_trials=6") == {"name": "gp", "n_startup_trials": 6}


def test_a_whole_run_writes_curves_and_a_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _folder(tmp_path / "table", _synthetic(30))
    out = tmp_path / "out.json"
    rc = B.main(["--digits", str(tmp_path / "table"), "--samplers", "random", "tpe:n_startup_trials=4", "--seeds", "2",
                 "--budget", "8", "--json", str(out), "--png", str(tmp_path / "hv.png")])  # fmt: skip
    assert rc == 0
    import json

    result = json.loads(out.read_text())
    sp = result["spaces"]["digits"]
    assert sp["table"]["rows"] == 30 and list(sp["runs"]) == ["random", "tpe:n_startup_trials=4"]
    assert sp["default"] == B.label_of(B.default_section(B.SPACES["digits"]))
    assert all(len(run["hypervolume"]) == 8 for runs in sp["runs"].values() for run in runs)
    assert sp["reach"]["random"]["trials_to_random_final_mean"] <= 8 and sp["reach"]["random"]["by"] == 8
    assert (tmp_path / "hv.png").stat().st_size > 0
    assert "reached at" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "expect"),
    [([], "--digits or --shapes"),
     (["--digits", "/nonexistent/table"], "/nonexistent/table: no such study folder"),
     (["--digits", "{table}", "--samplers", "cmaes"], "sampler.name: unknown sampler"),
     (["--digits", "{table}", "--samplers", "nsga2:4"], "options are key=value"),
     (["--digits", "{table}", "--check", "digits"], "--out: --check needs")],
    ids=["no-table", "no-folder", "bad-sampler", "bad-option", "check-without-out"],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _folder(tmp_path / "table", _synthetic(4))
    rc = B.main([a.replace("{table}", str(tmp_path / "table")) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and expect in err, err
