"""End to end: the digits smoke study → MLflow, trials.parquet, `runs`, `pareto`, `export`,
and a fresh process with only syncmodel reproducing the logged test accuracy."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from pipeline import cli
from pipeline.record.tracking import (
    EPOCH_PREFIX,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STUDY,
    TAG_TRIAL,
    final_metrics,
    param_str,
)
from pipeline.spec.metrics import BOOKKEEPING, EVAL_SECONDS, EVAL_SECONDS_TAG, mlflow_name
from pipeline.trial import RESULT_KEYS, TUNE_KEYS

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "studies" / "digits.yaml"


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


# HEAD when this module is collected, before the session's smoke study runs: others may commit
# in this tree while the session runs, so the trials' commit lies between it and HEAD now.
HEAD_AT_COLLECTION = _git("rev-parse", "HEAD").stdout.strip() if (ROOT / ".git").exists() else None


def _client(storage: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")


def _child_runs(storage: Path) -> tuple[object, list[object]]:
    client = _client(storage)
    exp = client.get_experiment_by_name("digits")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(TAG_ROLE) == "study"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parents[0].info.run_id]
    return parents[0], children


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_one_child_run_per_trial_row_with_equal_params_and_metrics(smoke_study: Path) -> None:
    trials = pq.read_table(smoke_study / "trials.parquet").to_pylist()
    parent, children = _child_runs(smoke_study)
    assert len(trials) == 2 and len(children) == len(trials)
    by_trial = {r.data.tags[TAG_TRIAL]: r for r in children}
    assert sorted(by_trial) == sorted(row["trial_id"] for row in trials)
    for row in trials:
        run = by_trial[row["trial_id"]]
        assert row["mlflow_run_id"] == run.info.run_id
        assert row["status"] == "ok" == run.data.tags["syncstudy.status"]
        assert run.data.tags[TAG_STUDY] == "digits"
        params = {k[len("params."):]: v for k, v in row.items() if k.startswith("params.")}
        # the evaluation's bookkeeping (counts: eval/images, ...) is logged as params too
        logged = {k: v for k, v in run.data.params.items() if not k.startswith(("log10_", "eval/"))}
        assert len(params) == len(logged) > 20  # the full resolved config
        assert {"eval/images", "eval/neurons"} <= set(run.data.params)
        # the params searched on a log scale, also as log10 (MLflow's plots are linear)
        assert {k for k in run.data.params if k.startswith("log10_")} == {"log10_lambda_focus", "log10_coupling_K"}
        assert float(run.data.params["log10_coupling_K"]) == pytest.approx(math.log10(row["params.coupling_K"]), abs=1e-6)
        for key, value in params.items():
            # trials.parquet stores lists as JSON text; MLflow params are text
            expected = value if isinstance(value, str) and key == "layers" else param_str(value)
            assert run.data.params[key] == expected, key
        finals = {k: v for k, v in run.data.metrics.items() if not k.startswith(EPOCH_PREFIX)}
        metrics = {k[len("metrics."):]: v for k, v in row.items() if k.startswith("metrics.") and v is not None}
        # MLflow names (pipeline.spec.metrics.mlflow_name): repeats left out, the rest renamed
        objectives = ("val_acc", "interpretability")
        named = {mlflow_name(k, objectives): v for k, v in metrics.items() if not (k == "epsilon" and v == row["params.epsilon"])}
        named.pop(None, None)
        # the evaluation's bookkeeping is not a metric: its counts are params, its seconds a tag
        counts = {k: v for k, v in named.items() if k.rpartition("/")[2] in BOOKKEEPING}
        seconds = named.pop(EVAL_SECONDS, None)
        named = {k: v for k, v in named.items() if k not in counts}
        assert set(finals) == set(named)
        assert all(_same(finals[k], named[k]) for k in named)
        assert counts and all(float(run.data.params[k]) == v for k, v in counts.items())
        assert seconds is not None and run.data.tags[EVAL_SECONDS_TAG] == f"{seconds:.2f}"
        assert {"test_acc", "val_acc", "interpretability", "test/spread", "eval/modules"} <= set(finals)
        assert not {"accuracy", "spread", "train_loss", "eval/accuracy"} & set(finals)
        # read back under the bare names, the repeats from their epoch/ series
        read = final_metrics(run.data.metrics)
        not_metrics = ("accuracy", "epsilon", "eval_seconds", *BOOKKEEPING)  # repeats, bookkeeping
        assert all(_same(read[k], metrics[k]) for k in metrics if k not in not_metrics), run.info.run_id
        assert {m.step for k in finals for m in _client(smoke_study).get_metric_history(run.info.run_id, k)} == {0}
        for key in ("test_acc", "interpretability", "val_acc"):
            assert key in metrics
        assert {a.path for a in _client(smoke_study).list_artifacts(run.info.run_id)} >= {
            "checkpoint", "config", "evaluation"
        }


def test_epoch_metrics_logged_once_per_epoch_and_history_table(smoke_study: Path) -> None:
    _, children = _child_runs(smoke_study)
    history = pq.read_table(smoke_study / "history.parquet").to_pylist()
    client = _client(smoke_study)
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "val_acc")]
        assert steps == [1]  # one epoch in the smoke form
        rows = [h for h in history if h["trial_id"] == run.data.tags[TAG_TRIAL]]
        assert [h["epoch"] for h in rows] == [1]
        assert rows[0]["val_acc"] == run.data.metrics[EPOCH_PREFIX + "val_acc"]
    neurons = pq.read_table(smoke_study / "neurons.parquet")
    assert set(neurons.column("trial_id").to_pylist()) == {r.data.tags[TAG_TRIAL] for r in children}


def test_runs_json_and_pareto_agree_with_mlflow(
    smoke_study: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = ["--smoke", "--tracking-uri", f"sqlite:///{smoke_study / 'mlflow.db'}"]
    assert cli.main(["runs", str(DIGITS), *spec, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    _, children = _child_runs(smoke_study)
    by_run = {r.info.run_id: r for r in children}
    assert {t["run_id"] for t in listed} == set(by_run)
    for t in listed:
        run = by_run[t["run_id"]]
        assert t["params"] == run.data.params
        assert t["metrics"]["test_acc"] == run.data.metrics["test_acc"]
    accs = [t["metrics"]["val_acc"] for t in listed]
    assert accs == sorted(accs, reverse=True)  # sorted by the first objective, best first

    # --study NAME from the folder the study was launched in (runs/NAME/study.yaml)
    monkeypatch.chdir(smoke_study.parent.parent)
    (smoke_study.parent.parent / "runs").mkdir(exist_ok=True)
    link = smoke_study.parent.parent / "runs" / "digits"
    if not link.exists():
        link.symlink_to(smoke_study)
    assert cli.main(["pareto", "--study", "digits", "--json"]) == 0
    front = json.loads(capsys.readouterr().out)
    points = {r.data.tags[TAG_TRIAL]: (r.data.metrics["val_acc"], r.data.metrics["interpretability"]) for r in children}
    expected = {
        t for t, (a, i) in points.items()
        if not any(a2 >= a and i2 >= i and (a2, i2) != (a, i) for a2, i2 in points.values())
    }  # fmt: skip
    assert {f["trial_id"] for f in front} == expected
    for f in front:
        assert (f["objectives"]["val_acc"], f["objectives"]["interpretability"]) == points[f["trial_id"]]

    assert cli.main(["runs", "--study", "digits", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "sorted by val_acc (max)" in out and len(out.strip().splitlines()) == 3


def test_export_reloads_in_a_process_with_only_syncmodel(smoke_study: Path, tmp_path: Path) -> None:
    out = tmp_path / "best"
    uri = f"sqlite:///{smoke_study / 'mlflow.db'}"
    assert cli.main(["export", str(DIGITS), "--smoke", "--tracking-uri", uri, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "SHA256SUMS", "config.json", "config.yaml", "metrics.json", "model.safetensors", "report.json",
    ]  # fmt: skip
    logged = json.loads((out / "metrics.json").read_text())["metrics"]["test_acc"]
    code = (
        "import json, sys\n"
        "from syncmodel.checkpoint import load_checkpoint\n"
        "from syncmodel.data import load_data\n"
        "from syncmodel.training import inspect, resolve_device\n"
        f"model, config, meta = load_checkpoint({str(out / 'model.safetensors')!r})\n"
        "acc = inspect(model, load_data(config).test, meta['layers'], config.epsilon, resolve_device('cpu'))['acc']\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow', 'optuna', 'pipeline'})\n"
        "print(json.dumps({'acc': acc, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["acc"] == logged


@pytest.mark.slow  # its own MLflow server and study
def test_remote_server_trials_upload_their_own_files(
    ray_cluster: str, tmp_path: Path, write_spec  # noqa: ANN001
) -> None:
    """With an MLflow server (proxied artifacts), each trial uploads its files itself: the
    driver never reads them off Tune's storage (a cluster's workers share no disk with it)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--artifacts-destination", str(tmp_path / "srv-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # a hang guard: the wait is on /health answering
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(1)
        storage = tmp_path / "study"
        spec = write_spec(tmp_path / "remote.yaml", storage=str(storage), evaluation={"max_images": 60})
        assert cli.main(["launch", str(spec), "--smoke", "--tracking-uri", url, "--quiet"]) == 0
        finals = [json.loads(p.read_text()) for p in (storage / "tune").glob("*/checkpoint_*/final.json")]
        assert len(finals) == 2 and all(f["uploaded"] == 1 for f in finals)
        client = MlflowClient(tracking_uri=url)
        for row in pq.read_table(storage / "trials.parquet").to_pylist():
            names = {a.path for a in client.list_artifacts(row["mlflow_run_id"])}
            assert {"checkpoint", "config", "evaluation", "history.json"} <= names
            assert row["metrics.test_acc"] == client.get_run(row["mlflow_run_id"]).data.metrics["test_acc"]
        assert not (storage / "mlflow.db").exists() and not (storage / "mlartifacts").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_library_logs_go_to_the_study_folder_not_the_terminal(
    smoke_study: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging

    from pipeline.commands.launch import LOG_FILE, route_library_logs

    # the smoke launch wrote Optuna's "A new study created" line to the study's log file
    assert "A new study created" in (smoke_study / LOG_FILE).read_text()
    log = tmp_path / "sub" / LOG_FILE
    route_library_logs(log, verbose=False)
    capfd.readouterr()
    for name in ("ray._private.authentication", "mlflow.store.db.utils", "optuna.storages"):
        logging.getLogger(name).warning("library line from %s", name)
    out, err = capfd.readouterr()
    assert "library line" not in out + err
    assert log.read_text().count("library line from") == 3


def test_tune_keeps_only_what_it_reads_and_the_tables_keep_everything(smoke_study: Path) -> None:
    """A trial's final result in Tune's experiment state holds the objectives and the
    bookkeeping keys (pipeline.trial.tune_result: Tune writes that state whole at every
    snapshot); the evaluation's metrics and the last epoch reach the tables and MLflow from
    the checkpoint's final.json and history.json."""
    state = json.loads(sorted((smoke_study / "tune").glob("experiment_state-*.json"))[-1].read_text())
    rows = {r["trial_id"]: r for r in pq.read_table(smoke_study / "trials.parquet").to_pylist()}
    history = pq.read_table(smoke_study / "history.parquet").to_pylist()
    assert len(state["trial_data"]) == len(rows) == 2
    for _, run_json in state["trial_data"]:
        last = json.loads(run_json)["last_result"]
        assert set(last) - TUNE_KEYS <= {"val_acc", "interpretability", *RESULT_KEYS}
        assert {"val_acc", "interpretability", "status", "final", "epoch"} <= set(last)
        row = rows[last["trial_id"]]
        recorded = {k[len("metrics."):] for k, v in row.items() if k.startswith("metrics.") and v is not None}
        assert {"test_acc", "modules", "train_loss", "spread"} <= recorded - set(last), sorted(recorded)
        epochs = [r["epoch"] for r in history if r["trial_id"] == last["trial_id"]]
        assert sorted(epochs) == list(range(1, last["epoch"] + 1))


def test_every_row_and_run_records_its_trial_s_provenance(smoke_study: Path) -> None:
    """Measured in the trial's process (pipeline.record.provenance): torch, the device, the
    data's version, and the commit of this checkout (+ dirty), in each row and its run."""
    import sklearn
    import torch

    trials = pq.read_table(smoke_study / "trials.parquet").to_pylist()
    _, children = _child_runs(smoke_study)
    tags = {r.data.tags[TAG_TRIAL]: r.data.tags for r in children}
    for row in trials:
        assert row["torch"] == torch.__version__, row
        # device "auto": the card where there is one (with its name), else the CPU
        assert row["device"] == "cpu" or (torch.cuda.is_available() and row["device"].startswith("cuda:")), row
        assert row["data_version"] == f"scikit-learn {sklearn.__version__} digits"
        run = tags[row["trial_id"]]
        assert all(run[f"syncstudy.{k}"] == row[k] for k in ("torch", "device", "data_version", "commit") if row[k])
        if HEAD_AT_COLLECTION is None:
            continue  # not a git checkout: nothing to compare with
        assert row["commit"] is not None and isinstance(row["dirty"], bool), row
        head = _git("rev-parse", "HEAD").stdout.strip()
        if row["commit"] not in (HEAD_AT_COLLECTION, head):
            # HEAD moved on while the session ran: the trials' commit is one in between
            assert _git("merge-base", "--is-ancestor", HEAD_AT_COLLECTION, row["commit"]).returncode == 0, row
            assert _git("merge-base", "--is-ancestor", row["commit"], head).returncode == 0, row
