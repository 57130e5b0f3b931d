"""A study folder that cannot be turned against its owner (issue 27), and specs `validate`
must refuse because `launch` cannot run them.

A study folder may sit on a shared file system where others can write: a link planted in it
must never make the driver write, truncate, lock or delete what the link names
(pipeline.safe_files), and a removed lock file must not let a second driver run beside a live
one (pipeline.lock). Each test plants the fault, runs the real code path, and checks that the
link's target (`victim`, beside the study folder) is exactly as it was.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest
from test_lock import _holder

from pipeline import cli
from pipeline.lock import LOCK_FILE, StudyLocked, acquire, held
from pipeline.paths import SPEC_FILE
from pipeline.record.identity import INSTANCE_FILE, ensure_instance
from pipeline.record.tables import HISTORY, NEURONS, PARTS, TRIALS, StudyTables, TrialRow
from pipeline.safe_files import UnsafeFolder
from pipeline.spec import dump_resolved, load_spec

ROOT = Path(__file__).resolve().parents[2]
PRECIOUS = b"precious: not the driver's to write\n"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(PRECIOUS)
    return path


def _plant(storage: Path, name: str, target: Path) -> Path:
    """`ln -s ../victim STORAGE/name`, as someone else with write access to the folder would."""
    link = storage / name
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)
    return link


def _untouched(victim: Path) -> None:
    assert victim.read_bytes() == PRECIOUS
    assert stat.S_ISREG(os.lstat(victim).st_mode)


# --------------------------------------------------------------------------- item 1: links


def test_a_linked_lock_file_is_refused_not_written(tmp_path: Path, victim: Path) -> None:
    storage = tmp_path / "st"
    link = _plant(storage, LOCK_FILE, victim)
    with pytest.raises(UnsafeFolder, match=r"\.lock is a symbolic link"):
        acquire(storage)
    _untouched(victim)
    assert os.path.islink(link)  # refused, not "repaired": the folder is left as it was
    assert held(storage) is False  # a reader does not follow it (nor lock the victim) either


def test_a_linked_spec_temp_file_and_study_yaml_are_never_written_through(tmp_path: Path, victim: Path) -> None:
    storage = tmp_path / "st"
    spec = load_spec(ROOT / "studies" / "digits.yaml", smoke=True, overrides={"storage": str(storage)})
    # the old fixed temporary name, and the file itself
    _plant(storage, f".{SPEC_FILE}.tmp", victim)
    _plant(storage, SPEC_FILE, victim)
    dump_resolved(spec, storage / SPEC_FILE)
    _untouched(victim)
    written = storage / SPEC_FILE
    assert not written.is_symlink() and "resolved study spec" in written.read_text()
    assert sorted(p.name for p in storage.iterdir()) == [f".{SPEC_FILE}.tmp", SPEC_FILE]  # no temp left


def test_a_linked_instance_file_is_replaced_not_written_through(tmp_path: Path, victim: Path) -> None:
    storage = tmp_path / "st"
    _plant(storage, INSTANCE_FILE, victim)
    instance, new = ensure_instance(storage)
    _untouched(victim)
    assert new and not (storage / INSTANCE_FILE).is_symlink()
    assert json.loads((storage / INSTANCE_FILE).read_text())["id"] == instance


def _tables_with_one_trial(storage: Path) -> StudyTables:
    tables = StudyTables(storage)
    tables.upsert_trial(TrialRow("t1", "ok", {"lr": 0.1}, {"test_acc": 0.5}))
    tables.upsert_history("t1", [{"epoch": 1, "val_acc": 0.4}])
    tables.set_neurons("t1", pa.table({"neuron": [0, 1]}))
    return tables


@pytest.mark.parametrize("name", [TRIALS, HISTORY, NEURONS])
def test_linked_tables_are_replaced_not_written_through(tmp_path: Path, victim: Path, name: str) -> None:
    storage = tmp_path / "st"
    tables = _tables_with_one_trial(storage)  # loaded first: this is about the writes
    _plant(storage, name, victim)
    tables.compact()
    _untouched(victim)
    assert not (storage / name).is_symlink() and (storage / name).stat().st_size > 0


@pytest.mark.parametrize("table", ["trials", "history", "neurons"])
def test_linked_part_files_are_replaced_not_written_through(tmp_path: Path, victim: Path, table: str) -> None:
    storage = tmp_path / "st"
    tables = _tables_with_one_trial(storage)
    _plant(storage, f"{PARTS}/{table}/t1.parquet", victim)
    tables.write()
    _untouched(victim)
    assert not (storage / PARTS / table / "t1.parquet").is_symlink()


def test_a_linked_parts_folder_is_refused_and_nothing_is_written_or_removed_there(tmp_path: Path) -> None:
    storage = tmp_path / "st"
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "trials").mkdir(parents=True)
    keep = elsewhere / "trials" / "t1.parquet"
    keep.write_bytes(PRECIOUS)
    storage.mkdir()
    tables = _tables_with_one_trial(storage)
    os.symlink("../elsewhere", storage / PARTS)
    with pytest.raises(UnsafeFolder, match=rf"{PARTS} is a symbolic link"):
        tables.write()
    with pytest.raises(UnsafeFolder):
        tables.drop(["t1"])  # the delete of a trial's part files does not go there either
    assert keep.read_bytes() == PRECIOUS and sorted(p.name for p in elsewhere.rglob("*")) == ["t1.parquet", "trials"]


def test_a_linked_launch_log_is_never_appended_to(tmp_path: Path, victim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from pipeline.commands.launch import LOG_FILE, _FolderFileHandler

    storage = tmp_path / "st"
    _plant(storage, LOG_FILE, victim)
    handler = _FolderFileHandler(storage / LOG_FILE, delay=True)
    for _ in range(2):  # a library's log call is not broken by it; said once, then dropped
        handler.emit(logging.LogRecord("ray", logging.INFO, __file__, 1, "a line", None, None))
    handler.close()
    _untouched(victim)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "launch.log is a symbolic link" in err[0], err


@pytest.mark.parametrize("name", [LOCK_FILE, "launch.log"])
def test_launch_resume_into_a_folder_with_a_planted_link_exits_2_and_leaves_the_target(
    tmp_path: Path, victim: Path, write_spec, syncstudy, name: str  # noqa: ANN001
) -> None:
    """The issue's own reproduction: `ln -s ../victim st/.lock; syncstudy launch ... --resume
    --storage st` exited 2 and `victim` held the lock's JSON. Refused before Ray starts."""
    storage = tmp_path / "st"
    _plant(storage, name, victim)
    spec = write_spec(tmp_path / "tiny.yaml")
    before = sorted(p.name for p in storage.iterdir())
    out = syncstudy("launch", str(spec), "--smoke", "--resume", "--storage", str(storage), timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{storage / name} is a symbolic link" in lines[0], out.stderr
    _untouched(victim)
    assert sorted(p.name for p in storage.iterdir()) == before


# --------------------------------------------------------------------------- item 2: rm .lock


def test_a_removed_lock_file_does_not_let_a_second_driver_in(tmp_path: Path, write_spec, syncstudy) -> None:  # noqa: ANN001
    storage = tmp_path / "st"
    proc = _holder(storage)  # a driver's lock, held until killed
    try:
        (storage / LOCK_FILE).unlink()  # `rm st/.lock` beside the live driver
        assert held(storage)  # what `runs` and `pareto` ask
        with pytest.raises(StudyLocked) as err:
            acquire(storage)
        message = str(err.value)
        assert f"pid {proc.pid}" in message  # found without the lock file's details
        assert message.endswith("wait for it to end, or stop that driver")  # no file to remove named
        # recreated by someone (or by the refused driver of an older version): still refused
        (storage / LOCK_FILE).write_text("")
        with pytest.raises(StudyLocked):
            acquire(storage)
        spec = write_spec(tmp_path / "tiny.yaml")
        out = syncstudy("launch", str(spec), "--smoke", "--resume", "--storage", str(storage), timeout=120)
        assert out.returncode == 2, out.stdout + out.stderr
        line = out.stderr.strip().splitlines()[-1]
        assert "in use by another driver" in line and f"pid {proc.pid}" in line, out.stderr
    finally:
        proc.kill()
        proc.wait()
    acquire(storage).release()  # the dead driver's locks went with it


# --------------------------------------------------------------------------- item 6: validate

SPEC = """\
name: rt8
train: {dataset: digits, epochs: 1}
search:
  lr: {low: 1.0e-3, high: 1.0e-1, log: true}
objectives:
  - {metric: test_acc, mode: max}
samples: 2
"""


def _validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = cli.main(["validate", str(path)])
    except SystemExit as exc:
        rc = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    return int(rc), out + err


@pytest.mark.parametrize(
    ("extra", "field", "text"),
    [
        ("resources: {cpu: 0.00001}\n", "resources.cpu", "steps of 0.0001"),
        ("resources: {cpu: 0.00015}\n", "resources.cpu", "steps of 0.0001"),
        ("resources: {gpu: 0.00005}\n", "resources.gpu", "steps of 0.0001"),
        ('name: "rt8\\n"\n', "name", "must be 1-64"),
        ('name: "rt\\u00078"\n', "name", "must be 1-64"),
        ("samples: 100000\nconcurrency: 10000\n", "concurrency", "must be <= 1024"),
        ("tracking: {uri: 'postgresql+psycopg2://u@db/mlflow'}\n", "tracking.uri", "driver form"),
        ("tracking: {uri: 'mysql://u@db/mlflow'}\n", "tracking.uri", "MySQLdb"),
        ("tracking: {uri: 'sqlite:///:memory:'}\n", "tracking.uri", "in-memory"),
        ("tracking: {uri: 'file:///tmp/mlruns'}\n", "tracking.uri", "unknown scheme 'file'"),
        ("tracking: {uri: databricks}\n", "tracking.uri", "not a URI launch can record into"),
        ("tracking: {uri: mlruns}\n", "tracking.uri", "not a URI launch can record into"),
        ("storage: s3://bucket/x\n", "storage", "s3:// URI is not supported"),
        ("storage: file:///tmp/x\n", "storage", "file:// URI is not supported"),
    ],
    ids=[
        "cpu-below-ray-unit", "cpu-between-units", "gpu-below-ray-unit", "name-newline",
        "name-bell", "concurrency-10000", "db-driver-form", "db-driver-missing", "sqlite-memory",
        "file-store", "databricks", "bare-folder-store", "storage-s3", "storage-file-uri",
    ],
)  # fmt: skip
def test_validate_refuses_what_launch_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: str, field: str, text: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative folder it would make (./s3:, ./:memory:) lands here
    if "mysql" in extra:
        import importlib.util

        if importlib.util.find_spec("MySQLdb") is not None:
            pytest.skip("MySQLdb is installed here")
    spec = tmp_path / "spec.yaml"
    given = {line.split(":")[0] for line in extra.splitlines()}  # these replace SPEC's own lines
    spec.write_text("".join(f"{line}\n" for line in SPEC.splitlines() if line.split(":")[0] not in given) + extra)
    rc, text_out = _validate(spec, capsys)
    lines = text_out.strip().splitlines()
    assert rc == 2 and len(lines) == 1, text_out
    assert f"{spec}: {field}: " in lines[0] and text in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # nothing made


def test_a_driver_that_is_installed_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 is not installed here")
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + "tracking: {uri: 'postgresql://u@db/mlflow'}\n")
    rc, out = _validate(spec, capsys)
    assert rc == 0, out


def test_a_fifo_as_the_spec_is_refused_without_blocking(tmp_path: Path, syncstudy) -> None:  # noqa: ANN001
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)  # nobody ever writes to it: a blocking open would wait forever
    out = syncstudy("validate", str(fifo), timeout=60)
    assert out.returncode == 2 and "not a regular file" in out.stderr and str(fifo) in out.stderr, out.stderr


def test_a_device_as_the_spec_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = _validate(Path("/dev/zero"), capsys)
    assert rc == 2 and "/dev/zero: not a regular file" in out, out


@pytest.mark.parametrize(
    "content",
    [
        b"root:$y$j9T$SECRETSALT$SECRETHASH:19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n",
        b"SECRET_KEY: SECRETVALUE\n",
    ],
    ids=["shadow-like", "other-config"],
)
def test_a_file_that_is_no_spec_is_named_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "shadow"
    path.write_bytes(content)
    rc, out = _validate(path, capsys)
    assert rc == 2 and f"{path}: spec: " in out and "not a study spec" in out, out
    said = out.split(str(path), 1)[1]  # (the folder's name may hold "root": pytest-of-root)
    assert "SECRET" not in said and "root" not in said and "daemon" not in said, out
