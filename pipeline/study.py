"""Run a study on Ray Tune: Tuner, scheduler, resume, reconciliation after `fit`.

Who does what:
- a trial (pipeline.trial) trains one config and reports each epoch and a final result whose
  checkpoint holds the files `pipeline.trial_files.TrialFiles` names;
- the driver's recorder (pipeline.record: a Tune callback) writes MLflow and the Parquet
  tables from those results: trials never need the tracking store, its disk or its
  credentials;
- the data set is loaded once, by a Ray task, into Ray's object store (`shared_data`), in
  compact form (`syncmodel.data.compact`); each trial's worker unpacks it once. The driver
  never imports torch.

Resume (`resume=True`): `Tuner.restore` reloads the experiment (trials, Optuna state) from
`<storage>/tune`; finished trials are kept, unfinished ones continue from their last
checkpoint; MLflow and Parquet writes are keyed by trial id and epoch (pipeline.record), so
replays write nothing twice.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import ray_join, search
from pipeline.lock import acquire
from pipeline.paths import EXPERIMENT_DIR, SPEC_FILE, storage_of, target_of
from pipeline.ray_local import actors_in_prestarted_workers, preload_modules, ray_session
from pipeline.record import experiment_owner
from pipeline.record.callback import StateKeeper, StudyCallback
from pipeline.record.digest import TAG_DIGEST, DamagedFile
from pipeline.record.identity import INSTANCE_FILE, ensure_instance, read_instance, restore_instance
from pipeline.record.recorder import RECORDED, StudyRecorder
from pipeline.record.state import disk_full, quiet_disk_full_logs, restore_good_state
from pipeline.record.tables import StudyTables, TrialRow
from pipeline.record.tracking import (
    TAG_INSTANCE,
    TERMINAL,
    Tracker,
    TrackingTarget,
    check_target,
    is_remote,
    outage_of,
)
from pipeline.repeats import Repeats
from pipeline.spec.grid import grid_size
from pipeline.spec.load import check_fits_local, dump_resolved, spec_to_dict
from pipeline.spec.types import StudySpec
from pipeline.trial import DATA_FIELDS, TrialContext, load_bundle, trainable
from syncmodel.config import TrainConfig
from syncmodel.errors import SyncStudyError


def shared_data(spec: StudySpec) -> Any:
    """The data set every trial trains on, loaded once by a Ray task and kept in the object
    store (Ray copies it once to each node that runs trials); None when a data field is
    searched (then each worker loads the bundle its trials need).

    A task, not the driver: the driver then never imports torch, and the bundle loads in a
    worker that Ray started (with torch preloaded) while the driver prepares the study.
    """
    if any(name in DATA_FIELDS for name in spec.searched()):
        return None
    import ray

    task = ray.remote(num_cpus=0, max_retries=0)(load_bundle)
    return task.options(name="syncstudy.load_data").remote(base_config(spec))


@dataclass
class StudyOutcome:
    storage: Path
    target: TrackingTarget
    parent_run_id: str
    rows: list[TrialRow] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # trials MLflow could not record
    outages: str = ""  # when the tracking store did not answer during the study
    unfinished: int = 0  # trials Tune left unfinished (an interrupted study)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # where the seconds went
    # proposals that repeated a trained or running config, not trained (pipeline.repeats)
    repeats: Repeats = field(default_factory=Repeats)
    # the study's trial runs as listed once at the wrap-up, orphans left out (None: not listed);
    # the parent run's summary reads them (a second listing cost a fifth of a 5,000-trial wrap-up)
    tracked: list[Any] | None = None

    @property
    def ok(self) -> int:
        return sum(1 for r in self.rows if r.status == "ok")


def _check_resume(spec: StudySpec, storage: Path, resume: bool) -> None:
    exp = storage / EXPERIMENT_DIR
    saved = storage / SPEC_FILE
    if resume:
        if not (exp / "tuner.pkl").is_file():
            raise SyncStudyError(f"--resume: no study to resume in {storage} (no {exp / 'tuner.pkl'})")
        check_folder(storage)  # every file the resume reads, before Ray starts
        if saved.is_file():
            before = _saved_spec(saved)
            evaluated = before.get("evaluation")
            split = None
            if isinstance(evaluated, dict):
                # launched before evaluation.split: its trials were evaluated on the test split
                split = evaluated.setdefault("split", "test")
            now = spec_to_dict(spec)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                hint = (
                    f" (its trials were evaluated on the {split} split: evaluation.split {split} resumes it)"
                    if split is not None and split != now["evaluation"]["split"] else ""
                )  # fmt: skip
                raise SyncStudyError(
                    f"--resume: the spec differs from the one the study in {storage} was launched "
                    f"with ({saved}) in: {', '.join(changed)}{hint}"
                )
    elif (exp / "tuner.pkl").is_file():
        # (a tune/ without tuner.pkl is a launch that died before Tune started: nothing ran)
        raise SyncStudyError(
            f"a study already ran in {storage}: add --resume to continue it, or give another --storage"
        )


def _saved_spec(saved: Path) -> dict[str, Any]:
    """The resolved spec the first launch wrote, read as the spec reader reads a spec (one
    line naming the file when it is not UTF-8, not YAML, or not a mapping)."""
    from pipeline.spec.reading import read_yaml

    fix = (
        "it is not the spec launch wrote; put back the copy the study's MLflow parent run holds "
        f"(artifact {SPEC_FILE}), then resume"
    )
    try:
        before = read_yaml(saved)
    except SyncStudyError as exc:
        raise DamagedFile(f"{exc}; {fix}") from None
    if not isinstance(before, dict):
        raise DamagedFile(f"{saved}: not a mapping of spec keys; {fix}")
    return before


def check_folder(storage: Path) -> None:
    """Before a resume starts Ray: the files of the study folder it will read are what the
    driver wrote, or one line (`DamagedFile`, exit 2) names the first that is not: the tables
    (their digest and their columns: pipeline.record.tables), `instance.json`. Tune's state
    files are checked (and a cut one replaced by the kept copy) by `restore_good_state`."""
    StudyTables(storage)
    path = storage / INSTANCE_FILE
    if (path.exists() or path.is_symlink()) and read_instance(storage) is None:
        raise DamagedFile(
            f"{path}: not the instance id the driver wrote; the study's id is the tag "
            f"{TAG_INSTANCE} of its MLflow parent run: write {{\"id\": \"<that id>\"}} into it, then resume"
        )


def run_study(
    spec: StudySpec,
    *,
    resume: bool = False,
    address: str | None = None,
    quiet: bool = False,
    num_cpus: int | None = None,
) -> StudyOutcome:
    """Run (or resume) a study to its end; returns the trials' rows (trials.parquet).

    The study folder's lock (pipeline.lock) comes first, before the checks and any write: a
    second driver on one folder stops there. A folder this call created is removed again when
    the study is refused before it started, so a refused launch leaves nothing behind.
    """
    storage = storage_of(spec)
    created = not storage.exists()
    lock = acquire(storage, "launch --resume" if resume else "launch")
    state = {"started": False}
    try:
        return _run_locked(spec, storage, state, resume=resume, address=address, quiet=quiet, num_cpus=num_cpus)
    except SyncStudyError:
        if created and not state["started"]:
            shutil.rmtree(storage, ignore_errors=True)
        raise
    except Exception as exc:
        if disk_full(exc):
            # A write of Tune's or of a table met a full disk: Tune's state files are kept
            # whole (pipeline.record.state), so the study resumes once there is space.
            raise SyncStudyError(
                f"no space left on the device of {storage} ({exc.__class__.__name__}): free some "
                "space, then `syncstudy launch SPEC --resume` continues the study"
            ) from None
        raise
    finally:
        lock.release()


def _run_locked(
    spec: StudySpec,
    storage: Path,
    state: dict[str, bool],
    *,
    resume: bool,
    address: str | None,
    quiet: bool,
    num_cpus: int | None,
) -> StudyOutcome:
    t0, wall0 = time.perf_counter(), time.time()
    target = target_of(spec, storage)
    _check_resume(spec, storage, resume)
    address = ray_join.join_address(address)  # --address, else RAY_ADDRESS; None: a local Ray
    if address is None:
        check_fits_local(spec)
    else:
        ray_join.preflight(address)  # seconds, one line on failure; before anything is written
    check_target(target)  # seconds, before Ray starts
    if not resume:  # its experiment keeps its artifacts in no other study's folder
        experiment_owner.preflight(spec, target)
    if resume:
        restore_good_state(storage)  # a state file cut short by a full disk → the last good set
    # A folder from before instance ids gets one now (and adopts its old parent run).
    instance, new_instance = ensure_instance(storage)
    adopt = resume and new_instance
    if not resume:
        dump_resolved(spec, storage / SPEC_FILE)

    # Ray's start is mostly waiting on its processes: the tracking store is prepared meanwhile
    # (MLflow's import, the parent run) and Optuna imported; the data loads in a Ray task.
    # The thread imports nothing of Ray, and Ray is imported before it starts: two threads
    # importing one package with circular imports at once can fail (ray.tune and ray.train).
    import ray  # noqa: F401

    prep: dict[str, Any] = {}
    worker = threading.Thread(
        target=_prepare, args=(spec, target, resume, prep, instance, str(storage), adopt), daemon=True
    )
    worker.start()
    phases: dict[str, float] = {"checks": time.perf_counter() - t0}
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    with ray_session(address, num_cpus, preload_modules(spec.evaluation.enabled)) as local:
        lap("ray start")
        data_ref = shared_data(spec)
        worker.join()
        if "error" in prep:
            raise prep["error"]  # a StudyConflict among them: nothing of Tune's written yet
        if local:
            actors_in_prestarted_workers()
        parent_id = prep["parent"]
        search.forget_repeats(spec.name)
        instance = prep["tracker"].instance  # the folder's own id, taken back if instance.json was deleted
        tuner = _tuner(spec, storage, target, parent_id, resume, quiet, data_ref, instance)
        state["started"] = True
        quiet_disk_full_logs()
        lap("set-up")
        grid = tuner.fit()
        lap("trials")
        outcome = _reconcile(spec, storage, target, parent_id, grid, prep["tracker"])
        outcome.repeats = search.repeats_of(spec.name)
        try:
            prep["tracker"].finish_parent(parent_id, records=outcome.tracked)
        except Exception as exc:  # noqa: BLE001 - the tables and Tune hold the study
            outcome.gaps.append(f"the parent run ({exc.__class__.__name__})")
        outcome.outages = outage_of(target.uri).report(since=wall0)
        lap("wrap-up")
    lap("ray stop")
    outcome.phases = phases
    outcome.seconds = time.perf_counter() - t0
    return outcome


def _prepare(
    spec: StudySpec,
    target: TrackingTarget,
    resume: bool,
    box: dict[str, Any],
    instance: str | None = None,
    storage: str | None = None,
    adopt: bool = False,
) -> None:
    """The parent run, and Optuna imported for the searcher (run in a thread while Ray starts)."""
    try:
        tracker = Tracker(target, spec.name, instance=instance, storage=storage, adopt=adopt)
        if not resume:  # again, now that the experiment exists (another launch may have made it)
            experiment_owner.check(tracker, spec)
        params = {
            "sampler": spec.sampler.name, "scheduler": spec.scheduler.name, "samples": spec.samples,
            "concurrency": spec.concurrency, "cpu_per_trial": spec.resources.cpu,
            "gpu_per_trial": spec.resources.gpu, "smoke": spec.smoke,
        }  # fmt: skip
        tags = {
            "syncstudy.objectives": json.dumps([{"metric": o.metric, "mode": o.mode} for o in spec.objectives]),
            "syncstudy.search": json.dumps(list(spec.searched())),
            "mlflow.note.content": spec.description or "",
        }
        parent = tracker.parent_run(params, tags)
        if tracker.reclaimed is not None and storage is not None:  # instance.json was deleted
            restore_instance(Path(storage), tracker.reclaimed)
        with tempfile.TemporaryDirectory() as tmp:
            import yaml

            path = Path(tmp) / SPEC_FILE
            path.write_text(yaml.safe_dump(spec_to_dict(spec), sort_keys=False))
            tracker.client.log_artifact(parent, str(path))
        box.update(tracker=tracker, parent=parent)
        if not resume:  # a restored study brings its own searcher (with Optuna's state)
            import optuna  # noqa: F401 - imported here, used by make_searcher in the main thread
    except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
        box["error"] = exc


def planned_trials(spec: StudySpec) -> int:
    """How many trials the study runs: `samples`, capped at the grid's size for grid search."""
    if spec.sampler.name == "grid":
        return min(spec.samples, grid_size(spec))
    return spec.samples


