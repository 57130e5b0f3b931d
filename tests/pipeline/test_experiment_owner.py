"""A study never writes its artifacts into another study's folder (issue 27): an MLflow
experiment has one artifact location, so a first launch into an experiment whose artifacts
live elsewhere is refused (pipeline.record.experiment_owner); a comparison's studies, which
share the comparison's experiment and folder by design, are not.

Two study folders share one sqlite store here; the studies are made with the Tracker (no Ray),
and the CLI's refusal comes before Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.paths import storage_of, target_of
from pipeline.record import experiment_owner
from pipeline.record.experiment_owner import ExperimentTaken, Recorded, refusal, same_place
from pipeline.record.tracking import StudyConflict, Tracker, TrackingTarget, resolve_target
from pipeline.spec import load_spec
from pipeline.spec.arms import load_comparison

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "studies" / "digits.yaml"
COMPARISON = ROOT / "studies" / "compare-shapes.yaml"


def _spec_file(path: Path, name: str, storage: Path, uri: str, experiment: str | None = None) -> Path:
    doc = yaml.safe_load(DIGITS.read_text())
    doc.update(name=name, storage=str(storage), tracking={"uri": uri, "experiment": experiment})
    doc["smoke"]["storage"] = str(storage)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _spec(tmp_path: Path, name: str, storage: Path, uri: str, experiment: str | None = None):  # noqa: ANN202
    path = _spec_file(tmp_path / f"{name}.yaml", name, storage, uri, experiment)
    return load_spec(path, smoke=True, check_data=False, writable=False)


def _study_a(tmp_path: Path) -> tuple[Path, str, Tracker]:
    """Study "a" in its folder, with its own store: experiment "a", artifacts in a/mlartifacts."""
    folder = (tmp_path / "a").resolve()
    folder.mkdir()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = Tracker(resolve_target(uri, "a", folder), "a", instance="aaa", storage=str(folder))
    tracker.parent_run({}, {})
    return folder, uri, tracker


def test_a_second_study_into_the_firsts_experiment_is_refused_before_ray(tmp_path: Path) -> None:
    folder, uri, a = _study_a(tmp_path)
    spec = _spec(tmp_path, "b", tmp_path / "b", uri, experiment="a")
    target = target_of(spec, storage_of(spec))
    with pytest.raises(ExperimentTaken) as err:
        experiment_owner.preflight(spec, target)
    message = str(err.value)
    assert "tracking.experiment 'a'" in message and str(folder / "mlartifacts") in message
    assert str((tmp_path / "b" / "mlartifacts").resolve()) in message
    assert "another tracking.experiment" in message and "\n" not in message
    # ...and the same at the driver's set-up, once the experiment exists (a launch that raced)
    b = Tracker(target, "b", instance="bbb", storage=str(tmp_path / "b"))
    with pytest.raises(ExperimentTaken):
        experiment_owner.check(b, spec)
    assert [r.info.run_name for r in a.client.search_runs([a.experiment_id])] == ["a"]


def test_a_study_named_as_the_experiment_is_told_to_take_another_name(tmp_path: Path) -> None:
    """No tracking.experiment: the experiment is the study's name, so `--name` is the way out.
    (A study "a" from another folder: Tracker.parent_run's refusal names that folder instead.)"""
    _, uri, _ = _study_a(tmp_path)
    target = TrackingTarget(uri, "a", (tmp_path / "b" / "mlartifacts").as_uri())
    spec = _spec(tmp_path, "b", tmp_path / "b", uri)
    message = refusal(spec, target, Recorded((tmp_path / "a" / "mlartifacts").as_uri(), "a", False))
    assert message is not None and "(the study's name)" in message and "launch --name NEW" in message


def test_the_same_name_from_another_folder_is_left_to_the_parent_runs_refusal(tmp_path: Path) -> None:
    _, uri, _ = _study_a(tmp_path)
    spec = _spec(tmp_path, "a", tmp_path / "other", uri)
    target = target_of(spec, storage_of(spec))
    experiment_owner.preflight(spec, target)  # passes: the refusal below names the first folder
    again = Tracker(target, "a", instance="ccc", storage=str(tmp_path / "other"))
    experiment_owner.check(again, spec)
    with pytest.raises(StudyConflict, match=str(tmp_path / "a")):
        again.parent_run({}, {})


def test_a_study_in_its_own_store_and_a_new_experiment_pass(tmp_path: Path) -> None:
    _, uri, _ = _study_a(tmp_path)
    own = _spec(tmp_path, "c", tmp_path / "c", f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}")
    experiment_owner.preflight(own, target_of(own, storage_of(own)))  # no store yet
    fresh = _spec(tmp_path, "d", tmp_path / "d", uri)  # a shared store, a new experiment "d"
    target = target_of(fresh, storage_of(fresh))
    experiment_owner.preflight(fresh, target)
    experiment_owner.check(Tracker(target, "d", instance="ddd"), fresh)  # it makes "d" itself


def test_a_comparisons_studies_share_its_experiment(tmp_path: Path) -> None:
    """Every arm x repeat study records into the comparison's experiment, whose artifacts are
    in the comparison's folder: each passes both checks. A study of its own into that
    experiment is refused."""
    from pipeline.comparison import comparison_parent, comparison_tracker

    comp = load_comparison(COMPARISON, smoke=True, overrides={"storage": str(tmp_path / "cmp")}, check_data=False)
    tracker = comparison_tracker(comp)
    comparison_parent(tracker, comp)  # makes the experiment, as launch does first
    for _, _, spec in comp.studies():
        target = target_of(spec, storage_of(spec))
        experiment_owner.preflight(spec, target)
        experiment_owner.check(Tracker(target, spec.name, instance=spec.name), spec)
    stranger = _spec(tmp_path, "stranger", tmp_path / "s", tracker.target.uri, experiment=comp.name)
    with pytest.raises(ExperimentTaken, match=str(tmp_path / "cmp" / "mlartifacts")):
        experiment_owner.preflight(stranger, target_of(stranger, storage_of(stranger)))


@pytest.mark.parametrize(
    ("held", "refused"),
    [("mlflow-artifacts:/3", False), ("s3://bucket/exp", False), ("/srv/mlruns/3", False),
     ("file:///runs/a/mlartifacts", True), ("/runs/a/mlartifacts/", True)],
)  # fmt: skip
def test_a_server_default_target_is_refused_only_a_study_folder(tmp_path: Path, held: str, refused: bool) -> None:
    """`http(s)` with no tracking.artifact_location: the server's default, wherever the
    experiment keeps its artifacts, unless that is a study folder's `mlartifacts`."""
    spec = _spec(tmp_path, "b", tmp_path / "b", "http://127.0.0.1:5000", experiment="a")
    target = TrackingTarget("http://127.0.0.1:5000", "a", None)
    message = refusal(spec, target, Recorded(held, "a", False))
    assert (message is not None) == refused
    if refused:
        assert "/runs/a/mlartifacts" in message and "the server default" in message


def test_mlflows_client_reads_what_the_direct_sqlite_read_does(tmp_path: Path) -> None:
    """Stores other than sqlite (servers, databases) are read through MLflow's client; on the
    same store both readers agree."""
    from pipeline.record import store_read

    folder, uri, a = _study_a(tmp_path)
    exp = store_read._experiment_sqlite(uri, "a")
    assert exp == store_read._experiment_client(uri, "a")
    assert exp.artifact_location == (folder / "mlartifacts").as_uri() and exp.tags["syncstudy.study"] == "a"
    (run,) = store_read._parent_runs_sqlite(uri, exp.experiment_id, "a")
    assert [run] == store_read._parent_runs_client(uri, exp.experiment_id, "a")
    assert run.run_id == a.parent().info.run_id and run.tags["syncstudy.instance"] == "aaa"
    assert store_read._parent_runs_sqlite(uri, exp.experiment_id, "b") == []
    assert store_read._parent_runs_client(uri, exp.experiment_id, "b") == []
    assert store_read._experiment_sqlite(uri, "none") is None is store_read._experiment_client(uri, "none")
    assert store_read._experiment_sqlite(f"sqlite:///{tmp_path / 'no.db'}", "a") is None
    assert not (tmp_path / "no.db").exists()  # read-only: nothing made


def test_artifact_locations_are_compared_as_places() -> None:
    assert same_place("/x/cmp/mlartifacts", "file:///x/cmp/mlartifacts")
    assert same_place("file:///x/a%20b/mlartifacts", "/x/a b/mlartifacts/")
    assert same_place("s3://b/x/", "s3://b/x")
    assert not same_place("/x/a/mlartifacts", "/x/b/mlartifacts")
    assert not same_place("s3://b/x", "/x")
    assert not same_place(None, "/x") and same_place(None, None)


def test_the_cli_refuses_in_one_line_before_ray_and_writes_nothing(tmp_path: Path, syncstudy) -> None:  # noqa: ANN001
    folder, uri, a = _study_a(tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    spec = _spec_file(tmp_path / "b.yaml", "b", tmp_path / "b", uri, experiment="a")
    run = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(folder / "mlartifacts") in run.stderr and "tracking.experiment 'a'" in run.stderr
    assert not (tmp_path / "b").exists()  # the folder the refused launch made is removed
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [r.info.run_name for r in a.client.search_runs([a.experiment_id])] == ["a"]
    # A folder that was there is kept: only its lock was taken, and Ray, whose start-up lines
    # go to launch.log, never started; no instance id or spec was written.
    (tmp_path / "b").mkdir()
    run = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [".lock"]
