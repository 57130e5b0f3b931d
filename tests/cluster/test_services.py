"""The tracking services the cluster tests stand on: a run logged over HTTP to `mlflow
server` lands in PostgreSQL, and its artifact in the server's destination folder."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from deploy.services import free_ports, read_or_create_password
from deploy.services import main as services_main

pytestmark = pytest.mark.cluster


def test_run_logged_over_http_lands_in_postgres(tracking_services, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_services.url)
    exp_id = client.create_experiment("services-smoke")
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "coupling_K", "0.5")
    client.log_metric(run.info.run_id, "val_acc", 0.75, step=3)
    note = tmp_path / "note.txt"
    note.write_text("from the client")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    # Proxied artifacts: the client got an mlflow-artifacts: URI, the server wrote the file.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    stored = list(tracking_services.artifacts_dir.rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["from the client"]

    with tracking_services.pg.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("FINISHED",)]
        cur.execute("SELECT key, value FROM params WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("coupling_K", "0.5")]
        cur.execute(
            "SELECT value, step FROM metrics WHERE run_uuid = %s AND key = 'val_acc'",
            (run.info.run_id,),
        )
        assert cur.fetchall() == [(0.75, 3)]


def test_password_is_generated_once_and_private(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("SYNCSTUDY_DB_PASSWORD", raising=False)
    first = read_or_create_password(tmp_path)
    assert read_or_create_password(tmp_path) == first
    assert (tmp_path / "db_password").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("SYNCSTUDY_DB_PASSWORD", "from-env")
    assert read_or_create_password(tmp_path) == "from-env"


def test_down_on_an_empty_root_is_harmless(tmp_path: Path) -> None:
    assert services_main(["down", "--root", str(tmp_path)]) == 0


def test_ports_picked_together_are_different_and_free() -> None:
    # The journey's head takes four ports at once; one at a time they once came back equal
    # (dashboard = client server) and `ray start` refused the head.
    ports = free_ports(200)
    assert len(set(ports)) == 200
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
