"""pipeline.record.tracking: runs are found before they are created, epochs and final results are
written once, and a bad tracking URI fails in seconds with the URI in the message."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.record.tracking import (
    EPOCH_PREFIX,
    TAG_STATUS,
    Tracker,
    TrackingError,
    check_target,
    resolve_target,
)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    storage = tmp_path_factory.mktemp("store")
    target = resolve_target(None, "unit", storage)
    assert target.uri == f"sqlite:///{storage.resolve() / 'mlflow.db'}"
    assert target.artifact_location == (storage.resolve() / "mlartifacts").as_uri()
    check_target(target)
    return Tracker(target, "unit")


def test_runs_are_found_by_tags_not_duplicated(tracker: Tracker) -> None:
    parent = tracker.parent_run({"samples": 4}, {"syncstudy.objectives": "[]"})
    assert tracker.parent_run({"samples": 4}, {}) == parent
    run = tracker.trial_run("t1", parent, {"lr": 0.1, "layers": ["a"], "k": None})
    assert tracker.trial_run("t1", parent, {"lr": 0.1, "layers": ["a"], "k": None}) == run
    params = tracker.client.get_run(run).data.params
    assert params == {"lr": "0.1", "layers": '["a"]', "k": "null"}
    assert [r.trial_id for r in tracker.trials()] == ["t1"]


def test_epochs_and_final_results_are_written_once(tracker: Tracker, tmp_path: Path) -> None:
    parent = tracker.parent_run({}, {})
    run = tracker.trial_run("t2", parent, {"lr": 0.1})
    assert tracker.log_epochs(run, [{"epoch": 1, "val_acc": 0.1}, {"epoch": 2, "val_acc": 0.2}]) == 2
    # a replay (resumed trial, reconciliation) re-sends epochs 1-2 and adds 3
    fresh = Tracker(tracker.target, "unit")  # a new driver: no in-memory state
    assert fresh.log_epochs(run, [{"epoch": e, "val_acc": e / 10} for e in (1, 2, 3)]) == 1
    history = tracker.client.get_metric_history(run, EPOCH_PREFIX + "val_acc")
    assert [m.step for m in history] == [1, 2, 3]

    (tmp_path / "model.pt").write_bytes(b"weights")
    first = tracker.finish_trial(
        run, status="ok", metrics={"test_acc": 0.9, "bad": "x"}, step=3,
        artifacts=[(tmp_path / "model.pt", "checkpoint"), (tmp_path / "missing.json", None)],
    )  # fmt: skip
    again = fresh.finish_trial(run, status="error", metrics={"test_acc": 0.1}, step=3, error="late")
    assert (first, again) == (True, False)
    data = tracker.client.get_run(run)
    assert data.data.tags[TAG_STATUS] == "ok" and data.info.status == "FINISHED"
    assert [m.value for m in tracker.client.get_metric_history(run, "test_acc")] == [0.9]
    assert [a.path for a in tracker.client.list_artifacts(run, "checkpoint")] == ["checkpoint/model.pt"]


def test_orphans_are_soft_deleted(tracker: Tracker) -> None:
    parent = tracker.parent_run({}, {})
    tracker.trial_run("lost", parent, {})
    keep = {r.trial_id for r in tracker.trials()} - {"lost"}
    assert tracker.delete_orphans(keep) == ["lost"]
    assert "lost" not in {r.trial_id for r in tracker.trials()}


def test_trial_runs_are_listed_once_and_found_by_a_new_driver(tmp_path: Path) -> None:
    """A trial's start costs no search of the study's runs (issue 28, item 4): the runs are
    listed once per tracker; a second driver (resume) still finds the first one's runs, and a
    run deleted as an orphan is made again, as a search would."""
    target = resolve_target(None, "unit", tmp_path)
    first = Tracker(target, "listed", instance="i1")
    parent = first.parent_run({}, {})
    searches: list[str] = []
    real = first.client.search_runs

    def counted(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        searches.append(kw.get("filter_string", ""))
        return real(*a, **kw)

    first.client.search_runs = counted
    runs = [first.trial_run(f"t{i}", parent, {"i": i}) for i in range(5)]
    assert first.trial_run("t3", parent, {"i": 3}) == runs[3]  # a retry: the same run
    assert len(searches) == 1  # the one listing, before the first trial

    again = Tracker(target, "listed", instance="i1")  # the next driver, resuming
    assert again.trial_run("t2", parent, {"i": 2}) == runs[2]
    assert again.delete_orphans({"t0", "t1", "t2", "t3"}) == ["t4"]
    made = again.trial_run("t4", parent, {"i": 4})
    assert made != runs[4] and again.client.get_run(made).info.lifecycle_stage == "active"
    other = Tracker(target, "another", instance="i2")  # another study in the experiment: its own runs
    assert other.trial_run("t2", other.parent_run({}, {}), {"i": 2}) not in runs


def test_the_wrap_up_lists_the_trial_runs_once(tmp_path: Path) -> None:
    """Orphan clean-up and the parent's summary share one listing (pipeline.study._reconcile)."""
    tracker = Tracker(resolve_target(None, "unit", tmp_path), "wrap", instance="w")
    parent = tracker.parent_run({}, {"syncstudy.objectives": '[{"metric": "val_acc", "mode": "max"}]'})
    for tid, acc in (("a", 0.5), ("b", 0.9), ("lost", 1.0)):
        run = tracker.trial_run(tid, parent, {})
        tracker.finish_trial(run, status="ok", metrics={"val_acc": acc}, step=1)
    listed = tracker.trials()
    searches: list[str] = []
    real = tracker.client.search_runs
    tracker.client.search_runs = lambda *a, **kw: searches.append("x") or real(*a, **kw)
    assert tracker.delete_orphans({"a", "b"}, listed) == ["lost"]
    tracker.finish_parent(parent, records=[r for r in listed if r.trial_id != "lost"])
    assert searches == []
    tags = {r.trial_id: r.tags.get("syncstudy.pareto") for r in tracker.trials()}
    assert tags == {"a": "false", "b": "true"}  # the orphan left out of the front, and deleted


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "uri, words",
    [
        ("file:///tmp/mlruns", "MLflow 3 needs a database or a server"),
        ("/tmp/mlruns", "MLflow 3 needs a database or a server"),
        ("ftp://example.org/x", "unsupported scheme"),
        ("sqlite://host/mlflow.db", "expected sqlite:///PATH"),
    ],
)
def test_bad_uris_name_the_uri(uri: str, words: str, tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="tracking URI") as err:
        check_target(resolve_target(uri, "x", tmp_path))
    assert words in str(err.value) and uri.split("://")[-1].lstrip("/")[:5] in str(err.value)


def test_relative_sqlite_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = resolve_target("sqlite:///sub/mlflow.db", "x", tmp_path / "study")
    assert target.uri == f"sqlite:///{tmp_path.resolve()}/sub/mlflow.db"
    # a store outside the study folder: artifacts still in it (MLflow's default is ./mlruns)
    assert target.artifact_location == (tmp_path / "study").resolve().joinpath("mlartifacts").as_uri()


def test_unreachable_server_is_refused_naming_it(tmp_path: Path) -> None:
    # How fast: one attempt, no retry loop (test_outage.py counts a silent server's connections).
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError, match="unreachable") as err:
        check_target(resolve_target(uri, "x", tmp_path))
    assert uri in str(err.value)


def test_sqlite_that_cannot_be_a_database(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TrackingError, match="cannot create"):
        check_target(resolve_target(f"sqlite:///{tmp_path}/afile/mlflow.db", "x", tmp_path))
    (tmp_path / "notdb.db").write_text("hello")
    with pytest.raises(TrackingError, match="not an SQLite database"):
        check_target(resolve_target(f"sqlite:///{tmp_path}/notdb.db", "x", tmp_path))
