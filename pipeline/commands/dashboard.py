"""`syncstudy dashboard SPEC|--study NAME`: the MLflow UI on the study's tracking store.

Binds to 127.0.0.1 unless `--host` says otherwise; prints, once `/health` answers, links to
the study's runs table, a comparison of its trials, its charts and its parent run, each in
MLflow's "Machine learning" (model training) view. A study tracked on an MLflow server already
has its UI there: the links are printed and nothing is started.

What MLflow 3.17's UI reads (its bundled JavaScript): the view (GenAI or model training) from
the URL's `workflowType`, else from the browser's local storage (`mlflow.workflowType_v1`, set
by the sidebar's switch), else GenAI; the experiment's `mlflow.experimentKind` tag no longer
decides it. Its links between pages (a run's name in the table) carry no `workflowType`.
Columns and charts of the runs page: from the browser's local storage, or from a shared view,
the experiment tag `mlflow.sharedViewState.<key>` named by the URL's `viewStateShareKey`
(ignored when the URL also names a search facet such as `searchFilter`). The /compare-runs
page's parallel coordinates take the first three differing params and the first metric the
runs share, and nothing in a URL or a tag chooses them.
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

from pipeline.env_refs import expand
from pipeline.record.tracking import TAG_PARETO, TAG_ROLE, TAG_STUDY
from syncmodel.errors import SyncStudyError

if TYPE_CHECKING:
    from pipeline.commands._study import StudyRef
    from pipeline.record.tracking import Tracker

STARTUP_TIMEOUT_S = 120.0
MAX_COMPARED = 20
STOP_TIMEOUT_S = 10.0  # SIGTERM, then SIGKILL to what is left of the server's group


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.commands._study import add_study_arguments

    add_study_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")


def command(host: str, port: int) -> list[str]:
    """The server's command line. The store's URI is not on it (`server_env`): a command line
    is readable by every user of the machine (/proc/PID/cmdline), and a database URI's
    password, expanded from `${VAR}`, must not be."""
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def server_env(uri: str) -> dict[str, str]:
    """The server's environment: the store's URI, `${VAR}` expanded here (the study keeps it
    unexpanded at rest; pipeline.env_refs), in MLflow's own variable for `--backend-store-uri`;
    and the UI only: no job runner (MLflow 3 starts a Huey consumer and workers for GenAI jobs:
    10 processes, ~2.3 GiB, 20-35 s to answer; without it 2 processes, ~0.5 GiB, ~6 s)."""
    return {
        **os.environ, "MLFLOW_BACKEND_STORE_URI": expand(uri),
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }  # fmt: skip


WORKFLOW = {"workflowType": "machine_learning"}  # MLflow 3 UI: model training, not GenAI
SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + key: the experiment tag `viewStateShareKey` names


def _quote(query: dict[str, str]) -> str:
    return urllib.parse.urlencode(query, quote_via=urllib.parse.quote)


def search_facets(study: str | None, sort: tuple[str, str] | None) -> dict[str, str]:
    """The runs table's filter (the study's trials: the UI nests them under a collapsed parent
    run otherwise) and order (`sort`: metric, mode), as the UI's URL and shared view name them."""
    facets = {}
    if study is not None:
        facets["searchFilter"] = f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_ROLE}` = 'trial'"
    if sort is not None:
        facets["orderByKey"] = f"metrics.`{sort[0]}`"
        facets["orderByAsc"] = "true" if sort[1] == "min" else "false"
    return facets


def links(
    base: str, experiment_id: str, run_ids: list[str], study: str | None = None,
    sort: tuple[str, str] | None = None, share_key: str | None = None,
) -> tuple[str, str | None]:  # fmt: skip
    """The runs table of the experiment in the model-training view, filtered to the study's
    trials and sorted by `sort` (`search_facets`), or, with `share_key`, opening the shared
    view of that key (which holds the facets: the UI drops a shared view whose URL names one);
    and a comparison of `run_ids` (the UI's /compare-runs route). Query keys as the UI's
    router reads them."""
    query = {**WORKFLOW, "viewStateShareKey": share_key} if share_key else {**WORKFLOW, **search_facets(study, sort)}
    runs = f"{base}/#/experiments/{experiment_id}/runs?{_quote(query)}"
    if not run_ids:
        return runs, None
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids, separators=(",", ":")), "experiments": json.dumps([experiment_id]), **WORKFLOW}
    )
    return runs, f"{base}/#/compare-runs?{query}"


def charts_link(runs_link: str) -> str:
    """The runs page's chart view (its comparison of runs: the shared view's charts first)."""
    return f"{runs_link}&compareRunsMode=CHART"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the model-training view (Overview, Model metrics, Artifacts)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{_quote(WORKFLOW)}"


def view_state(
    study: str, objectives: list[tuple[str, str]], axes: list[str], columns: list[str]
) -> dict[str, object]:
    """The shared view of the study's runs page (the UI's own state, serialised as its Share
    button does): the trials, best first objective first; the objectives, the pareto tag and
    the searched params `columns` as the table's columns; in the chart view first a parallel
    coordinates plot from the params `axes` to the objectives, then the first two objectives
    against each other; every run shown in the charts (the UI shows the first 10 otherwise)."""
    section = "syncstudy-objectives"
    metrics = [m for m, _ in objectives]
    charts: list[dict[str, object]] = [{
        "uuid": "syncstudy-parallel", "type": "PARALLEL", "metricSectionId": section, "deleted": False,
        "isGenerated": False, "runsCountToCompare": 100, "showAllRuns": True,
        "selectedParams": axes, "selectedMetrics": metrics,
    }]  # fmt: skip
    if len(metrics) >= 2:
        charts.append({
            "uuid": "syncstudy-scatter", "type": "SCATTER", "metricSectionId": section, "deleted": False,
            "isGenerated": False, "runsCountToCompare": 100,
            "xaxis": {"key": metrics[0], "type": "METRIC"}, "yaxis": {"key": metrics[1], "type": "METRIC"},
        })  # fmt: skip
    return {
        **search_facets(study, objectives[0] if objectives else None),
        "selectedColumns": [f"metrics.`{m}`" for m in metrics] + [f"tags.`{TAG_PARETO}`"]
        + [f"params.`{p}`" for p in columns],
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": section, "name": "Objectives", "display": True, "isReordered": False,
                                "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True,  # our section stays first
    }  # fmt: skip


def share_view(tracker: Tracker, key: str, state: dict[str, object]) -> None:
    """Store `state` as the experiment's shared view `key` (rewritten on each start: the
    objectives or the search may have changed)."""
    tracker.client.set_experiment_tag(tracker.experiment_id, f"{SHARED_VIEW_TAG}{key}", json.dumps(state))


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


def _share(tracker: Tracker, ref: StudyRef) -> str | None:
    """The study's shared view (`view_state`), stored on its experiment; its key, or None where
    the store refuses the write (the links then name the facets, and the columns are the UI's
    defaults)."""
    objectives = ref.objectives or [("test_acc", "max")]
    searched = list(ref.search or ref.searched or [])
    logs = {n for n, p in (ref.search or {}).items() if getattr(p, "log", False)}
    axes = [f"log10_{n}" if n in logs else n for n in searched]  # MLflow's axes are linear
    key = f"syncstudy-{ref.name}"
    try:
        share_view(tracker, key, view_state(ref.name, objectives, axes, searched))
    except Exception as exc:  # noqa: BLE001 - a read-only server: links without the view
        print(f"note: no shared view for the runs page ({str(exc).splitlines()[0][:200]})", file=sys.stderr)
        return None
    return key


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
    objectives = ref.objectives or [("test_acc", "max")]
    key = _share(tracker, ref)
    runs_link, compare_link = links(base, tracker.experiment_id, _compared(tracker), ref.name, objectives[0], key)
    parent = tracker.parent()
    more = [f"compare its trials: {compare_link}"] if compare_link else []
    if key:
        more.append(f"its charts (objectives first): {charts_link(runs_link)}")
    if parent is not None:
        more.append(f"the study's parent run: {run_link(base, tracker.experiment_id, parent.info.run_id)}")
    if remote:
        print(f"study {ref.name!r} is tracked on an MLflow server; its runs: {runs_link}")
        print("\n".join(more))
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
        command(args.host, args.port), start_new_session=True,
        env=server_env(ref.target.uri), stdout=log, stderr=log,
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
        for line in more:
            print(line, flush=True)
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
