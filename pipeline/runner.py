"""Run a study on Ray Tune: the trainable, the driver-side recorder, Tuner set-up and resume.
The one module that calls Ray.

Who does what:
- a trial (a Ray actor, reused across trials) trains one config with `syncmodel.train`,
  reports each epoch (+ a checkpoint folder when one was written) and a final result whose
  checkpoint holds model.pt, history.json, final.json and the evaluation outputs;
- the driver's `StudyRecorder` (a Tune callback) writes MLflow and the Parquet tables from
  those results: trials never need the tracking store, its disk or its credentials;
- the data set is loaded once by the driver and put in Ray's object store; each worker
  process fetches it once (per node, Ray copies an object once) and keeps it while the actor
  is reused for the next trials.

Resume (`resume=True`): `Tuner.restore` reloads the experiment (trials, Optuna state) from
`<storage>/tune`; finished trials are kept, unfinished ones continue from their last
checkpoint; MLflow and Parquet writes are keyed by trial id and epoch (pipeline.tracking,
pipeline.tables), so replays write nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import search
from pipeline.spec import EvaluationSpec, Param, StudySpec
from pipeline.tables import StudyTables, TrialRow
from pipeline.tracking import Tracker, TrackingTarget, check_target, resolve_target
from syncmodel.config import TrainConfig
from syncmodel.errors import SyncStudyError

# TrainConfig fields that change the data a trial sees: when none is searched, one bundle is
# shared by every trial; otherwise each worker loads (and caches) the bundle its config needs.
DATA_FIELDS = ("dataset", "data_root", "download", "image_size", "n_train", "val_fraction", "seed")

EXPERIMENT_DIR = "tune"  # Tune's experiment folder inside the study's storage
SPEC_FILE = "study.yaml"  # the resolved spec, written at the first launch
FINAL_FILE = "final.json"  # in a trial's final checkpoint: its final result
HISTORY_FILE = "history.json"

# Keys Tune adds to every result; everything else numeric in an epoch result is the record.
_TUNE_KEYS = {
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip",
    "hostname", "pid", "time_this_iter_s", "timestamp", "date", "time_since_restore",
    "timesteps_since_restore", "iterations_since_restore", "config", "checkpoint_dir_name",
    "trial_id", "done", "experiment_tag", "should_checkpoint", "__duplicate__", "final",
}  # fmt: skip


# ----------------------------------------------------------------------------- the trial


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled params (travels once via the object store)."""

    base: dict[str, Any]  # TrainConfig fields: spec.train + the fixed search entries
    search: dict[str, Param]
    evaluation: EvaluationSpec
    threads: int
    data_ref: Any = None  # ray.ObjectRef of the shared DataBundle, or None


_DATA_CACHE: dict[Any, Any] = {}  # per worker process: survives actor reuse


def trial_config(ctx: TrialContext, sampled: dict[str, Any]) -> TrainConfig:
    params = search.decode_params_from(ctx.search, sampled)
    return TrainConfig.from_dict({**ctx.base, **params})


def _data_for(ctx: TrialContext, config: TrainConfig) -> Any:
    import ray

    from syncmodel.data import load_data

    if ctx.data_ref is not None:
        key: Any = ctx.data_ref.hex()
        if key not in _DATA_CACHE:
            _DATA_CACHE.clear()
            _DATA_CACHE[key] = ray.get(ctx.data_ref)
    else:
        key = tuple(getattr(config, f) for f in DATA_FIELDS)
        if key not in _DATA_CACHE:
            _DATA_CACHE.clear()
            _DATA_CACHE[key] = load_data(config)
    return _DATA_CACHE[key]


