"""`runs`, `pareto` and `dashboard` on a hand-built finished study (its study.yaml and
trials.parquet; no Ray, no MLflow run): `pareto` marks the trial `export` takes and gives
params their types; a `--sort` metric no trial has and a `--port` out of range are refused
with one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.record.summary import choose_on_front
from pipeline.record.tables import StudyTables, TrialRow

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "studies" / "digits.yaml"

# (trial, val_acc, interpretability, params): t1 and t3 are within 0.01 of the best val_acc,
# t3 is the more interpretable of them (export's default choice); t2 is off the front; t4 is
# on it (most interpretable) but 0.2 below the best val_acc.
TRIALS = [
    ("t1", 0.960, 0.30, {"lambda_focus": 0.01, "coupling_K": 0.1, "epsilon": 0.5, "warmup_epochs": 1, "focus_kind": "spread"}),
    ("t2", 0.900, 0.20, {"lambda_focus": 0.1, "coupling_K": 0.5, "epsilon": 0.3, "warmup_epochs": 0, "focus_kind": "gate"}),
    ("t3", 0.955, 0.40, {"lambda_focus": 0.002, "coupling_K": 1.0, "epsilon": 0.8, "warmup_epochs": 2, "focus_kind": "outside"}),
    ("t4", 0.760, 0.90, {"lambda_focus": 1.0, "coupling_K": 0.001, "epsilon": 0.2, "warmup_epochs": 0, "focus_kind": "gate"}),
]  # fmt: skip


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A finished study folder: study.yaml (digits, stored here) and its compacted tables."""
    doc = yaml.safe_load(DIGITS.read_text())
    doc.pop("smoke")
    doc["storage"] = str(tmp_path)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    tables = StudyTables(tmp_path)
    for i, (tid, acc, interp, params) in enumerate(TRIALS):
        metrics = {"val_acc": acc, "interpretability": interp, "test_acc": acc - 0.01, "train_time": 10.0 + i}
        tables.upsert_trial(TrialRow(
            trial_id=tid, status="ok", params={**params, "lr": 2e-3}, metrics=metrics,
            mlflow_run_id=f"run{i}", mlflow_start_time=1_700_000_000.0 + i,
        ))  # fmt: skip
    tables.write()
    tables.compact()
    return tmp_path / "study.yaml"


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _records(spec: Path) -> list:
    from pipeline.record.finished import finished_trials
    from pipeline.spec import load_spec

    loaded = load_spec(spec, writable=False)
    records = finished_trials(spec.parent, [o.metric for o in loaded.objectives], dict(loaded.search))
    assert records is not None
    return records


# ------------------------------------------------------------------ pareto
def test_pareto_json_marks_exports_choice_and_types_the_params(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, _ = _main(["pareto", str(study), "--json"], capsys)
    assert rc == 0
    front = json.loads(out)
    assert [t["trial_id"] for t in front] == ["t1", "t3", "t4"]  # best val_acc first; t2 is beaten by t1
    chosen, _ = choose_on_front(_records(study), [("val_acc", "max"), ("interpretability", "max")])
    assert [t["trial_id"] for t in front if t["export_choice"]] == [chosen.trial_id] == ["t3"]
    assert all(isinstance(t["export_choice"], bool) for t in front)
    t3 = front[1]["params"]
    assert t3 == {"lambda_focus": 0.002, "coupling_K": 1.0, "epsilon": 0.8, "warmup_epochs": 2, "focus_kind": "outside"}
    # by type: float params are floats even when whole (1.0), int params ints, choices as given
    assert type(t3["coupling_K"]) is float and type(t3["warmup_epochs"]) is int and type(t3["focus_kind"]) is str


def test_pareto_table_marks_exports_choice(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _main(["pareto", str(study)], capsys)
    assert rc == 0
    lines = out.splitlines()
    marked = [ln for ln in lines[1:4] if ln.startswith("*")]
    assert len(marked) == 1 and marked[0].split()[1] == "t3", out
    assert lines[-1].startswith("* = trial t3, the one `syncstudy export` takes"), out


def test_pareto_of_one_objective_marks_the_best(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(study.read_text())
    doc["objectives"] = [{"metric": "interpretability", "mode": "max"}]
    study.write_text(yaml.safe_dump(doc, sort_keys=False))
    rc, out, _ = _main(["pareto", str(study), "--json"], capsys)
    assert rc == 0
    assert [(t["trial_id"], t["export_choice"]) for t in json.loads(out)] == [("t4", True)]


def test_typed_param_without_the_spec_reads_json_and_booleans() -> None:
    from pipeline.commands._study import typed_param

    assert [typed_param(v) for v in ("8", "0.5", "True", "False", '["a"]', "null", "spread")] == [
        8, 0.5, True, False, ["a"], None, "spread",
    ]  # fmt: skip


# ------------------------------------------------------------------ runs --sort
def test_runs_sort_by_an_unknown_metric_exits_2_naming_it(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted((p.name, p.stat().st_mtime_ns) for p in study.parent.iterdir())
    rc, out, err = _main(["runs", str(study), "--sort", "nosuchmetric"], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("syncstudy runs: error: --sort nosuchmetric: no trial of study 'digits' has this metric")
    assert "(known: val_acc, interpretability, test_acc, train_time)" in err  # objectives first
    assert sorted((p.name, p.stat().st_mtime_ns) for p in study.parent.iterdir()) == before


def test_runs_sort_by_a_metric_the_trials_have(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = _main(["runs", str(study), "--sort", "train_time", "--json"], capsys)
    assert rc == 0
    assert [t["trial_id"] for t in json.loads(out)] == ["t1", "t2", "t3", "t4"]  # time: lower first


# ------------------------------------------------------------------ dashboard --port
@pytest.mark.parametrize("port", ["0", "-1", "65536", "70000"])
def test_dashboard_port_out_of_range_exits_2_naming_it(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _main(["dashboard", str(DIGITS), "--smoke", f"--port={port}"], capsys)
    assert rc == 2 and out == ""
    assert err == f"syncstudy dashboard: error: --port {port}: must be a port number from 1 to 65535\n"
