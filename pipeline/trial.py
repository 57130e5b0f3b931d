"""One trial on a Ray worker: its config, its data, the trainable.

A trial (a Ray actor, reused across trials) trains one `TrainConfig` with
`syncmodel.training`, reports each epoch (+ a checkpoint folder when one was written) and a
final result whose checkpoint holds the files `TrialFiles` names. The driver never imports
this module's Ray or torch parts; its recorder reads `trial_config`, `TrialFiles` and
`TUNE_KEYS` from here.

The data set is loaded once, by a Ray task, into Ray's object store in compact form
(`syncmodel.data.compact`: 8- or 16-bit codes where that is lossless); each worker process
fetches it once (per node, Ray copies an object once), unpacks it to the float32 bundle
`load_data` built, bit for bit, and keeps that while the actor is reused.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.evaluation import evaluate_into
from pipeline.hooks import hooks
from pipeline.record.provenance import KEYS as PROVENANCE
from pipeline.record.provenance import note, of_result, trial_provenance
from pipeline.record.tracking import TrackingTarget, upload_from_trial
from pipeline.search import decode_params
from pipeline.spec.metrics import EVAL_SPLIT
from pipeline.spec.types import EvaluationSpec, Param
from pipeline.trial_files import TrialFiles
from syncmodel.config import TrainConfig

# TrainConfig fields that change the data a trial sees: when none is searched, one bundle is
# shared by every trial; otherwise each worker loads (and caches) the bundle its config needs.
DATA_FIELDS = ("dataset", "data_root", "download", "image_size", "n_train", "val_fraction", "seed")

# Keys Tune adds to every result; everything else numeric in an epoch result is the record.
TUNE_KEYS = {
    "training_iteration", "time_total_s", "episodes_total", "timesteps_total", "node_ip",
    "hostname", "pid", "time_this_iter_s", "timestamp", "date", "time_since_restore",
    "timesteps_since_restore", "iterations_since_restore", "config", "checkpoint_dir_name",
    "trial_id", "done", "experiment_tag", "should_checkpoint", "__duplicate__", "final", "uploaded",
}  # fmt: skip


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its sampled params (travels once via the object store)."""

    base: TrainConfig  # spec.train with the fixed search entries applied
    search: dict[str, Param]
    evaluation: EvaluationSpec
    threads: int
    data_ref: Any = None  # ray.ObjectRef of the shared PackedBundle, or None
    study: str = ""
    upload_to: TrackingTarget | None = None  # a remote tracking server: trials upload their files
    tune_metrics: tuple[str, ...] = ()  # the metrics the searcher and the scheduler read (tune_result)


# What Tune is told at a trial's end besides the metrics its searcher and scheduler read.
RESULT_KEYS = (
    "epoch", "final", "status", "error", "node_id", "start_time", "end_time", "uploaded",
    *PROVENANCE,  # a few short strings: the driver's row and tags, also without the checkpoint
)  # fmt: skip


def tune_result(final: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    """The part of a trial's final result that Tune is given: `metrics` (the searcher's
    objectives and the scheduler's metrics) and the bookkeeping keys. Everything else (the
    evaluation's metrics, the last epoch's record) travels in the checkpoint's final.json
    and history.json, which the driver's recorder reads.

    Tune keeps every result key of every trial in its experiment state (the last result, the
    checkpoint's result, and per key the last values and running statistics) and writes that
    whole state at every snapshot, one per ended trial. An evaluated trial reports a few
    hundred keys: the state grew by about 50 kB a trial, and each snapshot cost more as the
    study grew (docs/benchmarks.md, bookkeeping in a real study).
    """
    keep = {*metrics, *RESULT_KEYS}
    return {k: v for k, v in final.items() if k in keep}


def trial_config(base: TrainConfig, space: dict[str, Param], sampled: dict[str, Any]) -> TrainConfig:
    """A trial's config: the study's base config with its sampled params decoded (the trial
    trains it; the driver's recorder logs it). Checked again by `TrainConfig.from_dict`."""
    return TrainConfig.from_dict({**base.to_dict(), **decode_params(space, sampled)})


_DATA_CACHE: dict[Any, Any] = {}  # per worker process: survives actor reuse


def _data_for(ctx: TrialContext, config: TrainConfig) -> Any:
    import ray

    from syncmodel.data import load_data
    from syncmodel.data.compact import unpack
    from syncmodel.errors import DataError

    if ctx.data_ref is not None:
        key: Any = ctx.data_ref.hex()
        if key not in _DATA_CACHE:
            _DATA_CACHE.clear()
            try:
                # Unpacked on the CPU, once per worker process: training moves the train split
                # to its device once per trial anyway (syncmodel.data.compact.unpack).
                _DATA_CACHE[key] = unpack(ray.get(ctx.data_ref))
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, DataError):
                    raise
                # The node that ran the loading task lacks the data (on a cluster it may live
                # on the trial nodes only): this worker loads it, and keeps it for its trials.
                _DATA_CACHE[key] = load_data(config)
    else:
        key = tuple(getattr(config, f) for f in DATA_FIELDS)
        if key not in _DATA_CACHE:
            _DATA_CACHE.clear()
            _DATA_CACHE[key] = load_data(config)
    return _DATA_CACHE[key]