def trainable(config: dict[str, Any], ctx: TrialContext | None = None) -> None:
    """One trial: train, evaluate, report. Exceptions propagate: Tune retries from the last
    checkpoint (spec.retries), then the driver records the trial as error/oom."""
    import ray
    import torch
    from ray import tune

    from syncmodel.train import train

    assert ctx is not None
    started = time.time()
    cfg = trial_config(ctx, config)
    torch.set_num_threads(ctx.threads)
    data = _data_for(ctx, cfg)
    node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    with contextlib.ExitStack() as stack:
        restore = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        if restore is not None and (restore / FINAL_FILE).is_file():
            # The driver died after the trial ended: hand back the same final result.
            tune.report(json.loads((restore / FINAL_FILE).read_text()))
            return
        resume = restore if restore is not None and (restore / "train_state.pt").is_file() else None
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncstudy-trial-")))

        def on_epoch(record: dict[str, float], written: Path | None) -> None:
            ckpt = tune.Checkpoint.from_directory(str(written)) if written is not None else None
            tune.report({**record, "final": 0}, checkpoint=ckpt)

        result = train(cfg, on_epoch=on_epoch, out_dir=work, data=data, resume=resume)
        final_dir = work / "final"
        final_dir.mkdir()
        metrics: dict[str, Any] = dict(result.metrics)
        if result.status == "ok" and ctx.evaluation.enabled:
            metrics = {**_evaluate(result, data, ctx.evaluation, final_dir), **metrics}
        if result.checkpoint is not None and result.checkpoint.is_file():
            shutil.copy2(result.checkpoint, final_dir / "model.pt")
        final = {
            "epoch": int(result.history[-1]["epoch"]) if result.history else 0,
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "final": 1,
            "status": result.status,
            "error": result.error or "",
            "node_id": node_id,
            "start_time": started,
            "end_time": time.time(),
        }
        (final_dir / HISTORY_FILE).write_text(json.dumps(result.history, allow_nan=True))
        (final_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        (final_dir / FINAL_FILE).write_text(json.dumps(final, allow_nan=True))
        tune.report(final, checkpoint=tune.Checkpoint.from_directory(str(final_dir)))


def _evaluate(result: Any, data: Any, spec: EvaluationSpec, out: Path) -> dict[str, Any]:
    """Interpretability report → report.json, neurons.parquet, pictures/ in `out`."""
    import pyarrow.parquet as pq

    from syncmodel.evaluate import evaluate
    from syncmodel.train import current_epsilon

    config = result.config
    pictures = out / "pictures" if spec.pictures else None
    if pictures is not None:
        pictures.mkdir()
    report, neurons = evaluate(
        result.model, data, result.layers, max_images=spec.max_images,
        epsilon=current_epsilon(config, config.epochs - 1), seed=config.seed, picture_dir=pictures,
    )  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=True))
    pq.write_table(neurons, out / "neurons.parquet")
    return report


# ----------------------------------------------------------------------------- the driver


