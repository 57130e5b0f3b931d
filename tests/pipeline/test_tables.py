"""pipeline.record.tables: keyed upserts (a replayed trial never duplicates a row), typed columns,
atomic writes, round trips through Parquet."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.record.tables import HISTORY, NEURONS, TRIAL_COLUMNS, TRIALS, StudyTables, TrialRow


def _row(tid: str, acc: float = 0.5, status: str = "ok") -> TrialRow:
    return TrialRow(
        trial_id=tid, status=status, params={"lr": 0.01, "epochs": 2, "layers": ["features.3"], "k": None},
        metrics={"test_acc": acc, "interpretability": float("nan")}, mlflow_run_id="r" + tid,
        checkpoint=f"/x/{tid}", node_id="n1", start_time=1_700_000_000.0, end_time=1_700_000_010.5,
    )  # fmt: skip


def test_upserts_are_keyed_and_round_trip(tmp_path: Path) -> None:
    tables = StudyTables(tmp_path)
    tables.upsert_trial(_row("b", 0.1))
    tables.upsert_trial(_row("a"))
    tables.upsert_trial(_row("b", 0.9))  # replayed trial: replaces, never duplicates
    tables.upsert_history("a", [{"epoch": 1, "val_acc": 0.2}, {"epoch": 2, "val_acc": 0.3}])
    tables.upsert_history("a", [{"epoch": 2, "val_acc": 0.3}])
    tables.set_neurons("a", pa.table({"layer": ["f"], "neuron": [0], "module": [1]}))
    tables.write()
    tables.compact()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    trials = pq.read_table(tmp_path / TRIALS)
    assert trials.column_names[: len(TRIAL_COLUMNS)] == list(TRIAL_COLUMNS)
    assert trials.column("trial_id").to_pylist() == ["a", "b"]
    assert trials.column("metrics.test_acc").to_pylist() == [0.5, 0.9]
    assert trials.schema.field("start_time").type == pa.timestamp("ms", tz="UTC")
    assert trials.schema.field("params.lr").type == pa.float64()
    assert trials.schema.field("params.epochs").type == pa.int64()
    assert trials.column("params.layers").to_pylist() == ['["features.3"]'] * 2  # JSON text

    history = pq.read_table(tmp_path / HISTORY).to_pylist()
    assert [(h["trial_id"], h["epoch"]) for h in history] == [("a", 1), ("a", 2)]
    assert pq.read_table(tmp_path / NEURONS).column_names == ["trial_id", "layer", "neuron", "module"]

    again = StudyTables(tmp_path)  # a resumed driver starts from what is on disk
    assert sorted(again.trials) == ["a", "b"]
    assert again.trials["a"].end_time == 1_700_000_010.5
    again.upsert_trial(_row("c"))
    again.drop(["b"])
    again.write()
    again.compact()
    assert pq.read_table(tmp_path / TRIALS).column("trial_id").to_pylist() == ["a", "c"]
    assert sorted(pq.read_table(tmp_path / NEURONS).column("trial_id").to_pylist()) == ["a"]


def test_a_compacted_neuron_table_is_split_back_per_trial_in_order(tmp_path: Path) -> None:
    tables = StudyTables(tmp_path)
    mine = {}
    for k, tid in enumerate(["c", "a", "b"]):
        mine[tid] = pa.table({"layer": ["f"] * (k + 2), "neuron": list(range(k + 2)), "module": [k] * (k + 2)})
        tables.upsert_trial(_row(tid))
        tables.set_neurons(tid, mine[tid])
    tables.write()
    tables.compact()
    again = StudyTables(tmp_path)  # read back from the one compacted file
    assert not any((tmp_path / "parts" / "neurons").glob("*.parquet"))
    assert {tid: t.to_pylist() for tid, t in again.neurons.items()} == {tid: t.to_pylist() for tid, t in mine.items()}


def test_metric_columns_are_the_union_with_nulls(tmp_path: Path) -> None:
    tables = StudyTables(tmp_path)
    tables.upsert_trial(_row("a"))
    tables.upsert_trial(TrialRow("b", "error", {"lr": 0.1}, {}, error="RuntimeError: boom"))
    tables.write()
    tables.compact()
    rows = pq.read_table(tmp_path / TRIALS).to_pylist()
    assert rows[1]["metrics.test_acc"] is None and rows[1]["error"] == "RuntimeError: boom"
    assert rows[1]["params.epochs"] is None


def test_a_trial_write_touches_only_its_own_files(tmp_path: Path) -> None:
    """Per-trial parts: writing trial c leaves a's and b's files as they were, and a driver
    that never compacted (killed) leaves everything readable to the next one."""
    tables = StudyTables(tmp_path)
    for tid in ("a", "b"):
        tables.upsert_trial(_row(tid))
        tables.upsert_history(tid, [{"epoch": 1, "val_acc": 0.2}])
    tables.write()
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "parts").rglob("*.parquet")}
    tables.upsert_trial(_row("c"))
    tables.write()
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "parts").rglob("*.parquet")}
    assert {p: after[p] for p in before} == before
    assert set(after) - set(before) == {tmp_path / "parts" / "trials" / "c.parquet"}
    assert not (tmp_path / TRIALS).exists()  # nothing whole rewritten per trial
    again = StudyTables(tmp_path)
    assert sorted(again.trials) == ["a", "b", "c"] and again.history["b"][1]["val_acc"] == 0.2
    again.compact()
    assert pq.read_table(tmp_path / TRIALS).column("trial_id").to_pylist() == ["a", "b", "c"]
    assert not (tmp_path / "parts").exists()


def test_provenance_columns_round_trip_and_older_tables_read_as_null(tmp_path: Path) -> None:
    made = {"commit": "c0ffee", "dirty": False, "torch": "2.14.1", "device": "cpu", "data_version": "shapes generator 2"}
    tables = StudyTables(tmp_path / "new")
    tables.upsert_trial(TrialRow("a", "ok", {"lr": 0.1}, {"test_acc": 0.5}, **made))
    tables.upsert_trial(TrialRow("b", "error", {"lr": 0.1}, {}))  # failed before it measured any
    tables.write()
    tables.compact()
    table = pq.read_table(tmp_path / "new" / TRIALS)
    assert table.schema.field("dirty").type == pa.bool_() and table.schema.field("commit").type == pa.string()
    rows = table.to_pylist()
    assert {k: rows[0][k] for k in made} == made and all(rows[1][k] is None for k in made)
    assert {k: getattr(StudyTables(tmp_path / "new").trials["a"], k) for k in made} == made

    # a study written before the columns existed: its rows load, provenance unknown
    old = tmp_path / "old"
    old.mkdir()
    pq.write_table(table.drop_columns(list(made)), old / TRIALS)
    assert StudyTables(old).trials["a"].commit is None
