"""Damaged or edited files of a study folder (issue 27, item 5): each ends in one line naming
the file and exit 2, or in a documented recovery; never a traceback, never a silently wrong
answer.

One tiny smoke study is launched per module; each test damages a copy of its folder
(`shutil.copytree`; the copy's `study.yaml` names the copy) and runs the real CLI on it.
A resume that refuses does so before Ray starts: the copy's `launch.log`, where Ray's
start-up lines go, is checked to be unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.record.digest import DIGEST_FILE, TAG_DIGEST, digest_text

SMALL = {
    "samples": 2,
    "train": {"epochs": 1, "n_train": 200, "width": 8},
    "evaluation": {"max_images": 60, "pictures": False},
}
READERS = (["runs"], ["pareto"], ["export", "--out", "OUT"])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, write_spec, syncstudy) -> Path:  # noqa: ANN001
    root = tmp_path_factory.mktemp("damaged")
    storage = root / "study"
    spec = write_spec(root / "s.yaml", storage=str(storage), **SMALL)
    run = syncstudy("launch", str(spec), "--smoke", cwd=root)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (storage / DIGEST_FILE).is_file()
    return storage


@pytest.fixture
def study(base: Path, tmp_path: Path) -> Path:
    """A copy of the module's study folder whose study.yaml names the copy (storage and its
    sqlite store)."""
    copy = tmp_path / "study"
    shutil.copytree(base, copy, symlinks=True)
    spec = copy / "study.yaml"
    spec.write_text(spec.read_text().replace(str(base), str(copy)))
    return copy


def _one_line_refusal(run, name: str) -> None:  # noqa: ANN001 - CompletedProcess
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert name in run.stderr, run.stderr


def _read(study: Path, syncstudy, argv: list[str]):  # noqa: ANN001, ANN202
    argv = [a.replace("OUT", str(study.parent / "out")) for a in argv]
    return syncstudy(argv[0], str(study / "study.yaml"), *argv[1:], cwd=study.parent, timeout=300)


def _rows(study: Path) -> list[dict]:
    return pq.read_table(study / "trials.parquet").to_pylist()


def _rewrite(study: Path, rows: list[dict], *, digest: bool = False) -> None:
    """trials.parquet written again with `rows` (as an editor with pyarrow would), keeping
    its schema; with `digest`, tables.sha256 rewritten to match (an editor who knows it)."""
    schema = pq.read_schema(study / "trials.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), study / "trials.parquet")
    if digest:
        names = ["trials.parquet", "history.parquet", "neurons.parquet"]
        (study / DIGEST_FILE).write_text(digest_text(study, names))


def _worst(study: Path) -> dict:
    return min(_rows(study), key=lambda r: r["metrics.val_acc"])


def _worst_scored_099(study: Path) -> list[dict]:
    """The rows with the worst trial's score and accuracy edited to 0.99 (export would take it)."""
    rows = _rows(study)
    worst = _worst(study)["trial_id"]
    for r in rows:
        if r["trial_id"] == worst:
            r["metrics.interpretability"] = 0.99
            r["metrics.val_acc"] = 0.99
    return rows


# --------------------------------------------------------------------------- the readers


