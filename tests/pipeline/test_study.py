"""pipeline.search, pipeline.study and pipeline.trial pieces: the search space in Optuna's terms, the
searcher's bookkeeping, error classes, the guards that stop a launch before Ray starts, the
trial's evaluation outputs, and a study whose every trial fails."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from pipeline import cli, paths, search, study, trial
from pipeline.evaluation import evaluate_into
from pipeline.spec import Objective, Param, SamplerSpec, StudySpec, load_spec
from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError


def _spec(**kw: object) -> StudySpec:
    space = {
        "lambda_focus": Param("lambda_focus", "float", 1e-3, 1.0, log=True),
        "warmup_epochs": Param("warmup_epochs", "int", 0, 2),
        "layers": Param("layers", "categorical", choices=(["features.0"], ["features.3"])),
        "lr": Param("lr", "fixed", value=0.01),
    }
    return StudySpec(
        name="unit", train=TrainConfig(), search=space,
        objectives=[Objective("test_acc", "max"), Objective("interpretability", "max")], **kw,
    )  # fmt: skip


def test_search_space_in_optuna_terms() -> None:
    spec = _spec()
    dists = search.distributions(spec)
    assert dists["lambda_focus"] == FloatDistribution(1e-3, 1.0, log=True)
    assert dists["warmup_epochs"] == IntDistribution(0, 2)
    assert isinstance(dists["layers"], CategoricalDistribution)  # lists travel as JSON text
    assert "lr" not in dists and search.fixed_params(spec) == {"lr": 0.01}
    raw = {"layers": dists["layers"].choices[1], "warmup_epochs": 1.0}
    assert search.decode_params(spec.search, raw) == {"layers": ["features.3"], "warmup_epochs": 1}
    with pytest.raises(ConfigError, match="search.lambda_focus"):
        search.grid_space(spec)
    spec.search["lambda_focus"] = Param("lambda_focus", "float", 0.0, 1.0, step=0.5)
    assert search.grid_space(spec)["lambda_focus"] == [0.0, 0.5, 1.0]
    for name in ("tpe", "nsga2", "random", "grid"):
        spec.sampler = SamplerSpec(name=name, seed=1)
        assert search.make_sampler(spec) is not None


def test_searcher_tells_optuna_complete_pruned_or_fail() -> None:
    limiter = search.make_searcher(_spec())
    searcher = limiter.searcher
    for tid in ("a", "b", "c", "d"):
        assert set(searcher.suggest(tid)) == {"lambda_focus", "warmup_epochs", "layers"}
        searcher.on_trial_result(tid, {"epoch": 1, "val_acc": 0.5})  # no objective yet: ignored
    searcher.on_trial_complete("a", {"final": 1, "test_acc": 0.9, "interpretability": 0.3})
    searcher.on_trial_complete("b", {"final": 0, "val_acc": 0.5})  # stopped by the scheduler
    searcher.on_trial_complete("c", {"final": 1, "test_acc": float("nan"), "interpretability": 0.1})
    searcher.on_trial_complete("d", None, error=True)
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.FAIL]
    assert searcher._ot_study.trials[0].values == [0.9, 0.3]


def test_grid_sampler_runs_out_quietly() -> None:
    spec = _spec()
    spec.search = {"warmup_epochs": Param("warmup_epochs", "int", 0, 1)}
    spec.objectives = [Objective("test_acc", "max")]
    spec.sampler = SamplerSpec(name="grid", seed=0)
    searcher = search.make_searcher(spec).searcher
    seen = []
    for tid in ("a", "b"):
        seen.append(searcher.suggest(tid)["warmup_epochs"])
        searcher.on_trial_complete(tid, {"final": 1, "test_acc": 0.5})  # the last one stops the grid
    assert sorted(seen) == [0, 1]
    assert [t.state for t in searcher._ot_study.trials] == [TrialState.COMPLETE] * 2


def test_classify_error() -> None:
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\n    f()\nRuntimeError: boom\n'
    from pipeline.record.recorder import classify_error

    assert classify_error(trace) == ("error", "RuntimeError: boom")
    oom = "Traceback...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    assert classify_error(oom)[0] == "oom"


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(study, "ray_session", refuse)


def test_launch_guards_exit_2_before_ray(
    tmp_path: Path, no_ray: None, capsys: pytest.CaptureFixture[str], digits_spec: Path
) -> None:
    storage = tmp_path / "study"
    base = ["launch", str(digits_spec), "--smoke", "--storage", str(storage)]
    assert cli.main([*base, "--resume"]) == 2
    assert "no study to resume" in capsys.readouterr().err

    uri = "http://127.0.0.1:9"  # discard port: nothing answers
    assert cli.main([*base, "--tracking-uri", uri]) == 2
    assert uri in capsys.readouterr().err

    (storage / paths.EXPERIMENT_DIR).mkdir(parents=True)
    (storage / paths.EXPERIMENT_DIR / "tuner.pkl").write_bytes(b"")  # an experiment was saved
    assert cli.main(base) == 2
    assert "add --resume" in capsys.readouterr().err


def test_resume_refuses_a_changed_spec(tmp_path: Path, no_ray: None, digits_spec: Path) -> None:
    from pipeline.spec import dump_resolved

    storage = tmp_path / "study"
    spec = load_spec(digits_spec, smoke=True, overrides={"storage": str(storage)})
    (storage / paths.EXPERIMENT_DIR).mkdir(parents=True)
    (storage / paths.EXPERIMENT_DIR / "tuner.pkl").write_bytes(b"")
    dump_resolved(spec, storage / paths.SPEC_FILE)
    changed = load_spec(digits_spec, overrides={"storage": str(storage)})  # full form, not smoke
    with pytest.raises(Exception, match="differs .* samples"):
        study.run_study(changed, resume=True)


def test_trial_evaluation_writes_report_neurons_and_pictures(tmp_path: Path) -> None:
    from syncmodel.data import load_data
    from syncmodel.training import train

    config = TrainConfig(n_train=120, epochs=1, width=8)
    data = load_data(config)
    result = train(config, data=data)
    (tmp_path / "pictures").mkdir()
    report, _ = evaluate_into(
        tmp_path, result.model, data, result.layers, result.config, split="val", max_images=60,
        picture_dir=tmp_path / "pictures",
    )  # fmt: skip
    assert report["split"] == "val" and report["images"] == min(len(data.val), 60)
    assert 0.0 <= report["interpretability"] <= 1.0
    assert (tmp_path / "report.json").is_file()
    assert pq.read_table(tmp_path / "neurons.parquet").num_rows == report["neurons"]
    assert list((tmp_path / "pictures").glob("*.png"))


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_study_exits_1(
    ray_cluster: str, tmp_path: Path, write_spec, capsys: pytest.CaptureFixture[str],  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow import MlflowClient

    from pipeline.spec import sections

    # validate refuses an unknown layer before Ray starts (test_validate_more); here it is let
    # through, as an error validation cannot foresee, to fail in every trial
    monkeypatch.setattr(sections, "_check_layers", lambda *_a, **_k: None)
    storage = tmp_path / "study"
    spec = write_spec(
        tmp_path / "broken.yaml", storage=str(storage), train={"layers": ["no_such_layer"]},
    )  # fmt: skip
    assert cli.main(["launch", str(spec), "--smoke"]) == 1
    out = capsys.readouterr().out
    assert out.count(" error ") >= 2 and "2 trials (2 error)" in out
    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["error", "error"]
    assert all("no_such_layer" in r["error"] for r in rows)
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    for r in rows:
        run = client.get_run(r["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags["syncstudy.status"] == "error"
        assert "no_such_layer" in run.data.tags["syncstudy.error"]
        assert "error.txt" in {a.path for a in client.list_artifacts(r["mlflow_run_id"])}


@pytest.mark.slow
def test_asha_stops_lagging_trials_and_they_are_recorded_as_stopped(
    ray_cluster: str, tmp_path: Path, write_spec  # noqa: ANN001
) -> None:
    from mlflow import MlflowClient

    storage = tmp_path / "study"
    spec = write_spec(
        tmp_path / "asha.yaml", storage=str(storage), samples=6, concurrency=1,
        scheduler={"name": "asha", "metric": "val_acc", "mode": "max", "grace_period": 2, "reduction_factor": 2},
        train={"epochs": 3, "n_train": 800, "batch_size": 32}, evaluation={"max_images": 50},
        sampler={"seed": 3},
    )  # fmt: skip
    assert cli.main(["launch", str(spec), "--smoke", "--quiet"]) == 0
    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    assert len(rows) == 6
    stopped = [r for r in rows if r["status"] == "stopped"]
    assert stopped and all(r["status"] in ("ok", "stopped") for r in rows)
    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    history = pq.read_table(storage / "history.parquet").to_pylist()
    for r in stopped:
        assert r["metrics.test_acc"] is None and r["metrics.val_acc"] is not None
        epochs = [h["epoch"] for h in history if h["trial_id"] == r["trial_id"]]
        assert epochs and max(epochs) < 3
        assert client.get_run(r["mlflow_run_id"]).info.status == "KILLED"
        assert r["start_time"] is not None and r["end_time"] > r["start_time"]
    for r in rows:
        if r["status"] == "ok":
            assert r["metrics.test_acc"] is not None and r["metrics.interpretability"] is not None


def test_data_only_on_the_workers_is_loaded_there(ray_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The study's data set loads once, in a Ray task; when the node that ran it lacks the
    data (on a cluster it may live on the trial nodes only: DataError), the trial's worker
    loads it for itself instead of the trial failing; any other failure of the task stays a
    failure."""
    import ray

    import syncmodel.data
    from syncmodel.errors import DataError

    @ray.remote(num_cpus=0, max_retries=0)
    def lacks_data() -> None:
        raise DataError("/data/cifar10: not on this node")

    @ray.remote(num_cpus=0, max_retries=0)
    def breaks() -> None:
        raise ValueError("a bug in a loader")

    loaded: list[TrainConfig] = []
    monkeypatch.setattr(syncmodel.data, "load_data", lambda c: loaded.append(c) or "bundle")
    monkeypatch.setattr(trial, "_DATA_CACHE", {})
    config = TrainConfig()
    ctx = trial.TrialContext(base=TrainConfig(), search={}, evaluation=None, threads=1, data_ref=lacks_data.remote())
    assert trial._data_for(ctx, config) == "bundle" and loaded == [config]
    assert trial._data_for(ctx, config) == "bundle" and len(loaded) == 1  # kept for the next trials
    broken = trial.TrialContext(base=TrainConfig(), search={}, evaluation=None, threads=1, data_ref=breaks.remote())
    with pytest.raises(ValueError, match="a bug in a loader"):
        trial._data_for(broken, config)