def base_config(spec: StudySpec) -> TrainConfig:
    """Every trial's config before its sampled params: spec.train + the fixed search entries,
    with `epoch_estimate` on when the scheduler or an objective compares `interp_estimate`."""
    config = {**spec.train.to_dict(), **search.fixed_params(spec)}
    if ESTIMATE in tune_metrics(spec):
        config["epoch_estimate"] = True
    return TrainConfig.from_dict(config)


def tune_metrics(spec: StudySpec) -> tuple[str, ...]:
    """The result keys Tune's searcher and scheduler read: the objectives, MO-ASHA's metrics,
    ASHA's metric (pipeline.trial.tune_result keeps these in a trial's final result)."""
    s = spec.scheduler
    names = [o.metric for o in spec.objectives] + [m for m, _ in s.objectives]
    if s.name == "asha":
        names.append(s.metric or ASHA_METRIC)
    return tuple(dict.fromkeys(names))


ESTIMATE = "interp_estimate"  # the per-epoch metric that needs TrainConfig.epoch_estimate
ASHA_METRIC = "val_acc"  # ASHA's metric when the spec names none


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _trial_name(trial: Any) -> str:
    # "3_1a2b3c4d": the creation counter of Tune's experiment tag, then the id (Tune's logs;
    # tests/pipeline/faults.py picks trials by that counter).
    return f"{trial.experiment_tag.split('_', 1)[0]}_{trial.trial_id}"