@pytest.mark.parametrize("argv", READERS, ids=lambda a: a[0])
@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_a_damaged_trials_table_is_named_by_the_readers(study: Path, syncstudy, argv: list[str], damage: str) -> None:  # noqa: ANN001
    path = study / "trials.parquet"
    data = path.read_bytes()
    path.write_bytes(b"not a table\n" if damage == "garbage" else data[: len(data) // 2])
    run = _read(study, syncstudy, argv)
    _one_line_refusal(run, str(path))
    assert not (study.parent / "out").exists()


def test_an_edited_metric_is_refused_before_export_picks_a_trial(study: Path, syncstudy) -> None:  # noqa: ANN001
    """Before: the worst trial's score set to 0.99 made export take it, and its README said 0.99."""
    _rewrite(study, _worst_scored_099(study))
    for argv in READERS:
        run = _read(study, syncstudy, argv)
        _one_line_refusal(run, f"{study / 'trials.parquet'} is not the table the driver wrote")
        assert "0.99" not in run.stdout
    assert not (study.parent / "out").exists()


def test_a_deleted_row_is_refused(study: Path, syncstudy) -> None:  # noqa: ANN001
    """Before: `runs` said "1 trials" of a study of two."""
    _rewrite(study, [r for r in _rows(study) if r["trial_id"] != _worst(study)["trial_id"]])
    run = _read(study, syncstudy, ["runs"])
    _one_line_refusal(run, "trials.parquet")
    assert "1 trials" not in run.stdout


def test_a_table_and_its_digest_rewritten_together_are_refused_by_export(study: Path, syncstudy) -> None:  # noqa: ANN001
    """Someone who knows the digest: the worst trial's score set to 0.99 and tables.sha256
    rewritten to match, so the folder's own check passes. `export` holds the digest to its copy
    on the parent run and refuses, naming both; `runs` and `pareto` stay off the store and
    answer from the tables (docs/reliability.md)."""
    _rewrite(study, _worst_scored_099(study), digest=True)
    run = _read(study, syncstudy, ["export", "--out", "OUT"])
    _one_line_refusal(run, f"{study / DIGEST_FILE} differs from its copy on the study's MLflow parent run")
    assert TAG_DIGEST in run.stderr and "0.99" not in run.stdout
    assert not (study.parent / "out").exists()
    assert _read(study, syncstudy, ["runs"]).returncode == 0


def test_a_table_without_its_columns_is_named_even_with_a_matching_digest(study: Path, syncstudy) -> None:  # noqa: ANN001
    """The digest rewritten too (someone who knows it): the columns' check still names the file."""
    table = pq.read_table(study / "trials.parquet").drop_columns(["status", "trial_id"])
    pq.write_table(table, study / "trials.parquet")
    (study / DIGEST_FILE).write_text(digest_text(study, ["trials.parquet", "history.parquet", "neurons.parquet"]))
    run = _read(study, syncstudy, ["pareto"])
    _one_line_refusal(run, f"{study / 'trials.parquet'} is not a table the driver wrote")


def test_a_garbled_digest_is_named(study: Path, syncstudy) -> None:  # noqa: ANN001
    (study / DIGEST_FILE).write_text("not a digest\n")
    _one_line_refusal(_read(study, syncstudy, ["runs"]), str(study / DIGEST_FILE))


def test_mlflow_still_answers_for_a_damaged_table(study: Path, syncstudy) -> None:  # noqa: ANN001
    """The recovery the refusal names for reading: `--mlflow`."""
    (study / "trials.parquet").write_bytes(b"garbage")
    run = _read(study, syncstudy, ["runs", "--mlflow"])
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 trials of study" in run.stdout


def test_the_digest_is_also_on_the_parent_run(base: Path) -> None:
    from pipeline.record.tracking import Tracker, resolve_target

    tracker = Tracker(resolve_target(f"sqlite:///{base / 'mlflow.db'}", "digits", base), "digits")
    assert tracker.parent().data.tags[TAG_DIGEST] == (base / DIGEST_FILE).read_text()


def test_a_damaged_checkpoint_is_named_by_export(base: Path, tmp_path: Path, syncstudy) -> None:  # noqa: ANN001
    """The module's own folder (a copy's rows name the original's checkpoints, which export
    then leaves for MLflow's copies): its checkpoints cut in half, and put back after."""
    models = [Path(r["checkpoint"]) / "model.safetensors" for r in _rows(base)]
    kept = {m: m.read_bytes() for m in models}
    try:
        for m, data in kept.items():
            m.write_bytes(data[: len(data) // 2])
        run = syncstudy("export", str(base / "study.yaml"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    finally:
        for m, data in kept.items():
            m.write_bytes(data)
    _one_line_refusal(run, "model.safetensors")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- launch --resume


def _resume(study: Path, syncstudy, spec: Path | None = None):  # noqa: ANN001, ANN202
    log = (study / "launch.log").read_bytes()
    run = syncstudy("launch", str(spec or study / "study.yaml"), "--resume", cwd=study.parent, timeout=300)
    assert (study / "launch.log").read_bytes() == log, "Ray started (its lines reached launch.log)"
    return run


def _spec_beside(study: Path) -> Path:
    """The resolved spec copied out of the folder, so that the folder's own can be damaged."""
    spec = study.parent / "spec.yaml"
    shutil.copy(study / "study.yaml", spec)
    return spec


@pytest.mark.parametrize("name", ["trials.parquet", "history.parquet", "neurons.parquet"])
@pytest.mark.parametrize("damage", ["garbage", "edited"])
def test_resume_names_a_damaged_table_before_ray_starts(study: Path, syncstudy, name: str, damage: str) -> None:  # noqa: ANN001
    path = study / name
    if damage == "garbage":
        path.write_bytes(b"PAR1 not a table PAR1")
    else:  # one value changed, the file still a valid table
        table = pq.read_table(path)
        column = next(i for i, f in enumerate(table.schema) if pa.types.is_floating(f.type))
        values = table.column(column).to_pylist()
        values[0] = 0.99
        pq.write_table(table.set_column(column, table.schema[column], pa.array(values, table.schema[column].type)), path)
    _one_line_refusal(_resume(study, syncstudy), str(path))


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe not utf-8", b"name: [unclosed\n", b"- a list\n- not a mapping\n"],
    ids=["not-utf8", "not-yaml", "not-a-mapping"],
)
def test_resume_names_a_damaged_study_yaml_before_ray_starts(study: Path, syncstudy, content: bytes) -> None:  # noqa: ANN001
    spec = _spec_beside(study)
    (study / "study.yaml").write_bytes(content)
    run = _resume(study, syncstudy, spec)
    _one_line_refusal(run, str(study / "study.yaml"))


def test_resume_names_a_damaged_instance_file_before_ray_starts(study: Path, syncstudy) -> None:  # noqa: ANN001
    (study / "instance.json").write_text("{not json")
    _one_line_refusal(_resume(study, syncstudy), str(study / "instance.json"))


def test_resume_names_a_lock_that_is_a_folder(study: Path, syncstudy) -> None:  # noqa: ANN001
    (study / ".lock").unlink()
    (study / ".lock").mkdir()
    _one_line_refusal(_resume(study, syncstudy), str(study / ".lock"))


def test_resume_with_tune_state_and_its_copy_damaged_ends_in_one_line(study: Path, syncstudy) -> None:  # noqa: ANN001
    """(A damaged tuner.pkl with a whole kept copy is restored from it: test_torn_state.py.)"""
    for folder in ("tune", "tune.good"):
        (study / folder / "tuner.pkl").write_bytes(b"\x80\x05 cut")
    _one_line_refusal(_resume(study, syncstudy), "tuner.pkl")


@pytest.mark.slow
def test_a_damaged_table_moved_aside_is_rebuilt_by_resume(study: Path, syncstudy) -> None:  # noqa: ANN001
    """The recovery the refusal names: move the table aside, `launch --resume` writes it again
    from Tune's results and MLflow; the rows and their runs match, each trial once."""
    before = {r["trial_id"]: r for r in _rows(study)}
    (study / "trials.parquet").write_bytes(b"garbage")
    (study / "trials.parquet").rename(study / "trials.parquet.damaged")
    run = syncstudy("launch", str(study / "study.yaml"), "--resume", cwd=study.parent, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    after = {r["trial_id"]: r for r in _rows(study)}
    assert sorted(after) == sorted(before)
    for tid, row in before.items():
        assert after[tid]["mlflow_run_id"] == row["mlflow_run_id"]
        assert after[tid]["metrics.val_acc"] == row["metrics.val_acc"]
    listed = _read(study, syncstudy, ["runs"])
    assert listed.returncode == 0 and "2 trials of study" in listed.stdout, listed.stdout + listed.stderr


@pytest.mark.slow
def test_a_deleted_instance_file_is_taken_back_by_resume(tmp_path: Path, write_spec, syncstudy) -> None:  # noqa: ANN001
    """`instance.json` deleted: `launch --resume` finds the folder's own parent run (its
    `syncstudy.storage` tag names this folder), takes its id back into `instance.json` and
    resumes the study (it made a new id and then refused, naming its own folder as another
    study's). Another folder's parent run of the name is still refused (test_identity.py)."""
    from pipeline.record.identity import read_instance

    storage = tmp_path / "study"
    spec = write_spec(tmp_path / "s.yaml", storage=str(storage), **SMALL)
    first = syncstudy("launch", str(spec), "--smoke", cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    before_id, before = read_instance(storage), {r["trial_id"]: r["mlflow_run_id"] for r in _rows(storage)}
    (storage / "instance.json").unlink()
    run = syncstudy("launch", str(storage / "study.yaml"), "--resume", cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert read_instance(storage) == before_id
    assert {r["trial_id"]: r["mlflow_run_id"] for r in _rows(storage)} == before  # the same runs, none retrained
    listed = _read(storage, syncstudy, ["runs"])
    assert listed.returncode == 0 and "2 trials of study" in listed.stdout, listed.stdout + listed.stderr
