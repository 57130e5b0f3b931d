"""`syncstudy dashboard` as a user meets it: the link it prints opens MLflow's UI on the study's
runs table, in a real browser (headless Chromium; Debian's `chromium`, installed by .ci/run).
Skipped only when Chromium is missing and SYNCSTUDY_REQUIRE_SERVICES is unset."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.commands import dashboard

DIGITS = Path(__file__).resolve().parents[2] / "studies" / "digits.yaml"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        why = "no chromium on PATH (apt-get install chromium)"
        if os.environ.get("SYNCSTUDY_REQUIRE_SERVICES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard(storage: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pipeline.cli", "dashboard", str(DIGITS), "--smoke",
           "--tracking-uri", f"sqlite:///{storage / 'mlflow.db'}", "--port", str(port)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _browser(chromium: str, url: str, *extra: str, budget_ms: int = 25000) -> subprocess.CompletedProcess:
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--virtual-time-budget={budget_ms}", "--window-size=1600,1000"]  # fmt: skip
    return subprocess.run([chromium, *flags, *extra, url], capture_output=True, text=True, timeout=180)


def test_printed_link_opens_on_the_runs_table(smoke_study: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    chromium = _chromium()
    trials = [r["trial_id"] for r in pq.read_table(smoke_study / "trials.parquet").to_pylist()]
    port = _free_port()
    proc = _dashboard(smoke_study, port)
    try:
        started = time.monotonic()
        first = proc.stdout.readline()  # type: ignore[union-attr] - printed once /health answers
        links = re.findall(r"http://\S+", first)
        assert links and "#/experiments/" in links[0] and "/runs?workflowType=machine_learning&" in links[0], first
        compare = proc.stdout.readline()  # type: ignore[union-attr]
        assert "#/compare-runs?runs=" in compare
        print(f"dashboard answered in {time.monotonic() - started:.1f} s")
        dom = _browser(chromium, links[0], "--dump-dom").stdout
        shot = tmp_path / "runs-table.png"
        _browser(chromium, links[0], f"--screenshot={shot}")
        assert shot.is_file() and shot.stat().st_size > 0  # kept under the test's tmp dir
        missing = [t for t in trials if t not in dom]  # run names: the trial ids
        assert not missing, f"runs table lacks trials {missing}; screenshot {shot}"
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def test_busy_port_exits_2_with_one_line(smoke_study: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _dashboard(smoke_study, busy.getsockname()[1])
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot serve on 127.0.0.1:" in lines[0] and "--port" in lines[0], err
    assert out == ""


def test_links_name_the_runs_table_and_the_compared_runs() -> None:
    runs, compare = dashboard.links("http://h:1", "7", ["a", "b"])
    assert runs == "http://h:1/#/experiments/7/runs?workflowType=machine_learning"
    assert compare == "http://h:1/#/compare-runs?runs=%5B%22a%22%2C%22b%22%5D&experiments=%5B%227%22%5D"
    assert dashboard.links("http://h:1", "7", []) == (runs, None)
    study, _ = dashboard.links("http://h:1", "7", [], "digits", ("val_acc", "max"))
    assert study == (
        "http://h:1/#/experiments/7/runs?workflowType=machine_learning&searchFilter=tags.%60syncstudy.study%60"
        "%20%3D%20%27digits%27%20and%20tags.%60syncstudy.role%60%20%3D%20%27trial%27"
        "&orderByKey=metrics.%60val_acc%60&orderByAsc=false"
    )