def load_bundle(base: TrainConfig) -> Any:
    """The study's data set, packed for the object store (run as a Ray task by
    pipeline.study.shared_data): a `syncmodel.data.compact.PackedBundle`."""
    from syncmodel.data import load_data
    from syncmodel.data.compact import pack

    return pack(load_data(base))


def trainable(config: dict[str, Any], ctx: TrialContext | None = None) -> None:
    """One trial: train, evaluate, report. Exceptions propagate: Tune retries from the last
    checkpoint (spec.retries), then the driver records the trial as error/oom."""
    assert ctx is not None
    started = time.time()
    cfg = trial_config(ctx.base, ctx.search, config)
    provenance = _provenance(cfg)
    try:
        _run(ctx, cfg, provenance, started)
    except BaseException as exc:
        # A trial that fails before its first result carries its provenance in its error
        # trace (Ray formats the exception, notes included, in the trial's process).
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(note(provenance))
        raise


def _provenance(cfg: TrainConfig) -> dict[str, Any]:
    """The trial's provenance (pipeline.record.provenance), measured here, in its process."""
    from syncmodel.training import resolve_device

    try:
        device: Any = resolve_device(cfg.device)
    except Exception:  # noqa: BLE001 - training raises it, with its message, in a moment
        device = "cpu" if cfg.device == "auto" else cfg.device
    return of_result(trial_provenance(cfg.dataset, device))


def _run(ctx: TrialContext, cfg: TrainConfig, provenance: dict[str, Any], started: float) -> None:
    import ray
    import torch
    import yaml
    from ray import tune

    from syncmodel.training import train

    torch.set_num_threads(ctx.threads)
    data = _data_for(ctx, cfg)
    node_id = ray.get_runtime_context().get_node_id()
    checkpoint = tune.get_checkpoint()
    with contextlib.ExitStack() as stack:
        restore = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        if restore is not None and TrialFiles(restore).final.is_file():
            # The driver died after the trial ended: hand back the same final result.
            tune.report(tune_result(json.loads(TrialFiles(restore).final.read_text()), ctx.tune_metrics))
            return
        resume = restore if restore is not None and TrialFiles(restore).train_state.is_file() else None
        context = tune.get_context()
        seam = hooks().trial(context.get_trial_name(), context.get_trial_id(), resume)
        data = seam.data(data)
        seam.before_training()
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncstudy-trial-")))

        def on_epoch(record: dict[str, float], written: Path | None) -> None:
            if int(record["epoch"]) >= cfg.epochs:
                # The last epoch is reported with the final result, in one report (its
                # scheduler metrics; the rest in history.json): a scheduler that stops trials
                # at max_t (ASHA) would otherwise stop every trial here, before its test
                # metrics and evaluation.
                return
            ckpt = tune.Checkpoint.from_directory(str(written)) if written is not None else None
            tune.report({**record, "final": 0, **provenance}, checkpoint=ckpt)
            seam.after_epoch(int(record["epoch"]))

        result = train(cfg, on_epoch=on_epoch, out_dir=work, data=data, resume=resume)
        files = TrialFiles(work / "final")
        files.folder.mkdir()
        metrics: dict[str, Any] = dict(result.metrics)
        if result.status == "ok" and ctx.evaluation.enabled:
            pictures = files.pictures if ctx.evaluation.pictures else None
            if pictures is not None:
                pictures.mkdir()
            # The validation split by default: evaluation metrics may be objectives, and the
            # test split only reports (evaluation.split, docs/spec.md).
            report, _ = evaluate_into(
                files.folder, result.model, data, result.layers, result.config,
                split=ctx.evaluation.split, max_images=ctx.evaluation.max_images, picture_dir=pictures,
            )  # fmt: skip
            metrics = {**report, **metrics}
        if result.checkpoint is not None and result.checkpoint.is_file():
            shutil.copy2(result.checkpoint, files.model)
            from pipeline.record.mlflow_model import write_for_trial

            write_for_trial(files.folder, files.model, data)  # MLflow's model format, no pickles
        final = {
            "epoch": int(result.history[-1]["epoch"]) if result.history else 0,
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            "final": 1,
            "status": result.status,
            "error": result.error or "",
            "node_id": node_id,
            "start_time": started,
            "end_time": time.time(),
            **provenance,
        }
        if isinstance(metrics.get("split"), str):
            final[EVAL_SPLIT] = metrics["split"]  # text: the recorder's tag, not a metric
        files.history.write_text(json.dumps(result.history, allow_nan=True))
        files.config_json.write_text(json.dumps(cfg.to_dict(), indent=2))
        files.config_yaml.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if ctx.upload_to is not None:
            trial_id = tune.get_context().get_trial_id()
            final["uploaded"] = int(upload_from_trial(ctx.upload_to, ctx.study, trial_id, files.folder))
        files.final.write_text(json.dumps(final, allow_nan=True))
        final_ckpt = tune.Checkpoint.from_directory(str(files.folder))
        tune.report(tune_result(final, ctx.tune_metrics), checkpoint=final_ckpt)