def classify_error(text: str) -> tuple[str, str]:
    """(status, one-line message) of a trial's error trace."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    message = next((ln for ln in reversed(lines) if not ln.startswith(("File ", "^", "~"))), "")
    oom = any(s in (text or "") for s in ("OutOfMemoryError", "out of memory", "OOM"))
    return ("oom" if oom else "error"), (message or "unknown error")[:500]


class StudyRecorder:
    """Driver-side: MLflow child runs and Parquet rows from Tune's events (see module doc).

    Pickled into Tune's experiment state (tuner.pkl) and unpickled on restore, so it holds
    only plain settings; the MLflow client and tables are opened on first use.
    """

    def __init__(
        self,
        *,
        study: str,
        target: TrackingTarget,
        parent_id: str,
        storage: str,
        ctx_base: dict[str, Any],
        search_params: dict[str, Param],
        objectives: list[str],
        total: int,
        quiet: bool = False,
    ):
        self.study = study
        self.target = target
        self.parent_id = parent_id
        self.storage = storage
        self.base = ctx_base
        self.search_params = search_params
        self.objectives = objectives
        self.total = total
        self.quiet = quiet
        self._state: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_state": None}

    # lazily opened, per driver process
    @property
    def tracker(self) -> Tracker:
        return self._open()["tracker"]

    @property
    def tables(self) -> StudyTables:
        return self._open()["tables"]

    def _open(self) -> dict[str, Any]:
        if self._state is None:
            self._state = {
                "tracker": Tracker(self.target, self.study),
                "tables": StudyTables(self.storage),
                "runs": {},
                "lock": threading.Lock(),
            }
        return self._state

    def config_of(self, sampled: dict[str, Any]) -> dict[str, Any]:
        params = search.decode_params_from(self.search_params, sampled)
        return TrainConfig.from_dict({**self.base, **params}).to_dict()

    def run_id(self, trial_id: str, sampled: dict[str, Any]) -> str:
        runs = self._open()["runs"]
        if trial_id not in runs:
            runs[trial_id] = self.tracker.trial_run(trial_id, self.parent_id, self.config_of(sampled))
        return runs[trial_id]

    def start(self, trial_id: str, sampled: dict[str, Any]) -> None:
        self.run_id(trial_id, sampled)

    def epoch(self, trial_id: str, sampled: dict[str, Any], result: dict[str, Any]) -> None:
        if result.get("final"):
            return
        record = {k: v for k, v in result.items() if k not in _TUNE_KEYS and _number(v)}
        if "epoch" not in record:
            return
        self.tracker.log_epochs(self.run_id(trial_id, sampled), [record])
        self.tables.upsert_history(trial_id, [record])

    def finish(
        self,
        trial_id: str,
        sampled: dict[str, Any],
        result: dict[str, Any] | None,
        checkpoint: Any,
        error_text: str | None = None,
        node: str | None = None,
    ) -> str:
        """Record a trial's end (idempotent); returns its status."""
        result = dict(result or {})
        run_id = self.run_id(trial_id, sampled)
        config = self.config_of(sampled)
        if error_text is not None:
            status, error = classify_error(error_text)
        elif result.get("final"):
            status, error = str(result.get("status", "ok")), str(result.get("error") or "") or None
        else:
            status, error = "stopped", None  # the scheduler ended it before its final result
        with contextlib.ExitStack() as stack:
            local = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
            final = _read_json(local / FINAL_FILE) if local else None
            if final is not None and error_text is None:
                result = {**result, **final}
            history = _read_json(local / HISTORY_FILE) if local else None
            if history:
                self.tracker.log_epochs(run_id, history)
                self.tables.upsert_history(trial_id, history)
            if local is not None and (local / "neurons.parquet").is_file():
                import pyarrow.parquet as pq

                self.tables.set_neurons(trial_id, pq.read_table(local / "neurons.parquet"))
            artifacts = _artifacts(local, config, error_text, stack)
            metrics = {k: v for k, v in result.items() if k not in _TUNE_KEYS and _number(v)}
            if status == "stopped" or error_text is not None:
                metrics = {k: v for k, v in metrics.items() if k in self._epoch_keys(trial_id)}
            metrics.pop("start_time", None)
            metrics.pop("end_time", None)
            metrics.pop("epoch", None)
            ckpt_path = getattr(checkpoint, "path", None)
            node_id = str(result.get("node_id") or node or "")
            self.tracker.finish_trial(
                run_id, status=status, metrics=metrics, step=int(result.get("epoch", 0) or 0),
                error=error, artifacts=artifacts,
                tags={"syncstudy.checkpoint": str(ckpt_path or ""), "syncstudy.node_id": node_id},
            )  # fmt: skip
        row = self.tables.trials.get(trial_id)
        start = (row.start_time if row else None) or result.get("start_time")
        self.tables.upsert_trial(
            TrialRow(
                trial_id=trial_id, status=status, params=config, metrics=metrics, error=error,
                mlflow_run_id=run_id, checkpoint=ckpt_path, node_id=node_id or None,
                start_time=start, end_time=result.get("end_time") or time.time(),
            )
        )  # fmt: skip
        self.tables.write()
        return status

    def _epoch_keys(self, trial_id: str) -> set[str]:
        return {k for rec in self.tables.history.get(trial_id, {}).values() for k in rec}

    def progress(self, trial_id: str, status: str) -> None:
        if self.quiet:
            return
        done = sum(1 for r in self.tables.trials.values() if r.status != "running")
        row = self.tables.trials[trial_id]
        shown = "  ".join(
            f"{m} {row.metrics[m]:.4g}" for m in self.objectives if _number(row.metrics.get(m))
        )
        extra = f"  ({row.error})" if row.error else ""
        took = ""
        if row.start_time and row.end_time:
            took = f"  {row.end_time - row.start_time:.1f}s"
        print(f"[{done}/{self.total}] trial {trial_id}  {status:<8} {shown}{took}{extra}", flush=True)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _artifacts(
    local: Path | None, config: dict[str, Any], error_text: str | None, stack: contextlib.ExitStack
) -> list[tuple[Path, str | None]]:
    """(local path, artifact folder) pairs for a trial's child run."""
    import yaml

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncstudy-art-")))
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    out: list[tuple[Path, str | None]] = [(tmp / "config.yaml", "config"), (tmp / "config.json", "config")]
    if error_text:
        (tmp / "error.txt").write_text(error_text)
        out.append((tmp / "error.txt", None))
    if local is not None:
        out.append((local / "model.pt", "checkpoint"))
        for name in ("report.json", "neurons.parquet", HISTORY_FILE):
            out.append((local / name, "evaluation" if name != HISTORY_FILE else None))
        out.append((local / "pictures", "pictures"))
    return out


