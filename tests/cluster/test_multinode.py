"""A real multi-node study on one machine: `syncstudy launch --address` against a Ray cluster
of a head and two worker nodes with one logical GPU each; trials ask for 0.5 GPU, so both
workers run trials. Every trial logs over HTTP to an `mlflow server` on PostgreSQL with
proxied artifacts; the test reads the results back from MLflow, PostgreSQL and Parquet.

The trials train on the CPU while holding a logical GPU (`device: auto` resolves to cpu
where torch sees no CUDA, whatever CUDA_VISIBLE_DEVICES Ray sets).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.cluster

SAMPLES = 4
SPEC = f"""
name: multinode-smoke
train:
  dataset: digits
  backbone: simple_cnn
  width: 8
  epochs: 2
  batch_size: 64
  n_train: 200
  device: auto
search:
  lambda_focus: {{low: 1.0e-3, high: 1.0, log: true}}
  coupling_K: {{low: 1.0e-3, high: 1.0, log: true}}
objectives:
  - {{metric: test_acc, mode: max}}
sampler: {{name: random, seed: 0}}
scheduler: none
samples: {SAMPLES}
concurrency: {SAMPLES}
resources: {{cpu: 0.5, gpu: 0.5}}
evaluation: {{enabled: false}}
"""
STUDY = "multinode-smoke"
LOCAL_STORE_NAMES = ("mlflow.db", "mlruns", "mlartifacts")


def _syncstudy() -> list[str]:
    exe = Path(sys.executable).with_name("syncstudy")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def study(ray_cluster, recorded_tracking, tmp_path_factory) -> dict:
    """Launch the study once for all the checks below (the driver in its own process, as a
    user would); returns where things are."""
    work = tmp_path_factory.mktemp("multinode")
    spec = work / "multinode.yaml"
    spec.write_text(SPEC)
    storage = work / "storage"
    env = {**os.environ, **ray_cluster.env, "MLFLOW_TRACKING_TOKEN": "driver"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the flag below is the only way in
    cmd = [
        *_syncstudy(), "launch", str(spec),
        "--address", ray_cluster.address,
        "--tracking-uri", recorded_tracking.url,
        "--storage", str(storage),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return {"work": work, "storage": storage, "trials": pq.read_table(storage / "trials.parquet").to_pylist()}


def _trial_runs(url: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    exp = client.get_experiment_by_name(STUDY)
    assert exp is not None, f"no experiment {STUDY!r} on {url}"
    assert exp.artifact_location.startswith("mlflow-artifacts:/"), exp.artifact_location
    runs = client.search_runs([exp.experiment_id], "tags.`syncstudy.role` = 'trial'", max_results=100)
    return runs


def test_trials_ran_on_both_worker_nodes(study, ray_cluster) -> None:
    rows = study["trials"]
    assert len(rows) == SAMPLES
    assert {r["status"] for r in rows} == {"ok"}
    nodes = [r["node_id"] for r in rows]
    assert set(nodes) == set(ray_cluster.worker_node_ids), (nodes, ray_cluster.worker_node_ids)


def test_mlflow_server_holds_every_trial(study, tracking_services) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_services.url)
    runs = {r.info.run_id: r for r in _trial_runs(tracking_services.url)}
    rows = study["trials"]
    assert set(runs) == {r["mlflow_run_id"] for r in rows}
    for row in rows:
        run = runs[row["mlflow_run_id"]]
        for name in ("lambda_focus", "coupling_K"):
            assert float(run.data.params[name]) == pytest.approx(row[f"params.{name}"], rel=1e-6)
        assert run.data.metrics["test_acc"] == pytest.approx(row["metrics.test_acc"])
        assert run.data.tags["syncstudy.node_id"] == row["node_id"]
        # Proxied artifacts: the worker uploaded over HTTP; the server wrote the files.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), run.info.artifact_uri
        assert client.list_artifacts(run.info.run_id), f"run {run.info.run_id} has no artifact"
        on_server = tracking_services.artifacts_dir / run.info.experiment_id / run.info.run_id
        assert any(p.is_file() for p in on_server.rglob("*")), on_server


def test_postgres_holds_the_runs(study, tracking_services) -> None:
    rows = study["trials"]
    run_ids = [r["mlflow_run_id"] for r in rows]
    with tracking_services.pg.connect() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE e.name = %s AND t.key = 'syncstudy.role' AND t.value = 'trial'",
            (STUDY,),
        )
        assert sorted(x for (x,) in cur.fetchall()) == sorted(run_ids)
        cur.execute(
            "SELECT run_uuid, value FROM params WHERE key = 'coupling_K' AND run_uuid = ANY(%s)",
            (run_ids,),
        )
        assert len(cur.fetchall()) == SAMPLES
        cur.execute(
            "SELECT DISTINCT run_uuid FROM metrics WHERE key = 'test_acc' AND run_uuid = ANY(%s)",
            (run_ids,),
        )
        assert len(cur.fetchall()) == SAMPLES


def test_no_trial_wrote_a_local_tracking_store(study) -> None:
    # The trials had only http:// and mlflow-artifacts:/ URIs: nothing MLflow-shaped may
    # appear in the study's folders (a fallback to sqlite or ./mlruns would).
    for root in (study["work"], study["storage"]):
        found = [p for name in LOCAL_STORE_NAMES for p in root.rglob(name)]
        assert not found, found


def test_each_trial_uploaded_an_artifact_from_its_worker(study, ray_cluster, recorded_tracking) -> None:
    """The worker process itself sent the run's files to the server (HTTP PUT to the proxied
    artifact store), not the driver reading them off a shared disk."""
    uploads: dict[str, set[str | None]] = {}
    for req in recorded_tracking.requests:
        if req.method == "PUT" and "/mlflow-artifacts/artifacts/" in req.path:
            for row in study["trials"]:
                if f"/{row['mlflow_run_id']}/" in req.path:
                    uploads.setdefault(row["mlflow_run_id"], set()).add(ray_cluster.node_of_token(req.token))
    for row in study["trials"]:
        senders = uploads.get(row["mlflow_run_id"], set())
        assert row["node_id"] in senders, (
            f"trial {row['trial_id']} ran on {row['node_id']} but its artifacts were uploaded "
            f"by {senders or 'nobody'} (None: the driver)"
        )