def _tuner(
    spec: StudySpec,
    storage: Path,
    target: TrackingTarget,
    parent_id: str,
    resume: bool,
    quiet: bool,
    data_ref: Any = None,
    instance: str | None = None,
):  # noqa: ANN202 - ray.tune.Tuner
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # The trial reports epochs before its objectives exist (final only); the spec validator
    # already checked every metric name, so Tune's per-result key check is switched off.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # Tune's experiment snapshots, paced as Tune's own default ("auto": every 10 s, or 19
    # times as long as the last one took if longer). The snapshot holds every trial and is
    # rewritten whole, so snapshots at a fixed period (or one per trial end) make each trial's
    # bookkeeping cost grow with the study (docs/benchmarks.md, bookkeeping in a real study).
    # A driver killed between two snapshots loses what happened since: trials it started are
    # proposed anew on resume (their MLflow runs deleted), epochs since are trained again.
    # Tune also snapshots as soon as a trial has checkpointed KEEP_CHECKPOINTS times since the
    # last snapshot (it has then deleted the checkpoint that snapshot names as the trial's
    # latest); its warning about those snapshots is muted.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "auto")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The recorder prints one line per trial; Tune's console output (its new engine ignores
    # verbose=0) would bury them.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's own per-trial result files: its JSON and CSV loggers are given explicitly below
    # (Tune's result grid reads them); its TensorBoard logger is left out (MLflow holds every
    # result): importing TensorBoardX imported torch into the driver, 3 s of CPU just as the
    # first trial started (docs/benchmarks.md).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

    base = base_config(spec)
    ctx = TrialContext(
        base=base, search=dict(spec.search), evaluation=spec.evaluation,
        threads=max(1, int(spec.resources.cpu)), data_ref=data_ref, study=spec.name,
        upload_to=target if is_remote(target.uri) else None,
        tune_metrics=tune_metrics(spec),
    )  # fmt: skip
    fn = tune.with_resources(
        tune.with_parameters(trainable, ctx=ctx),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    exp = storage / EXPERIMENT_DIR
    if resume:
        try:
            return tune.Tuner.restore(str(exp), trainable=fn, resume_unfinished=True, resume_errored=False)
        except Exception as exc:  # noqa: BLE001 - whole files (restore_good_state) Tune still cannot use
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise DamagedFile(
                f"--resume: Tune cannot restore its state in {exp} ({exc.__class__.__name__}: {first}); "
                "its finished trials are in the tables and MLflow: launch the study again with another --storage"
            ) from None
    samples = planned_trials(spec)
    recorder = StudyRecorder(
        study=spec.name, target=target, parent_id=parent_id, storage=str(storage), base=base,
        search_params=dict(spec.search), objectives=[o.metric for o in spec.objectives],
        total=samples, quiet=quiet, instance=instance,
    )  # fmt: skip
    scheduler = _scheduler(spec)
    # MO-ASHA's rungs travel with the experiment state in a callback: Tune 2.60's restore
    # brings the scheduler back from tuner.pkl as built, not as it was (pipeline.mo_asha)
    carry = [scheduler.state_callback()] if hasattr(scheduler, "state_callback") else []
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=search.make_searcher(spec),
            scheduler=scheduler,
            num_samples=samples,
            reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR,
            storage_path=str(storage),
            callbacks=[
                StudyCallback(recorder), StateKeeper(str(storage)),  # pipeline.record.state
                JsonLoggerCallback(), CSVLoggerCallback(), *carry,
            ],  # fmt: skip
            failure_config=tune.FailureConfig(max_failures=spec.retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
            verbose=0,
        ),
    )