def _callback(recorder: StudyRecorder):  # noqa: ANN202 - a ray.tune.Callback
    from ray import tune

    class _Callback(tune.Callback):
        def __init__(self, rec: StudyRecorder):
            self.rec = rec

        def on_trial_start(self, iteration, trials, trial, **info):  # noqa: ANN001, ANN201
            self.rec.start(trial.trial_id, trial.config)

        def on_trial_result(self, iteration, trials, trial, result, **info):  # noqa: ANN001, ANN201
            self.rec.epoch(trial.trial_id, trial.config, result)

        def on_trial_complete(self, iteration, trials, trial, **info):  # noqa: ANN001, ANN201
            status = self.rec.finish(trial.trial_id, trial.config, trial.last_result, trial.checkpoint)
            self.rec.progress(trial.trial_id, status)

        def on_trial_error(self, iteration, trials, trial, **info):  # noqa: ANN001, ANN201
            text = trial.get_error() or "the trial failed without an error message"
            status = self.rec.finish(
                trial.trial_id, trial.config, trial.last_result, trial.checkpoint,
                error_text=str(text), node=(trial.last_result or {}).get("node_ip"),
            )  # fmt: skip
            self.rec.progress(trial.trial_id, status)

    return _Callback(recorder)


# ----------------------------------------------------------------------------- launch


@dataclass
class StudyOutcome:
    storage: Path
    target: TrackingTarget
    parent_run_id: str
    rows: list[TrialRow] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> int:
        return sum(1 for r in self.rows if r.status == "ok")


def storage_of(spec: StudySpec) -> Path:
    return Path(spec.storage or Path("runs") / spec.name).expanduser().resolve()