def test_the_object_store_holds_the_packed_bundle_and_trials_get_load_datas(
    ray_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`shared_data`'s task puts the compact form in the object store (digits: int16 codes);
    a trial's worker unpacks it to exactly the bundle `load_data` builds, bit for bit."""
    import ray
    import torch

    from syncmodel.data import load_data
    from syncmodel.data.compact import PackedBundle

    monkeypatch.setattr(trial, "_DATA_CACHE", {})
    config = TrainConfig(n_train=200)
    ref = ray.remote(num_cpus=0, max_retries=0)(trial.load_bundle).remote(config)
    packed = ray.get(ref)
    assert isinstance(packed, PackedBundle) and packed.coded_splits() == ["train", "val", "test"]
    ctx = trial.TrialContext(base=config, search={}, evaluation=None, threads=1, data_ref=ref)
    got, want = trial._data_for(ctx, config), load_data(config)
    for s in ("train", "val", "test"):
        a, b = getattr(got, s).images, getattr(want, s).images
        assert a.dtype == torch.float32 and torch.equal(a.view(torch.int32), b.view(torch.int32))
    assert (got.mean, got.std, got.name) == (want.mean, want.std, want.name)


def test_the_driver_does_not_import_torch(tmp_path: Path, digits_spec: Path) -> None:
    """Preparing a study (the tracking store, Optuna) leaves torch to the workers: its import
    would cost the driver seconds of CPU while Ray starts (docs/benchmarks.md)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pipeline import paths, study\n"
        "from pipeline.spec import load_spec\n"
        f"spec = load_spec({str(digits_spec)!r}, smoke=True, overrides={{'storage': {str(tmp_path / 's')!r}}})\n"
        "box = {}\n"
        "study._prepare(spec, paths.target_of(spec, paths.storage_of(spec)), False, box)\n"
        "assert 'error' not in box, box\n"
        "print(' '.join(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_tune_is_given_the_metrics_its_searcher_and_scheduler_read() -> None:
    """pipeline.trial.tune_result: the objectives, the scheduler's metrics and the bookkeeping
    keys reach Tune; the rest stays in final.json and history.json."""
    from pipeline.spec.types import SchedulerSpec

    assert study.tune_metrics(_spec()) == ("test_acc", "interpretability")
    asha = _spec(scheduler=SchedulerSpec(name="asha", metric="train_acc"))
    assert study.tune_metrics(asha) == ("test_acc", "interpretability", "train_acc")
    mo = _spec(scheduler=SchedulerSpec(name="mo_asha", objectives=(("val_acc", "max"), ("interp_estimate", "max"))))
    assert study.tune_metrics(mo) == ("test_acc", "interpretability", "val_acc", "interp_estimate")

    final = {
        "epoch": 3, "val_acc": 0.9, "train_loss": 0.2, "test_acc": 0.88, "interpretability": 0.4,
        "modules": 7.0, "location_instability": 0.05, "final": 1, "status": "ok", "error": "",
        "node_id": "n", "start_time": 1.0, "end_time": 2.0,
    }  # fmt: skip
    told = trial.tune_result(final, study.tune_metrics(_spec()))
    assert set(told) == set(final) - {"modules", "location_instability", "val_acc", "train_loss"}
    assert all(told[k] == final[k] for k in told)


def test_ended_trials_keep_only_the_checkpoint_their_row_names(tmp_path: Path) -> None:
    """Tune keeps two checkpoints per running trial (study.KEEP_CHECKPOINTS); once the study
    ends, an ended trial keeps the one its row (and MLflow run) names, which is Tune's latest.
    A trial still running, one whose row names another checkpoint, or one without a row
    keeps all of its own."""
    from types import SimpleNamespace

    from pipeline.record.tables import TrialRow

    names = ("checkpoint_000000", "checkpoint_000001", "checkpoint_000002")
    for tid in ("ended", "running", "other", "norow"):
        for name in names:
            (tmp_path / tid / name).mkdir(parents=True)
            (tmp_path / tid / name / "model.pt").write_bytes(b"w")

    def result(tid: str) -> SimpleNamespace:  # a Tune Result: the trial's folder, its latest checkpoint
        return SimpleNamespace(path=str(tmp_path / tid), checkpoint=SimpleNamespace(path=str(tmp_path / tid / names[2])))

    rows = {
        "ended": TrialRow("ended", "ok", {}, {}, checkpoint=str(tmp_path / "ended" / names[2])),
        "running": TrialRow("running", "running", {}, {}, checkpoint=str(tmp_path / "running" / names[2])),
        "other": TrialRow("other", "stopped", {}, {}, checkpoint=str(tmp_path / "other" / names[1])),
    }
    grid = [result(tid) for tid in ("ended", "running", "other", "norow")]
    assert study.prune_checkpoints(grid, rows) == 2
    assert sorted(p.name for p in (tmp_path / "ended").iterdir()) == [names[2]]
    assert (tmp_path / "ended" / names[2] / "model.pt").is_file()
    for tid in ("running", "other", "norow"):
        assert sorted(p.name for p in (tmp_path / tid).iterdir()) == list(names), tid
    assert study.prune_checkpoints(grid, rows) == 0  # nothing left to remove