# Checkpoints Tune keeps per trial while it runs. With 1, every checkpoint forces a snapshot
# of the whole experiment (a one-epoch trial: one per trial end); with 2, a trial forces one
# every second checkpoint at most. Ended trials' superseded checkpoints are removed when the
# study ends (prune_checkpoints), so a finished study keeps one per trial.
KEEP_CHECKPOINTS = 2


def prune_checkpoints(grid: Any, rows: dict[str, TrialRow]) -> int:
    """Remove the checkpoints of ended trials other than the one their row names (Tune's
    latest, which the trial's MLflow run and `export` use). Only trials whose row holds a
    terminal status and whose Tune result names that same checkpoint: Tune never restores an
    ended trial, and what a resumed one would restore from is kept. Returns how many went."""
    removed = 0
    for result in grid:
        trial_dir = Path(result.path)
        row = rows.get(trial_dir.name)
        kept = getattr(result.checkpoint, "path", None)
        if row is None or row.status not in TERMINAL or not kept or row.checkpoint != kept:
            continue
        for old in trial_dir.glob("checkpoint_*"):
            if old.is_dir() and old.name != Path(kept).name:
                shutil.rmtree(old, ignore_errors=True)
                removed += 1
    return removed


def _scheduler(spec: StudySpec):  # noqa: ANN202 - a ray.tune scheduler
    """The spec's scheduler; each chooses the next trial among live ones (pipeline.live_fifo)."""
    s = spec.scheduler
    if s.name == "mo_asha":
        from pipeline.mo_asha import MOASHASpec

        mo = MOASHASpec(grace_period=s.grace_period, reduction_factor=s.reduction_factor, objectives=s.objectives)
        return mo.scheduler(max_t=spec.train.epochs, time_attr="epoch")
    from pipeline.live_fifo import LiveASHA, LiveFIFO

    if s.name != "asha":
        return LiveFIFO()
    return LiveASHA(
        time_attr="epoch", metric=s.metric or ASHA_METRIC, mode=s.mode, max_t=spec.train.epochs,
        grace_period=s.grace_period, reduction_factor=s.reduction_factor,
    )  # fmt: skip