def target_of(spec: StudySpec, storage: Path) -> TrackingTarget:
    return resolve_target(
        spec.tracking.uri, spec.tracking.experiment or spec.name, storage, spec.tracking.artifact_location
    )


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to a cluster (`address`), reuse a Ray already started in this process, or start
    a local one (token authentication stays on, Ray 2.52+'s default) and stop it after."""
    import ray

    if ray.is_initialized():
        yield
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def _check_resume(spec: StudySpec, storage: Path, resume: bool) -> None:
    from pipeline.spec import spec_to_dict

    exp = storage / EXPERIMENT_DIR
    saved = storage / SPEC_FILE
    if resume:
        if not (exp / "tuner.pkl").is_file():
            raise SyncStudyError(f"--resume: no study to resume in {storage} (no {exp / 'tuner.pkl'})")
        if saved.is_file():
            import yaml

            before = yaml.safe_load(saved.read_text())
            now = spec_to_dict(spec)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                raise SyncStudyError(
                    f"--resume: the spec differs from the one the study in {storage} was launched "
                    f"with ({saved}) in: {', '.join(changed)}"
                )
    elif exp.exists():
        raise SyncStudyError(
            f"a study already ran in {storage}: add --resume to continue it, or give another --storage"
        )


def run_study(
    spec: StudySpec,
    *,
    resume: bool = False,
    address: str | None = None,
    quiet: bool = False,
    num_cpus: int | None = None,
) -> StudyOutcome:
    """Run (or resume) a study to its end; returns the trials' rows (trials.parquet)."""
    from pipeline.spec import check_fits_local, dump_resolved

    t0 = time.perf_counter()
    storage = storage_of(spec)
    target = target_of(spec, storage)
    _check_resume(spec, storage, resume)
    if address is None:
        check_fits_local(spec)
    storage.mkdir(parents=True, exist_ok=True)
    check_target(target)  # seconds, before Ray starts
    if not resume:
        dump_resolved(spec, storage / SPEC_FILE)

    # The tracking store (a fresh sqlite store takes seconds to migrate) opens while Ray starts.
    opened: dict[str, Any] = {}
    opener = threading.Thread(target=_open_parent, args=(spec, target, opened), daemon=True)
    opener.start()
    with ray_session(address, num_cpus):
        opener.join()
        if "error" in opened:
            raise opened["error"]
        parent_id = opened["parent"]
        tuner = _tuner(spec, storage, target, parent_id, resume, quiet)
        grid = tuner.fit()
        outcome = _reconcile(spec, storage, target, parent_id, grid)
    opened["tracker"].finish_parent(parent_id)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _open_parent(spec: StudySpec, target: TrackingTarget, box: dict[str, Any]) -> None:
    from pipeline.spec import spec_to_dict

    try:
        tracker = Tracker(target, spec.name)
        params = {
            "sampler": spec.sampler.name, "scheduler": spec.scheduler.name, "samples": spec.samples,
            "concurrency": spec.concurrency, "cpu_per_trial": spec.resources.cpu,
            "gpu_per_trial": spec.resources.gpu, "smoke": spec.smoke,
        }  # fmt: skip
        tags = {
            "syncstudy.objectives": json.dumps([{"metric": o.metric, "mode": o.mode} for o in spec.objectives]),
            "syncstudy.search": json.dumps(list(search.searched(spec))),
            "mlflow.note.content": spec.description or "",
        }
        parent = tracker.parent_run(params, tags)
        with tempfile.TemporaryDirectory() as tmp:
            import yaml

            path = Path(tmp) / SPEC_FILE
            path.write_text(yaml.safe_dump(spec_to_dict(spec), sort_keys=False))
            tracker.client.log_artifact(parent, str(path))
        box.update(tracker=tracker, parent=parent)
    except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
        box["error"] = exc


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _tuner(
    spec: StudySpec, storage: Path, target: TrackingTarget, parent_id: str, resume: bool, quiet: bool
):  # noqa: ANN202 - ray.tune.Tuner
    import ray
    from ray import tune

    # The trial reports epochs before its objectives exist (final only); the spec validator
    # already checked every metric name, so Tune's per-result key check is switched off.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Snapshot the experiment often: a driver killed between snapshots loses the trials it
    # started since (they are re-suggested on resume and their MLflow runs deleted). Tune
    # also snapshots whenever a trial replaced its kept checkpoint (num_to_keep below), which
    # keeps the snapshot's checkpoint paths valid; that is wanted, so its warning is muted.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The recorder prints one line per trial; Tune's console output (its new engine ignores
    # verbose=0) would bury them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

    base = {**spec.train.to_dict(), **search.fixed_params(spec)}
    data_ref = None
    if not any(name in DATA_FIELDS for name in search.searched(spec)):
        from syncmodel.data import load_data

        data_ref = ray.put(load_data(TrainConfig.from_dict(base)))
    ctx = TrialContext(
        base=base, search=dict(spec.search), evaluation=spec.evaluation,
        threads=max(1, int(spec.resources.cpu)), data_ref=data_ref,
    )  # fmt: skip
    fn = tune.with_resources(
        tune.with_parameters(trainable, ctx=ctx),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    exp = storage / EXPERIMENT_DIR
    if resume:
        return tune.Tuner.restore(str(exp), trainable=fn, resume_unfinished=True, resume_errored=False)
    samples = spec.samples
    if spec.sampler.name == "grid":
        samples = min(samples, search.grid_size(spec))
    recorder = StudyRecorder(
        study=spec.name, target=target, parent_id=parent_id, storage=str(storage), ctx_base=base,
        search_params=dict(spec.search), objectives=[o.metric for o in spec.objectives],
        total=samples, quiet=quiet,
    )  # fmt: skip
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=search.make_searcher(spec),
            scheduler=_scheduler(spec),
            num_samples=samples,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR,
            storage_path=str(storage),
            callbacks=[_callback(recorder)],
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )


def _scheduler(spec: StudySpec):  # noqa: ANN202 - a ray.tune scheduler or None
    s = spec.scheduler
    if s.name != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="epoch", metric=s.metric or "val_acc", mode=s.mode, max_t=spec.train.epochs,
        grace_period=s.grace_period, reduction_factor=s.reduction_factor,
    )  # fmt: skip


def _reconcile(
    spec: StudySpec, storage: Path, target: TrackingTarget, parent_id: str, grid: Any
) -> StudyOutcome:
    """After fit: record any ended trial the callbacks missed, drop runs Tune no longer knows."""
    recorder = StudyRecorder(
        study=spec.name, target=target, parent_id=parent_id, storage=str(storage),
        ctx_base={**spec.train.to_dict(), **search.fixed_params(spec)},
        search_params=dict(spec.search), objectives=[o.metric for o in spec.objectives],
        total=spec.samples, quiet=True,
    )  # fmt: skip
    known: set[str] = set()
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        known.add(trial_id)
        sampled = result.config or {}
        if trial_id in recorder.tables.trials and recorder.tables.trials[trial_id].status != "running":
            continue
        error = None
        if result.error is not None:
            error = str(result.error)
        recorder.finish(trial_id, sampled, result.metrics, result.checkpoint, error_text=error)
    orphans = recorder.tracker.delete_orphans(known)
    if orphans:
        recorder.tables.drop(orphans)
        recorder.tables.write()
    rows = sorted(recorder.tables.trials.values(), key=lambda r: r.trial_id)
    return StudyOutcome(storage, target, parent_id, rows, orphans)


