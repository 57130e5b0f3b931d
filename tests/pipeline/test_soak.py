"""Soak (issue 14): several smoke studies in a row, each SIGKILLed (with its Ray) at a seeded
random moment and resumed until it ends; two of them share one tracking store, one is started
twice at once. In the end every study's trials appear exactly once in its Parquet tables and
in MLflow (within its instance), and no run of another study was deleted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline.record.identity import read_instance
from pipeline.record.tracking import TAG_INSTANCE, TAG_ROLE, TAG_STUDY, TAG_TRIAL

pytestmark = pytest.mark.slow

SEED = 14
SAMPLES = 2
KILL_WINDOW_S = (8.0, 32.0)  # after both twins reached the lock: Ray's start, set-up or a trial


@dataclass
class Study:
    key: str
    spec: Path
    storage: Path
    args: list[str]
    uri: str
    name: str
    log: list[str] = field(default_factory=list)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its own Ray (its session)
    except ProcessLookupError:
        pass


def _finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _kill_group(proc)
    return proc.returncode, out


def _trial_runs(study: Study) -> list[object]:
    client = MlflowClient(tracking_uri=study.uri)
    exp = client.get_experiment_by_name(study.name)
    flt = f"tags.`{TAG_STUDY}` = '{study.name}' and tags.`{TAG_ROLE}` = 'trial'"
    return client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000)


def test_soak_kill_resume_shared_store_and_twin_drivers(
    tmp_path: Path, write_spec, launch_driver, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    # The drivers run in tmp_path: "b" names an sqlite URI outside its storage, for which
    # MLflow puts artifacts in ./mlruns (issue 14 item 10, not this test's subject).
    monkeypatch.chdir(tmp_path)
    rng = random.Random(SEED)
    t0 = time.monotonic()
    spec = write_spec(
        tmp_path / "soak.yaml", samples=SAMPLES, train={"epochs": 1, "n_train": 200, "width": 8},
        evaluation={"max_images": 60, "pictures": False},
    )  # fmt: skip
    a_store = tmp_path / "a"
    shared_uri = f"sqlite:///{a_store / 'mlflow.db'}"
    studies = [
        Study("a", spec, a_store, ["--storage", str(a_store)], shared_uri, "digits"),
        # the second study of the shared store: another name (a second "digits" is refused)
        Study(
            "b", spec, tmp_path / "b",
            ["--storage", str(tmp_path / "b"), "--tracking-uri", shared_uri, "--name", "digits-b"],
            shared_uri, "digits-b",
        ),  # fmt: skip
        Study("c", spec, tmp_path / "c", ["--storage", str(tmp_path / "c")], f"sqlite:///{tmp_path / 'c' / 'mlflow.db'}", "digits"),
    ]  # fmt: skip

    # One study after another ("b" into the store "a" made). Each driver is SIGKILLed with its
    # Ray at its own seeded moment; "c" is started twice at once ("c" and "c2"). Then the study
    # is resumed (or launched again, if it died before Tune started) until it ends.
    outs: dict[str, tuple[int, str]] = {}
    for study in studies:
        twins = [study.key, f"{study.key}2"] if study.key == "c" else [study.key]
        procs = {key: launch_driver(spec, *study.args) for key in twins}
        kill_at = time.monotonic() + rng.uniform(*KILL_WINDOW_S)
        while procs:
            for key, proc in list(procs.items()):
                if proc.poll() is not None or time.monotonic() >= kill_at:
                    _kill_group(proc)  # SIGKILL, unless it already ended
                    outs[key] = _finish(proc)
                    study.log.append(f"first run ({key}): exit {outs[key][0]}\n{outs[key][1]}")
                    del procs[key]
            time.sleep(0.2)
        # killed by the test (-9), or done before its moment came (0); the refused twin: 2
        assert all(outs[k][0] in (-signal.SIGKILL, 0, 2) for k in twins), study.log
        for _attempt in range(3):
            resume = (study.storage / "tune" / "tuner.pkl").is_file()
            code, out = _finish(launch_driver(spec, *study.args, *(["--resume"] if resume else [])))
            study.log.append(f"{'resume' if resume else 'launch'}: exit {code}\n{out}")
            if code == 0:
                break
        else:
            pytest.fail(f"study {study.key} did not finish:\n" + "\n".join(study.log))
    # Of the twins, exactly one held the folder: the other exited 2 at once, naming the holder.
    refused = [k for k in ("c", "c2") if "in use by another driver" in outs[k][1]]
    assert len(refused) == 1 and outs[refused[0]][0] == 2, studies[2].log
    assert "pid " in outs[refused[0]][1] and "Traceback" not in outs[refused[0]][1]

    instances = {s.key: read_instance(s.storage) for s in studies}
    assert len(set(instances.values())) == len(studies)
    for study in studies:
        rows = pq.read_table(study.storage / "trials.parquet").to_pylist()
        ids = sorted(r["trial_id"] for r in rows)
        assert len(ids) == SAMPLES == len(set(ids)), (study.key, ids, study.log)
        assert {r["status"] for r in rows} == {"ok"}, (study.key, rows)
        runs = _trial_runs(study)
        live = [r for r in runs if r.data.tags.get(TAG_INSTANCE) == instances[study.key]]
        assert sorted(r.data.tags[TAG_TRIAL] for r in live) == ids, (study.key, study.log)
        by_id = {r["trial_id"]: r["mlflow_run_id"] for r in rows}
        assert all(by_id[r.data.tags[TAG_TRIAL]] == r.info.run_id for r in live)
        # every run of the store that belongs to another instance is untouched by this one
        assert all(r.data.tags.get(TAG_INSTANCE) in instances.values() for r in runs)
    # The shared store: both studies' runs, none deleted by the other's orphan clean-up
    # (deleted runs are not returned by search_runs; the parquet run ids must all be live).
    client = MlflowClient(tracking_uri=shared_uri)
    for study in studies[:2]:
        for row in pq.read_table(study.storage / "trials.parquet").to_pylist():
            assert client.get_run(row["mlflow_run_id"]).info.lifecycle_stage == "active", (study.key, row)
    for study in studies:  # with -s: what each went through
        print(f"soak {study.key}: " + "; ".join(entry.split("\n", 1)[0] + f" ({entry.count('] trial ')} trials ended)" for entry in study.log))
    print(f"soak: {time.monotonic() - t0:.0f} s")
