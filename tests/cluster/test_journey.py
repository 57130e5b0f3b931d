"""The cluster journey as docs/cluster.md tells users to run it, on one machine: `ray start
--head` (dashboard on, token authentication on), a second node with `ray start --address`
and a logical GPU, the MLflow server on PostgreSQL (deploy/services.py, what cluster.yaml's
head runs), then

    ray job submit --no-wait -- syncstudy launch SPEC --smoke --address auto --tracking-uri URL
    (the driver dies mid-study: SIGKILL, as a crash of the head's driver would)
    ray job submit --no-wait -- syncstudy launch SPEC --smoke --resume --address auto ...
    ray job logs ID --follow
    syncstudy runs --study NAME --tracking-uri URL --json      (from outside the cluster)
    syncstudy export --study NAME --tracking-uri URL --out DIR; syncstudy export --verify DIR

and checks that trials ran on both nodes and that every trial is in trials.parquet and in
MLflow exactly once. Trials ask for 1 CPU and each node has 1, so two run at once, one per node.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from raystart import cluster_of, exe

pytestmark = pytest.mark.cluster

NAME = "journey"
SAMPLES = 6
SPEC = f"""
name: {NAME}
train:
  dataset: digits
  backbone: simple_cnn
  width: 8
  epochs: 4
  batch_size: 64
  n_train: 300
search:
  lambda_focus: {{low: 1.0e-3, high: 1.0, log: true}}
  coupling_K: {{low: 1.0e-3, high: 1.0, log: true}}
objectives:
  - {{metric: val_acc, mode: max}}
sampler: {{name: random, seed: 0}}
scheduler: none
samples: 12
concurrency: 2
resources: {{cpu: 1, gpu: 0}}
evaluation: {{enabled: false}}
smoke:
  samples: {SAMPLES}
  train: {{epochs: 2, n_train: 200}}
"""
STEP_S = 900  # one CLI step on a loaded 2-core machine
FAULTS = Path(__file__).resolve().parents[1] / "pipeline" / "faults.py"  # the test seam


def run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = STEP_S) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd[:4])} ... exit {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def job_status(env: dict[str, str], root: Path, at: list[str], job: str) -> str:
    """`ray job status JOB` as one word: SUCCEEDED, FAILED, STOPPED, or what Ray calls a job
    still going (PENDING, RUNNING)."""
    text = run([exe("ray"), "job", "status", *at, job], env, root)
    for word, status in (("' succeeded", "SUCCEEDED"), ("' failed", "FAILED"), ("' was stopped", "STOPPED")):
        if word in text:
            return status
    return text.split(f"Status for job '{job}': ", 1)[-1].split()[0] if "Status for job" in text else text


def wait_for_job_end(env: dict[str, str], root: Path, at: list[str], job: str) -> str:
    """`ray job status` until the job is no longer PENDING or RUNNING (asked once a second,
    the CLI being seconds itself); STEP_S is a hang guard only."""
    deadline = time.monotonic() + STEP_S
    while (status := job_status(env, root, at, job)) in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"job {job} still {status} after {STEP_S} s"
        time.sleep(1)
    return status


def ok_trials(storage: Path) -> list[str]:
    """The finished trials a driver has recorded so far: mid-study they are in per-trial part
    files (trials.parquet is written when the study ends), read as the next driver reads them."""
    from pipeline.record.tables import StudyTables

    try:
        rows = StudyTables(storage).trials.values()
    except (OSError, ValueError):  # a part being written
        return []
    return [r.trial_id for r in rows if r.status == "ok"]


def test_submit_kill_resume_runs_export(tracking_services) -> None:
    with cluster_of(workers=[{"num_cpus": 1, "num_gpus": 1}]) as cluster:
        root = cluster.root
        env = cluster.env()
        spec = root / "journey.yaml"
        spec.write_text(SPEC)
        storage = root / "study"
        url = tracking_services.url
        ray_job = [exe("ray"), "job"]
        at = ["--address", cluster.dashboard]
        launch = [exe("syncstudy"), "launch", str(spec), "--smoke", "--address", "auto",
                  "--tracking-uri", url, "--storage", str(storage)]  # fmt: skip

        nodes = json.loads(run([exe("ray"), "list", "nodes", *at, "--format", "json"], env, root))
        node_ids = {n["node_id"] for n in nodes if n["state"] == "ALIVE"}
        assert len(node_ids) == 2, nodes

        # 1. Submit; the job's driver dies by SIGKILL once two trials are recorded, four to
        # go (a crash of the driver: what --resume is for; `ray job stop` ends it the same
        # way). The driver kills itself at that point (the `after_trial:2` crash point of
        # tests/pipeline/faults.py, set for this driver alone): a kill from the test after it
        # *saw* two trials raced the study, which on a quick machine had ended by then.
        marks = root / "marks"
        crash = ["env", f"SYNCSTUDY_HOOKS={FAULTS}", "SYNCSTUDY_CRASH_AT=after_trial:2", f"SYNCSTUDY_TEST_DIR={marks}"]
        run([*ray_job, "submit", *at, "--no-wait", "--submission-id", "journey-1", "--", *crash, *launch], env, root)
        table = storage / "trials.parquet"
        status = wait_for_job_end(env, root, at, "journey-1")
        assert status == "FAILED", status + run([*ray_job, "logs", *at, "journey-1"], env, root)
        assert (marks / "after_trial_2").exists(), "the driver ended, but not at its crash point"
        assert len(ok_trials(storage)) == 2, ok_trials(storage)

        # 2. Resubmit with --resume and follow it to its end.
        run([*ray_job, "submit", *at, "--no-wait", "--submission-id", "journey-2", "--", *launch, "--resume"], env, root)
        logs = run([*ray_job, "logs", *at, "journey-2", "--follow"], env, root)
        assert job_status(env, root, at, "journey-2") == "SUCCEEDED", logs[-4000:]
        assert f"resuming study {NAME!r}" in logs, logs[-4000:]

        # 3. From outside the cluster: the study in MLflow, its best trial exported.
        outside = {k: v for k, v in env.items() if not k.startswith("RAY_")}
        listed = json.loads(run([exe("syncstudy"), "runs", "--study", NAME, "--tracking-uri", url, "--json"], outside, root))
        out = root / "export"
        run([exe("syncstudy"), "export", "--study", NAME, "--tracking-uri", url, "--out", str(out)], outside, root)
        verified = run([exe("syncstudy"), "export", "--verify", str(out)], outside, root)
        assert "the checkpoint matches its own sha256" in verified
        rows = pq.read_table(table).to_pylist()  # before the cluster's folder goes

    trial_ids = [r["trial_id"] for r in rows]
    assert len(rows) == SAMPLES and len(set(trial_ids)) == SAMPLES, trial_ids
    assert {r["status"] for r in rows} == {"ok"}, rows
    assert {r["node_id"] for r in rows} == node_ids, ([r["node_id"] for r in rows], node_ids)
    # MLflow: each trial once (runs --json lists the study's trial runs), the same runs as Parquet.
    assert sorted(r["trial_id"] for r in listed) == sorted(trial_ids), listed
    assert sorted(r["run_id"] for r in listed) == sorted(r["mlflow_run_id"] for r in rows)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], "tags.`syncstudy.role` = 'trial'", max_results=100)
    assert sorted(r.data.tags["syncstudy.trial_id"] for r in runs) == sorted(trial_ids)