def print_summary(spec: StudySpec, outcome: StudyOutcome, out: Callable[[str], None] = print) -> None:
    """The final table: every trial, best first by the primary objective."""
    primary = spec.primary()
    sign = -1.0 if primary.mode == "max" else 1.0

    def key(r: TrialRow) -> tuple[int, float]:
        v = r.metrics.get(primary.metric)
        ok = _number(v) and math.isfinite(v)
        return (0 if ok else 1, sign * v if ok else 0.0)

    names = list(search.searched(spec))
    metrics = [o.metric for o in spec.objectives]
    header = ["trial", "status", *metrics, *names]
    lines = [header]
    for r in sorted(outcome.rows, key=key):
        lines.append(
            [r.trial_id, r.status]
            + [_fmt(r.metrics.get(m)) for m in metrics]
            + [_fmt(r.params.get(n)) for n in names]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for line in lines:
        out("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    counts: dict[str, int] = {}
    for r in outcome.rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    out(f"{len(outcome.rows)} trials ({summary}) in {outcome.seconds:.0f} s")
    out(f"tables: {outcome.storage}  tracking: {outcome.target.uri}  experiment: {outcome.target.experiment}")
    if outcome.orphans:
        out(f"removed {len(outcome.orphans)} runs of trials lost with the dead driver: {', '.join(outcome.orphans)}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)



# ----------------------------------------------------------------------------- finding a study


@dataclass
class StudyRef:
    """Where a launched study's records are: for `runs`, `pareto`, `export`, `dashboard`."""

    name: str
    target: TrackingTarget
    storage: Path
    objectives: list[tuple[str, str]] | None = None  # (metric, mode); None → ask MLflow
    searched: list[str] | None = None


def locate_study(
    spec_path: str | None, study: str | None, tracking_uri: str | None = None, smoke: bool = False
) -> StudyRef:
    """A study from its spec file, or from `--study NAME`: ./runs/NAME (whose resolved spec
    names the tracking store), or the experiment NAME in `--tracking-uri`."""
    from pipeline.spec import load_spec

    if spec_path:
        spec = load_spec(spec_path, smoke=smoke, overrides={"tracking.uri": tracking_uri})
    elif study:
        saved = Path("runs") / study / SPEC_FILE
        if saved.is_file():
            spec = load_spec(saved, overrides={"tracking.uri": tracking_uri})
        elif tracking_uri:
            storage = (Path("runs") / study).resolve()
            return StudyRef(study, resolve_target(tracking_uri, study, storage), storage)
        else:
            raise SyncStudyError(
                f"--study {study}: no {saved} here; run from the folder the study was launched "
                "in, give its spec, or give --tracking-uri"
            )
    else:
        raise SyncStudyError("name the study: a SPEC file or --study NAME")
    storage = storage_of(spec)
    return StudyRef(
        spec.name, target_of(spec, storage), storage,
        [(o.metric, o.mode) for o in spec.objectives], list(search.searched(spec)),
    )  # fmt: skip


def open_study(ref: StudyRef) -> Tracker:
    """A tracker on the study's store, after a quick check; fills objectives from MLflow."""
    check_target(ref.target)
    if ref.target.uri.startswith("sqlite:"):
        db = Path(ref.target.uri.split(":///", 1)[1])
        if not db.is_file():
            raise SyncStudyError(f"tracking URI {ref.target.uri}: no such database (was the study launched?)")
    tracker = Tracker(ref.target, ref.name)
    if not tracker.exists():
        raise SyncStudyError(
            f"no experiment {ref.target.experiment!r} in tracking store {ref.target.uri} (was the study launched?)"
        )
    if ref.objectives is None or ref.searched is None:
        parent = tracker.parent()
        tags = parent.data.tags if parent is not None else {}
        if ref.objectives is None:
            objs = json.loads(tags.get("syncstudy.objectives", "[]"))
            ref.objectives = [(o["metric"], o["mode"]) for o in objs]
        if ref.searched is None:
            ref.searched = json.loads(tags.get("syncstudy.search", "[]"))
    return tracker
