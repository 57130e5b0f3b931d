"""`syncstudy dashboard SPEC|--study NAME`: the MLflow UI on the study's tracking store.

Binds to 127.0.0.1 unless `--host` says otherwise; prints, once `/health` answers, a link
that opens on the study's runs table and one that compares its trials. A study tracked on an
MLflow server already has its UI there: the links are printed and nothing is started.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING

from pipeline.record.tracking import TAG_PARETO, TAG_ROLE, TAG_STUDY
from syncmodel.errors import SyncStudyError

if TYPE_CHECKING:
    from pipeline.record.tracking import Tracker

STARTUP_TIMEOUT_S = 120.0
MAX_COMPARED = 20
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL to what is left of the server's group


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.commands._study import add_study_arguments

    add_study_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")


def command(uri: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def server_env() -> dict[str, str]:
    """The UI only: no job runner (MLflow 3 starts a Huey consumer and workers for GenAI jobs:
    10 processes, ~2.3 GiB, 20-35 s to answer; without it 2 processes, ~0.5 GiB, ~6 s)."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def links(
    base: str, experiment_id: str, run_ids: list[str], study: str | None = None, sort: tuple[str, str] | None = None
) -> tuple[str, str | None]:
    """The runs table of the experiment (MLflow 3's UI opens on its GenAI overview unless the
    URL names the workflow type), filtered to the study's trials (the UI nests them under a
    collapsed parent run otherwise) and sorted by `sort` (metric, mode); and a comparison of
    `run_ids` (the UI's /compare-runs route). Query keys as the UI's router reads them."""
    query = {"workflowType": "machine_learning"}
    if study is not None:
        query["searchFilter"] = f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_ROLE}` = 'trial'"
    if sort is not None:
        query["orderByKey"] = f"metrics.`{sort[0]}`"
        query["orderByAsc"] = "true" if sort[1] == "min" else "false"
    runs = f"{base}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}"
    if not run_ids:
        return runs, None
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids, separators=(",", ":")), "experiments": json.dumps([experiment_id])}
    )
    return runs, f"{base}/#/compare-runs?{query}"


def can_bind(host: str, port: int) -> str | None:
    """None if `host:port` can be bound now, else why not (one line)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    """Poll `url`/health until it answers 200, the server exits, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    return False


class _Terminated(Exception):
    """SIGTERM arrived (raised by the command's handler)."""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal: it is there
        return True
    return True


def stop_server(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the server started in its own session (process group `proc.pid`): SIGTERM to the
    group, SIGKILL to what is left after `timeout`; returns once the server is reaped and no
    process of its group (its workers) is left, or a second `timeout` has passed."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # its workers, reaped by the server or by init
    if proc.poll() is None or _group_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


def _compared(tracker: Tracker) -> list[str]:
    """The runs worth comparing: the Pareto front's (tagged at the study's end), else every
    finished trial; at most MAX_COMPARED."""
    records = [r for r in tracker.trials() if r.status == "ok"]
    front = [r.run_id for r in records if r.tags.get(TAG_PARETO) == "true"]
    return (front or [r.run_id for r in records])[:MAX_COMPARED]


def run(args: argparse.Namespace) -> int:
    from pipeline.commands._study import locate_study, open_study
    from pipeline.redact import redact

    if not 1 <= args.port <= 65535:
        raise SyncStudyError(f"--port {args.port}: must be a port number from 1 to 65535")
    ref = locate_study(args.spec, args.study, args.tracking_uri, smoke=args.smoke)
    tracker = open_study(ref)
    remote = ref.target.uri.startswith(("http://", "https://"))
    base = redact(ref.target.uri).rstrip("/") if remote else (
        f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    )
    sort = (ref.objectives or [("test_acc", "max")])[0]
    runs_link, compare_link = links(base, tracker.experiment_id, _compared(tracker), ref.name, sort)
    if remote:
        print(f"study {ref.name!r} is tracked on an MLflow server; its runs: {runs_link}")
        if compare_link:
            print(f"compare its trials: {compare_link}")
        return 0
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host}: anyone who can reach it can read the study", file=sys.stderr)
    why = can_bind(args.host, args.port)
    if why is not None:
        print(f"syncstudy: error: cannot serve on {args.host}:{args.port} ({why}); try --port N", file=sys.stderr)
        return 2
    # Its own process group, stopped with us: a SIGTERM to this command (a test, a service
    # manager) must not leave the MLflow server and its workers running as orphans. Its logs
    # go to the study folder (dashboard.log), not between our lines.
    log_path = ref.storage / "dashboard.log"
    log = open(log_path, "ab") if ref.storage.is_dir() else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        command(ref.target.uri, args.host, args.port), start_new_session=True,
        env=server_env(), stdout=log, stderr=log,
    )  # fmt: skip

    def terminated(*_: object) -> None:
        # Only unwind: the waiting (`proc.wait()` below, which holds the Popen's wait lock
        # while this handler runs inside it) ends, and `finally` stops the server. Stopping it
        # from here waited on that lock until its timeout (31 s).
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        if not wait_healthy(base, proc, STARTUP_TIMEOUT_S):
            code = proc.poll()
            print(
                f"syncstudy: error: the MLflow server did not answer at {base}/health "
                f"({'it exited with ' + str(code) if code is not None else f'{STARTUP_TIMEOUT_S:.0f} s'}); see {log_path}",
                file=sys.stderr,
            )  # fmt: skip
            return 2
        print(f"MLflow UI for study {ref.name!r}: {runs_link}", flush=True)
        if compare_link:
            print(f"compare its trials: {compare_link}", flush=True)
        print("(Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except _Terminated:
        return 143  # returned, not raised: the CLI's quick exit (pipeline.cli.console)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM: we are stopping already
        stop_server(proc)
        signal.signal(signal.SIGTERM, previous)
        if log is not subprocess.DEVNULL:
            log.close()
