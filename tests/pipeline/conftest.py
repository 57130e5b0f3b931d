"""Shared fixtures of the pipeline tests: one small local Ray for the whole session (2 CPUs,
no dashboard, a capped object store), and a smoke study launched once and read by several
tests (MLflow, Parquet, `runs`, `pareto`, `export`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

# The fault injection (tests/pipeline/faults.py) in the product's test seam (pipeline.hooks):
# set before any driver or Ray starts, so that every process of the tests inherits it.
os.environ.setdefault("SYNCSTUDY_HOOKS", str(Path(__file__).with_name("faults.py")))
DIGITS = ROOT / "studies" / "digits.yaml"


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """A local Ray shared by the in-process tests; returns its address."""
    import ray

    from pipeline.ray_local import private_token

    if not ray.is_initialized():
        private_token()
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=150 * 1024**2,
            log_to_driver=False,
            logging_level="WARNING",
        )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _write_spec(path: Path, **smoke: object) -> Path:
    """studies/digits.yaml with its smoke section updated by `smoke` (nested dicts merge)."""
    doc = yaml.safe_load(DIGITS.read_text())
    section = doc.setdefault("smoke", {})
    for key, value in smoke.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _syncstudy(*args: str, cwd: Path | None = None, timeout: float = 600, **kw: object) -> subprocess.CompletedProcess:
    """The CLI in a fresh process (what a user runs)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kw,
    )  # fmt: skip


def _launch(spec: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`syncstudy launch SPEC --smoke` as a driver process of its own (a test may SIGKILL its
    session); stdout and stderr merged, unbuffered, line by line."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "launch", str(spec), "--smoke", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )  # fmt: skip


def _searcher_trials(storage: Path) -> dict[str, object]:
    """trial id → Optuna trial, from the searcher state Tune saved last in `storage`/tune."""
    import glob
    import pickle

    from pipeline import search  # noqa: F401 - the pickled searcher's class lives there

    # Named by each driver's start time (Tune picks the newest by name too).
    newest = max(glob.glob(str(storage / "tune" / "searcher-state-*.pkl")))
    with open(newest, "rb") as fh:
        state = pickle.load(fh)
    by_number = {t.number: t for t in state["_ot_study"].trials}
    return {tid: by_number[t.number] for tid, t in state["_ot_trials"].items()}


@pytest.fixture(scope="session")
def searcher_trials():  # noqa: ANN201 - the helper above
    return _searcher_trials


@pytest.fixture(scope="session")
def digits_spec() -> Path:
    return DIGITS


@pytest.fixture(scope="session")
def write_spec():  # noqa: ANN201 - the helper above
    return _write_spec


@pytest.fixture(scope="session")
def launch_driver():  # noqa: ANN201 - the helper above
    return _launch


@pytest.fixture(scope="session")
def syncstudy():  # noqa: ANN201 - the helper above
    return _syncstudy


@pytest.fixture(scope="session")
def smoke_study(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`syncstudy launch studies/digits.yaml --smoke` in-process on the session's Ray;
    returns the study's storage folder (trials.parquet, mlflow.db, ...)."""
    from pipeline import cli

    storage = tmp_path_factory.mktemp("smoke") / "digits"
    code = cli.main(["launch", str(DIGITS), "--smoke", "--storage", str(storage)])
    assert code == 0
    yield storage
    shutil.rmtree(storage, ignore_errors=True)
