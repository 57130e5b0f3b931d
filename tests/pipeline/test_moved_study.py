"""A study folder that was moved or copied stands alone (`--study NAME` with `runs/NAME/study.yaml`
naming the folder it was launched in): the first command that reads it relocates its own MLflow
store to it (pipeline.commands._study.relocate), after which `runs`, `pareto`, `export`,
`export --register` and MLflow loading a trial's model use the copy's files only. The session's
smoke study is never touched: it is copied to A, A to B, and A deleted."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.lock import acquire
from pipeline.record.tracking import ARTIFACT_COLUMNS, PATH_TAGS, TrackingTarget, relocate_store


def _copy_of_a_copy(smoke_study: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(B, A): A a copy of the smoke study, B a copy of A, A deleted."""
    a = tmp_path / "a" / "runs" / "digits"
    b = tmp_path / "b" / "runs" / "digits"
    shutil.copytree(smoke_study, a)
    shutil.copytree(a, b)
    shutil.rmtree(tmp_path / "a")
    return b, a


def _stored_paths(db: Path) -> list[str]:
    """Every artifact URI, `models:/` source and path tag the store holds (`relocate_store`'s
    columns)."""
    con = sqlite3.connect(db)
    try:
        # the study's experiment, not MLflow's "Default" (its ./mlruns, which is no study's)
        out = [v for (v,) in con.execute("SELECT artifact_location FROM experiments WHERE name = 'digits'")]
        out += [
            v for t, c in ARTIFACT_COLUMNS if t != "experiments" for (v,) in con.execute(f"SELECT {c} FROM {t}") if v
        ]
        marks = ",".join("?" * len(PATH_TAGS))
        out += [v for (v,) in con.execute(f"SELECT value FROM tags WHERE key IN ({marks})", PATH_TAGS) if v]
        return out
    finally:
        con.close()