def _reconcile(
    spec: StudySpec, storage: Path, target: TrackingTarget, parent_id: str, grid: Any, tracker: Tracker
) -> StudyOutcome:
    """After fit: record any ended trial the callbacks missed, drop runs Tune no longer knows.

    What still cannot be recorded (the tracking store is down) is listed in `gaps`; running
    `launch --resume` later records it (Tune has nothing left to run; this pass runs again).
    """
    recorder = StudyRecorder(
        study=spec.name, target=target, parent_id=parent_id, storage=str(storage),
        base=base_config(spec),
        search_params=dict(spec.search), objectives=[o.metric for o in spec.objectives],
        total=spec.samples, quiet=True, tracker=tracker,
    )  # fmt: skip
    known: set[str] = set()
    gaps: list[str] = []
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        known.add(trial_id)
        try:
            row = recorder.tables.trials.get(trial_id)
            if row is not None and row.mlflow_run_id and (
                row.mlflow_run_id in RECORDED or recorder.tracker.is_final(row.mlflow_run_id)
            ):
                continue  # recorded by the callbacks (or an earlier driver)
            error = str(result.error) if result.error is not None else None
            recorder.finish(trial_id, result.config or {}, result.metrics, result.checkpoint, error_text=error)
        except Exception as exc:  # noqa: BLE001 - reported as a gap
            gaps.append(f"{trial_id} ({exc.__class__.__name__}: {str(exc)[:120]})")
    orphans: list[str] = []
    tracked: list[Any] | None = None
    try:
        listed = recorder.tracker.trials()
        orphans = recorder.tracker.delete_orphans(known, listed)
        tracked = [r for r in listed if r.trial_id not in orphans]
    except Exception as exc:  # noqa: BLE001
        gaps.append(f"orphan clean-up ({exc.__class__.__name__})")
    if orphans:
        recorder.tables.drop(orphans)
    digest = recorder.tables.compact()  # the per-trial files → the three tables (pipeline.record.tables)
    try:  # the digest's copy outside the folder (pipeline.record.digest)
        recorder.tracker.client.set_tag(parent_id, TAG_DIGEST, digest)
    except Exception as exc:  # noqa: BLE001 - the folder's copy holds; reported as a gap
        gaps.append(f"the tables' digest on the parent run ({exc.__class__.__name__})")
    prune_checkpoints(grid, recorder.tables.trials)
    rows = sorted(recorder.tables.trials.values(), key=lambda r: r.trial_id)
    # Ctrl-C: Tune stops early and saves the study; trials it ran and those it never created
    # are both missing from the ended ones.
    unfinished = max(planned_trials(spec) - grid.num_terminated - grid.num_errors, 0)
    return StudyOutcome(
        storage, target, parent_id, rows, orphans, gaps=gaps, unfinished=unfinished, tracked=tracked
    )


