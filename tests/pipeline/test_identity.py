"""A study's identity is its instance, not its name (pipeline.record.identity): two study
folders of one name in one tracking store never share or delete each other's runs; the
second is refused (exit 2, naming the first) unless it takes another name; a study from
before instance ids still resumes (its folder adopts the old parent run)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline.record.identity import INSTANCE_FILE, ensure_instance, read_instance
from pipeline.record.tracking import (
    TAG_INSTANCE,
    TAG_ROLE,
    TAG_TRIAL,
    StudyConflict,
    Tracker,
    check_target,
    resolve_target,
)


def _tracker(store: Path, instance: str | None, storage: str = "", adopt: bool = False, name: str = "s") -> Tracker:
    target = resolve_target(None, "exp", store)
    check_target(target)
    return Tracker(target, name, instance=instance, storage=storage or None, adopt=adopt)


def test_instance_id_is_created_once_per_folder(tmp_path: Path) -> None:
    first, created = ensure_instance(tmp_path)
    assert created and read_instance(tmp_path) == first
    assert ensure_instance(tmp_path) == (first, False)
    assert (tmp_path / INSTANCE_FILE).is_file()
    assert read_instance(tmp_path / "elsewhere") is None


def test_second_instance_of_a_name_is_refused_naming_the_first(tmp_path: Path) -> None:
    a = _tracker(tmp_path, "aaa", storage="/runs/first")
    parent = a.parent_run({}, {})
    a.trial_run("t1", parent, {})
    b = _tracker(tmp_path, "bbb", storage="/runs/second")
    with pytest.raises(StudyConflict) as err:
        b.parent_run({}, {})
    assert "/runs/first" in str(err.value) and "aaa" in str(err.value) and "--name" in str(err.value)
    assert [r.trial_id for r in a.trials()] == ["t1"]  # nothing of the first one touched


def test_orphan_clean_up_stays_within_its_instance(tmp_path: Path) -> None:
    a = _tracker(tmp_path, "aaa")
    a.trial_run("t1", a.parent_run({}, {}), {})
    b = _tracker(tmp_path, "bbb")
    # (a parent run of its own is refused; its clean-up must not reach into the first's runs)
    assert b.delete_orphans(set()) == []
    assert [r.trial_id for r in a.trials()] == ["t1"]


def test_another_name_in_the_same_store_is_a_distinct_study(tmp_path: Path) -> None:
    a = _tracker(tmp_path, "aaa")
    b = _tracker(tmp_path, "bbb", name="renamed")
    assert a.parent_run({}, {}) != b.parent_run({}, {})


def test_a_study_from_before_instance_ids_is_adopted_on_resume(tmp_path: Path) -> None:
    old = _tracker(tmp_path, None)  # how the driver wrote runs before instance ids
    parent = old.parent_run({}, {})
    old.trial_run("t1", parent, {})
    resumed = _tracker(tmp_path, "ccc", storage="/runs/old", adopt=True)
    assert resumed.parent_run({}, {}) == parent
    assert [r.trial_id for r in resumed.trials()] == ["t1"]
    assert resumed.client.get_run(parent).data.tags[TAG_INSTANCE] == "ccc"
    # ...while a new instance (a first launch elsewhere) is refused
    with pytest.raises(StudyConflict):
        _tracker(tmp_path, "ddd").parent_run({}, {})


def test_second_folder_same_tracking_store_is_refused(
    tmp_path: Path, write_spec, syncstudy, smoke_study  # noqa: ANN001
) -> None:
    """Issue 14 item 1, end to end: the smoke study's spec launched into another folder with
    the first one's tracking URI exits 2 with one line naming the first folder, and deletes
    none of its runs (before: it reused its parent run and soft-deleted its trial runs)."""
    uri = f"sqlite:///{smoke_study / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("digits")
    before = sorted(r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=1000))
    storage = tmp_path / "second"
    spec = write_spec(tmp_path / "digits.yaml")
    out = syncstudy("launch", str(spec), "--smoke", "--storage", str(storage), "--tracking-uri", uri)
    assert out.returncode == 2, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert str(smoke_study) in last and "--name" in last and "Traceback" not in out.stderr, out.stderr
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in runs) == before
    trials = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
    assert {r.info.lifecycle_stage for r in trials} == {"active"}
    ids = sorted(r["trial_id"] for r in pq.read_table(smoke_study / "trials.parquet").to_pylist())
    assert sorted(r.data.tags[TAG_TRIAL] for r in trials) == ids
    assert not storage.exists()  # refused before it started: the folder it made is gone
