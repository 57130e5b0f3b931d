"""Tracking outages. A URI that cannot be used fails before Ray starts, within 10 s, naming
it. A server that goes away mid-study: the trials go on, the tables hold every trial, the
summary names what MLflow missed, and `launch --resume` with the server back records it
(each trial and epoch once)."""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import signal
import socket
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from deploy.services import free_port, start_mlflow_server
from pipeline.record.tracking import EPOCH_PREFIX, TAG_ROLE, TAG_STATUS, TAG_TRIAL

SAMPLES = 3


@pytest.mark.slow
def test_server_lost_mid_study_then_resume_records_the_gap(tmp_path: Path, write_spec, syncstudy, launch_driver) -> None:  # noqa: ANN001
    port = free_port()
    backend, artifacts = f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server-artifacts"
    server = start_mlflow_server(backend, artifacts, port=port, log_path=tmp_path / "server.log")
    storage = tmp_path / "study"
    spec = write_spec(
        tmp_path / "outage.yaml", samples=SAMPLES, storage=str(storage), tracking={"uri": server.url},
        train={"epochs": 1, "n_train": 200, "width": 8}, evaluation={"max_images": 60, "pictures": False},
    )  # fmt: skip
    proc = launch_driver(spec)
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("[1/"):
                server.stop()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        server.stop()
    out = "".join(lines)
    assert proc.returncode == 0, out
    # Two trials ran without the store, and the calls after the first failure were refused at
    # once, without a request (no minutes of HTTP retries each): the driver counts them.
    refused = re.search(r"\((\d+) calls refused while down\)", out)
    assert refused is not None and int(refused.group(1)) > 0, out
    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    assert len(rows) == SAMPLES and all(r["status"] == "ok" for r in rows), rows
    gap = next((ln for ln in lines if ln.startswith("NOT recorded in MLflow")), "")
    missed = [r["trial_id"] for r in rows if r["trial_id"] in gap]
    assert len(missed) == SAMPLES - 1 and "the parent run" in gap, out  # the trials after the outage
    # not in MLflow yet: no run start time, so `runs`/`pareto` ask MLflow, not the tables
    assert [r["trial_id"] for r in rows if r["mlflow_start_time"] is None] == sorted(missed), rows
    assert "tracking store down" in out, out

    server = start_mlflow_server(backend, artifacts, port=port, log_path=tmp_path / "server.log")
    try:
        resumed = syncstudy("launch", str(spec), "--smoke", "--resume")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "NOT recorded" not in resumed.stdout, resumed.stdout
        client = MlflowClient(tracking_uri=server.url)
        exp = client.get_experiment_by_name("digits")
        runs = client.search_runs([exp.experiment_id], max_results=100)
        trials = [r for r in runs if r.data.tags.get(TAG_ROLE) == "trial"]
        rows = {r["trial_id"]: r for r in pq.read_table(storage / "trials.parquet").to_pylist()}
        assert sorted(r.data.tags[TAG_TRIAL] for r in trials) == sorted(rows)
        for run in trials:
            assert run.data.tags[TAG_STATUS] == "ok" and run.info.status == "FINISHED"
            assert rows[run.data.tags[TAG_TRIAL]]["mlflow_run_id"] == run.info.run_id
            started = rows[run.data.tags[TAG_TRIAL]]["mlflow_start_time"]
            assert started is not None and round(started.timestamp() * 1000) == run.info.start_time
            assert [m.step for m in client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "val_acc")] == [1]
            assert rows[run.data.tags[TAG_TRIAL]]["metrics.test_acc"] == run.data.metrics["test_acc"]
            assert {"checkpoint", "config"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        assert sum(1 for r in runs if r.data.tags.get(TAG_ROLE) == "study") == 1
    finally:
        server.stop()


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    "kind", ["closed port", "not mlflow", "silent server", "bad scheme", "sqlite under a file", "unwritable sqlite"]
)
def test_an_unusable_tracking_uri_fails_before_ray_after_one_attempt(
    kind: str, tmp_path: Path, digits_spec: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import cli, study

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(study, "ray_session", refuse)
    server = None
    silent: socket.socket | None = None
    if kind == "closed port":
        uri = f"http://127.0.0.1:{free_port()}"
    elif kind == "not mlflow":
        server = http.server.HTTPServer(("127.0.0.1", 0), _NotMlflow)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        uri = f"http://127.0.0.1:{server.server_address[1]}"
    elif kind == "silent server":
        # Connects and never answers (the kernel completes the handshake; nothing accepts):
        # what a hung server or a black-holed route looks like, on loopback.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    elif kind == "bad scheme":
        uri = "ftp://127.0.0.1/mlflow"
    elif kind == "sqlite under a file":
        (tmp_path / "a-file").write_text("not a folder")
        uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    else:
        uri = "sqlite:////proc/syncstudy/mlflow.db"  # not writable, even for root
    try:
        code = cli.main(["launch", str(digits_spec), "--smoke", "--storage", str(tmp_path / "s"), "--tracking-uri", uri])
        if silent is not None:
            # One connection, given up after the check's own timeout: no retry loop (MLflow's
            # client retries for minutes by default). Counted in the accept queue.
            silent.setblocking(False)
            attempts = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    silent.accept()[0].close()
                    attempts += 1
            assert attempts == 1, attempts
    finally:
        if server is not None:
            server.shutdown()
        if silent is not None:
            silent.close()
    err = capsys.readouterr().err
    assert code == 2, err
    assert uri in err and "tracking" in err and len(err.strip().splitlines()) == 1, err