@pytest.mark.slow
def test_a_copy_stands_alone_with_the_original_deleted(
    smoke_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import mlflow.pyfunc
    from mlflow import MlflowClient

    b, a = _copy_of_a_copy(smoke_study, tmp_path)
    before = _stored_paths(b / "mlflow.db")
    assert before and all(str(smoke_study) in v for v in before if not v.startswith("models:/"))
    monkeypatch.chdir(b.parent.parent)
    capsys.readouterr()
    # --mlflow: the store itself answers (the tables would, without touching it)
    assert cli.main(["runs", "--study", "digits", "--json", "--mlflow"]) == 0
    out = capsys.readouterr()
    assert "relocated study 'digits''s MLflow store to this folder" in out.err
    listed = json.loads(out.out)
    assert listed and str(smoke_study) not in out.out and str(a) not in out.out
    after = _stored_paths(b / "mlflow.db")
    assert len(after) == len(before)
    assert all(str(b) in v for v in after if not v.startswith("models:/")), after
    assert not any(str(smoke_study) in v for v in after)
    # once relocated, a second command finds nothing to do
    assert cli.main(["pareto", "--study", "digits", "--mlflow"]) == 0
    out = capsys.readouterr()
    assert "relocated" not in out.err and str(smoke_study) not in out.out
    assert cli.main(["runs", "--study", "digits"]) == 0  # from the tables
    assert cli.main(["export", "--study", "digits", "--out", str(tmp_path / "x")]) == 0
    assert cli.main(["export", "--verify", str(tmp_path / "x")]) == 0
    assert cli.main(["export", "--study", "digits", "--out", str(tmp_path / "y"), "--register", "m"]) == 0
    assert cli.main(["export", "--verify", str(tmp_path / "y")]) == 0
    capsys.readouterr()
    uri = f"sqlite:///{b / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert str(client.get_model_version_by_alias("m", "champion").version) == "1"
    con = sqlite3.connect(b / "mlflow.db")
    (stored,) = con.execute("SELECT storage_location FROM model_versions WHERE name = 'm'").fetchone()
    con.close()
    assert str(b) in stored and str(smoke_study) not in stored
    saved = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # `models:/m@champion` below: export --register sets neither
    try:
        experiment_id = client.get_experiment_by_name("digits").experiment_id
        models = mlflow.search_logged_models(
            experiment_ids=[experiment_id], filter_string="name = 'model'", output_format="list"
        )
        assert models and all(str(b) in m.artifact_location for m in models)
        # a trial's logged model, and the registered version, load from the copy's files
        assert mlflow.pyfunc.load_model(f"models:/{models[0].model_id}") is not None
        assert mlflow.pyfunc.load_model(f"runs:/{models[0].source_run_id}/model") is not None
        assert mlflow.pyfunc.load_model("models:/m@champion") is not None
    finally:
        mlflow.set_tracking_uri(saved[0])
        mlflow.set_registry_uri(saved[1])
    assert not a.exists() and not (tmp_path / "a").exists()  # nothing wrote where A used to be
    assert smoke_study.is_dir()


@pytest.mark.slow
def test_a_copy_held_by_a_driver_is_read_but_not_relocated(
    smoke_study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver holding the copy's folder: the store is not rewritten under it (one warning
    line), the runs are read through the folder's own files all the same, and `export
    --register`, which would write into the old folder, is refused in one line naming why."""
    b, _ = _copy_of_a_copy(smoke_study, tmp_path)
    before = _stored_paths(b / "mlflow.db")
    monkeypatch.chdir(b.parent.parent)
    capsys.readouterr()
    with acquire(b, "launch --resume"):
        assert cli.main(["runs", "--study", "digits", "--json", "--mlflow"]) == 0
        err = capsys.readouterr().err
        assert "was not relocated to it (the study in" in err and "in use by another driver" in err
        assert cli.main(["export", "--study", "digits", "--out", str(tmp_path / "y"), "--register", "m"]) == 2
        err = capsys.readouterr().err
        # the move's and the relocation's warnings, then the refusal in one line
        lines = err.strip().splitlines()
        assert len(lines) == 3 and "still names the folder it was written in" in lines[-1], lines
        assert cli.main(["export", "--study", "digits", "--out", str(tmp_path / "x")]) == 0
        assert cli.main(["export", "--verify", str(tmp_path / "x")]) == 0
    assert _stored_paths(b / "mlflow.db") == before


def test_relocation_rewrites_only_paths_under_the_old_folder(tmp_path: Path) -> None:
    """`relocate_store` on a hand-made store: the old folder's URIs and path tags move, a
    prefix-alike sibling folder (`digits2`), another folder and a `models:/` source do not, a
    `%` or `_` in the folder name is no wildcard, and it is done once."""
    old, new = tmp_path / "old" / "dig%_its", tmp_path / "new" / "dig%_its"
    new.mkdir(parents=True)
    art = (old / "mlartifacts").as_uri()
    con = sqlite3.connect(new / "mlflow.db")
    con.executescript(
        "CREATE TABLE experiments (name TEXT, artifact_location TEXT);"
        "CREATE TABLE runs (run_uuid TEXT, artifact_uri TEXT);"
        "CREATE TABLE tags (key TEXT, value TEXT, run_uuid TEXT);"
        "CREATE TABLE model_versions (source TEXT, storage_location TEXT);"
    )
    con.execute("INSERT INTO experiments VALUES ('digits', ?), ('Default', '/work/mlruns/0')", (art,))
    con.executemany("INSERT INTO runs VALUES (?, ?)", [
        ("r1", f"{art}/r1/artifacts"), ("r2", f"{art}2/r2/artifacts"), ("r3", "file:///elsewhere/r3"),
        ("r4", art.replace("dig%25_its", "digXYits") + "/r4"),
    ])  # fmt: skip
    con.executemany("INSERT INTO tags VALUES (?, ?, 'r1')", [
        ("syncstudy.storage", str(old)), ("syncstudy.checkpoint", f"{old}/tune/t1/checkpoint_000000"),
        ("mlflow.note.content", f"{old}/tune"), ("syncstudy.checkpoint", f"{old}2/tune"),
    ])  # fmt: skip
    con.execute("INSERT INTO model_versions VALUES ('models:/m-1', ?)", (f"{art}/models/m-1/artifacts",))
    con.commit()
    con.close()
    target = TrackingTarget(f"sqlite:///{new / 'mlflow.db'}", "digits", (new / "mlartifacts").as_uri())
    done = relocate_store(target, new)
    assert done is not None and done.old == old and done.new == new and done.rows == 5
    con = sqlite3.connect(new / "mlflow.db")
    moved = (new / "mlartifacts").as_uri()
    assert con.execute("SELECT artifact_location FROM experiments ORDER BY name").fetchall() == [
        ("/work/mlruns/0",), (moved,),
    ]  # fmt: skip
    assert [v for (v,) in con.execute("SELECT artifact_uri FROM runs ORDER BY run_uuid")] == [
        f"{moved}/r1/artifacts", f"{art}2/r2/artifacts", "file:///elsewhere/r3",
        art.replace("dig%25_its", "digXYits") + "/r4",
    ]  # fmt: skip
    assert [v for (v,) in con.execute("SELECT value FROM tags")] == [
        str(new), f"{new}/tune/t1/checkpoint_000000", f"{old}/tune", f"{old}2/tune",
    ]  # fmt: skip
    assert con.execute("SELECT * FROM model_versions").fetchall() == [("models:/m-1", f"{moved}/models/m-1/artifacts")]
    con.close()
    assert relocate_store(target, new) is None  # done once
    # a store that is not the folder's own (artifacts named elsewhere) is never rewritten
    assert relocate_store(TrackingTarget(target.uri, "digits", "file:///srv/art"), new) is None
