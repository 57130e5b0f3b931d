"""`syncstudy dashboard` as a user meets it: the link it prints opens MLflow's UI on the study's
runs table, in a real browser (headless Chromium; Debian's `chromium`, installed by .ci/run).
Skipped only when Chromium is missing and SYNCSTUDY_REQUIRE_SERVICES is unset."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

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


@pytest.mark.slow  # a real browser: the whole suite only
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
    # the compare page names the model-training view too (it opened on GenAI's: issue 26)
    assert compare == (
        "http://h:1/#/compare-runs?runs=%5B%22a%22%2C%22b%22%5D&experiments=%5B%227%22%5D"
        "&workflowType=machine_learning"
    )
    assert dashboard.links("http://h:1", "7", []) == (runs, None)
    study, _ = dashboard.links("http://h:1", "7", [], "digits", ("val_acc", "max"))
    assert study == (
        "http://h:1/#/experiments/7/runs?workflowType=machine_learning&searchFilter=tags.%60syncstudy.study%60"
        "%20%3D%20%27digits%27%20and%20tags.%60syncstudy.role%60%20%3D%20%27trial%27"
        "&orderByKey=metrics.%60val_acc%60&orderByAsc=false"
    )


def test_a_shared_view_link_names_no_facet_and_run_pages_name_the_view() -> None:
    runs, _ = dashboard.links("http://h:1", "7", [], "digits", ("val_acc", "max"), share_key="syncstudy-digits")
    # a facet in the URL makes the UI drop the shared view: the view holds them
    assert runs == "http://h:1/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=syncstudy-digits"
    assert dashboard.run_link("http://h:1", "7", "abc") == (
        "http://h:1/#/experiments/7/runs/abc?workflowType=machine_learning"
    )
    state = dashboard.view_state("digits", [("val_acc", "max"), ("interpretability", "max")], ["log10_lr"], ["lr"])
    assert state["orderByKey"] == "metrics.`val_acc`" and state["orderByAsc"] == "false"
    assert state["selectedColumns"][:2] == ["metrics.`val_acc`", "metrics.`interpretability`"]
    first = state["compareRunCharts"][0]  # type: ignore[index]
    assert first["type"] == "PARALLEL" and first["selectedMetrics"] == ["val_acc", "interpretability"]
    assert first["selectedParams"] == ["log10_lr"]


def _texts(dom: str) -> list[str]:
    """The page's visible text pieces (scripts and styles left out)."""
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", "", dom, flags=re.S)
    return [t.strip() for t in re.split(r"<[^>]+>", dom) if t.strip()]


def _view(dom: str) -> str:
    """Which of MLflow 3.17's two views a page shows, by its sidebar: the GenAI one lists
    "AI Gateway" and "Prompts" (a run page adds an "Evaluations" breadcrumb), the model-training
    one "Model registry" and neither of those."""
    texts = set(_texts(dom))
    if texts & {"AI Gateway", "Prompts", "Evaluations", "Training runs"}:
        return "genai"
    return "model training" if "Model registry" in texts else "unknown"


@pytest.mark.slow
def test_every_printed_link_opens_in_the_model_training_view(smoke_study: Path, tmp_path: Path) -> None:
    """The compare page, a trial's run page and the parent run's page show the model-training
    view, not GenAI's; the objectives are columns of the runs table and axes of the chart
    view's first chart (a parallel coordinates plot)."""
    chromium = _chromium()
    objectives = [o["metric"] for o in yaml.safe_load(DIGITS.read_text())["objectives"]]
    port = _free_port()
    proc = _dashboard(smoke_study, port)
    try:
        lines = {}
        for _ in range(4):  # printed once /health answers
            line = proc.stdout.readline()  # type: ignore[union-attr]
            label, _, url = line.rpartition(" ")
            lines[label] = url.strip()
        runs = next(u for k, u in lines.items() if k.startswith("MLflow UI for study"))
        compare, charts = lines["compare its trials:"], lines["its charts (objectives first):"]
        parent = lines["the study's parent run:"]
        experiment = re.search(r"#/experiments/(\w+)/", runs).group(1)  # type: ignore[union-attr]
        trial_id = json.loads(urllib.parse.parse_qs(compare.partition("?")[2])["runs"][0])[0]
        trial = dashboard.run_link(f"http://127.0.0.1:{port}", experiment, trial_id)
        pages = {"compare": compare, "trial": trial, "parent": parent, "runs": runs, "charts": charts}
        doms = {}
        for name, url in pages.items():
            budget = 60000 if name == "charts" else 25000  # the charts load plotly lazily
            doms[name] = _browser(chromium, url, "--dump-dom", budget_ms=budget).stdout
            _browser(chromium, url, f"--screenshot={tmp_path / (name + '.png')}")  # to look at
        for name in ("compare", "trial", "parent", "runs"):
            assert _view(doms[name]) == "model training", f"{name} page: {_view(doms[name])} view; {tmp_path}"
        assert trial_id in doms["trial"] and "Model metrics" in _texts(doms["trial"])
        for metric in objectives:  # a visible column of the runs table (ag-grid renders only those)
            assert re.search(rf'role="columnheader"[^>]*col-id="metrics\.`{re.escape(metric)}`"', doms["runs"]), metric
        first = doms["charts"].split("Parallel Coordinates", 1)
        assert len(first) == 2, f"no parallel coordinates in the chart view; {tmp_path}"
        # an axis's label, or its full name in the tooltip of a label cut short ("interp...bility")
        axes = re.findall(r'class="label">([^<]*)', first[1])
        axes += re.findall(r'class="axis-label-tooltip"><rect[^>]*></rect><text fill="black">([^<]*)', first[1])
        assert set(objectives) <= set(axes), axes
        assert _texts(doms["charts"]).index("Objectives") < _texts(doms["charts"]).index("Parallel Coordinates")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
