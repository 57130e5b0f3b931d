"""`export` holds the tables' digest (`tables.sha256`) to its copy on the study's MLflow parent
run (tag `syncstudy.tables_sha256`): a table and `tables.sha256` rewritten together pass the
folder's own check, not this one (issue 27). A store that cannot be asked, or a run without
the tag, adds nothing.

A study folder's files and its parent run are made here directly (no Ray); the real export
of a launched study is in test_damaged_files.py, a real server below."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.record.digest import DIGEST_FILE, TAG_DIGEST, DamagedFile
from pipeline.record.finished import check_parent_digest
from pipeline.record.identity import ensure_instance
from pipeline.record.tracking import Tracker, TrackingTarget, resolve_target

DIGEST = "".join(f"{c * 64}  {n}\n" for c, n in (("a", "trials.parquet"), ("b", "history.parquet")))


def _study(folder: Path, tag: str | None = DIGEST, uri: str | None = None) -> tuple[TrackingTarget, str]:
    """A finished study's folder: its digest file, instance, and parent run (tagged `tag`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DIGEST_FILE).write_text(DIGEST)
    instance, _ = ensure_instance(folder)
    target = resolve_target(uri, "exp", folder)
    tracker = Tracker(target, "s", instance=instance, storage=str(folder))
    parent = tracker.parent_run({}, {TAG_DIGEST: tag} if tag is not None else {})
    return target, parent


def test_the_digest_that_matches_its_copy_passes(tmp_path: Path) -> None:
    target, _ = _study(tmp_path / "s")
    check_parent_digest(tmp_path / "s", target, "s")


def test_a_digest_rewritten_with_its_table_is_refused_naming_both(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    target, parent = _study(folder)
    (folder / DIGEST_FILE).write_text(DIGEST.replace("a" * 64, "c" * 64))
    with pytest.raises(DamagedFile) as err:
        check_parent_digest(folder, target, "s")
    message = str(err.value)
    assert str(folder / DIGEST_FILE) in message and TAG_DIGEST in message and parent in message
    assert target.uri in message and "--mlflow" in message and "\n" not in message


def test_nothing_is_said_without_a_copy_to_hold_it_to(tmp_path: Path) -> None:
    """No tag on the parent run (a study from before it, or whose store was down at its end);
    no parent run of the name; a store that is not there: the folder's own digest stands."""
    target, _ = _study(tmp_path / "untagged", tag=None)
    (tmp_path / "untagged" / DIGEST_FILE).write_text("changed\n")
    check_parent_digest(tmp_path / "untagged", target, "s")
    target, _ = _study(tmp_path / "s")
    (tmp_path / "s" / DIGEST_FILE).write_text("changed\n")
    check_parent_digest(tmp_path / "s", target, "another-study")
    gone = TrackingTarget(f"sqlite:///{tmp_path / 'gone.db'}", "exp", None)
    check_parent_digest(tmp_path / "s", gone, "s")
    assert not (tmp_path / "gone.db").exists()  # read-only: nothing made


def test_an_unreachable_server_adds_nothing(tmp_path: Path) -> None:
    target, _ = _study(tmp_path / "s")
    (tmp_path / "s" / DIGEST_FILE).write_text("changed\n")
    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    check_parent_digest(tmp_path / "s", TrackingTarget(closed, "exp", None), "s")


def test_the_folders_own_instance_is_the_run_held_to(tmp_path: Path) -> None:
    """Two parent runs of one name in one store (possible only from before instance ids):
    the folder's instance picks its own."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    first, _ = _study(tmp_path / "first", tag="another digest\n", uri=store)
    second = tmp_path / "second"
    second.mkdir()
    (second / DIGEST_FILE).write_text(DIGEST)
    instance, _ = ensure_instance(second)
    other = Tracker(resolve_target(store, "exp", second), "s", instance=instance)
    other.client.create_run(
        other.experiment_id, run_name="s",
        tags={"syncstudy.study": "s", "syncstudy.role": "study", "syncstudy.instance": instance, TAG_DIGEST: DIGEST},
    )  # fmt: skip
    check_parent_digest(second, resolve_target(store, "exp", second), "s")  # its own: matches
    with pytest.raises(DamagedFile, match="differs from its copy"):
        check_parent_digest(tmp_path / "first", first, "s")


@pytest.mark.slow
def test_a_servers_copy_is_asked_too(tmp_path: Path) -> None:
    """A store outside the folder (a server) holds the copy its writer cannot reach."""
    from deploy.services import start_mlflow_server

    server = start_mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts", log_path=tmp_path / "server.log"
    )
    try:
        folder = tmp_path / "s"
        target, parent = _study(folder, uri=server.url)
        check_parent_digest(folder, target, "s")
        (folder / DIGEST_FILE).write_text(DIGEST.replace("b" * 64, "d" * 64))
        with pytest.raises(DamagedFile, match=parent):
            check_parent_digest(folder, target, "s")
    finally:
        server.stop()