def print_summary(spec: StudySpec, outcome: StudyOutcome, out: Callable[[str], None] = print) -> None:
    """The final table: every trial, best first by the primary objective."""
    primary = spec.primary()
    sign = -1.0 if primary.mode == "max" else 1.0

    def key(r: TrialRow) -> tuple[int, float]:
        v = r.metrics.get(primary.metric)
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        return (0 if ok else 1, sign * v if ok else 0.0)

    names = list(spec.searched())
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
    if outcome.repeats.line():
        out(outcome.repeats.line())
    if outcome.phases:
        out("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in outcome.phases.items()))
    out(f"tables: {outcome.storage}  tracking: {outcome.target.uri}  experiment: {outcome.target.experiment}")
    if outcome.unfinished:
        out(f"interrupted: {outcome.unfinished} trials unfinished; `syncstudy launch SPEC --resume` continues the study")
    if outcome.outages:
        out(outcome.outages)
    if outcome.gaps:
        out(
            f"NOT recorded in MLflow ({outcome.target.uri}): {'; '.join(outcome.gaps)}. "
            "The tables hold them; run `syncstudy launch SPEC --resume` once the store is back."
        )
    if outcome.orphans:
        out(f"removed {len(outcome.orphans)} runs of trials lost with the dead driver: {', '.join(outcome.orphans)}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)
