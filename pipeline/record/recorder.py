"""The driver's recorder: each trial's MLflow child run and Parquet rows, from Tune's events
(pipeline.record.callback). Trials never talk to the tracking store, so they need neither its
disk nor its credentials, and one process writes it (no sqlite lock contention).

Writes are idempotent (pipeline.record.tracking, pipeline.record.tables): `finish` may run
twice for one trial (a callback, then the reconciliation after `fit`, or a resumed driver)
and records it once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.record import provenance as prov
from pipeline.record.identity import read_instance
from pipeline.record.tables import StudyTables, TrialRow
from pipeline.record.tracking import (
    FINISHED,
    TAG_NOTE,
    Tracker,
    TrackingTarget,
    artifact_files,
    log10_params,
)
from pipeline.spec.metrics import EVAL_SPLIT, EVAL_SPLIT_TAG, mlflow_metrics
from pipeline.spec.types import Param
from pipeline.trial import TUNE_KEYS, trial_config
from pipeline.trial_files import TrialFiles
from syncmodel.config import TrainConfig

# Child runs this process has seen recorded with their final status: the reconciliation after
# `fit` trusts these without asking the store (which may be down by then).
RECORDED: set[str] = set()

_EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")
_WRAPPERS = ("ray.air._internal.util.StartTraceback", "ray.exceptions.RayTaskError")


# What an out-of-memory trace says: torch.OutOfMemoryError (CUDA), MemoryError (Python, the
# host), Ray's OutOfMemoryError (its memory monitor killed the worker), a container's OOM kill,
# and torch's CPU allocator, which raises a plain RuntimeError ("[enforce fail at
# alloc_cpu.cpp] ... DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes.
# Error code 12 (Cannot allocate memory)"; "not enough memory" on Windows).
OOM_WORDS = (
    "OutOfMemoryError", "MemoryError", "out of memory", "OOMKilled",
    "DefaultCPUAllocator: can't allocate memory", "DefaultCPUAllocator: not enough memory",
    "Cannot allocate memory",
)  # fmt: skip


def classify_error(text: str) -> tuple[str, str]:
    """(status, one-line message) of a trial's error trace: the root cause, which Python
    prints first in a chained trace (Ray wraps it in its own exceptions after)."""
    lines = [ln.strip() for ln in (text or "").splitlines()]
    found = [ln for ln in lines if _EXC_LINE.match(ln) and not ln.startswith(_WRAPPERS)]
    oom = any(s in (text or "") for s in OOM_WORDS)
    message = found[0] if found else next((ln for ln in reversed(lines) if ln), "unknown error")
    return ("oom" if oom else "error"), message[:500]


NO_ERROR_TEXT = "the trial failed without an error message"


def error_text_of(trial: Any) -> str:
    """A failed Tune trial's error trace. Tune writes it to `error.txt` in the trial's local
    (driver staging) folder (`trial.error_file`) before it calls `on_trial_error`, and copies
    it to the storage folder, where `trial.get_error()` reads, only at its next sync: the
    local file first, then the storage copy, then the pickled exception."""
    path = getattr(trial, "error_file", None)
    if path:
        try:
            text = Path(path).read_text(errors="replace").strip()
        except OSError:
            text = ""
        if text:
            return text
    for get in ("get_error", "get_pickled_error"):
        try:
            found = getattr(trial, get)()
        except Exception:  # noqa: BLE001 - a missing or unreadable file: try the next
            found = None
        if found:
            return str(found)
    return NO_ERROR_TEXT


class StudyRecorder:
    """Driver-side: MLflow child runs and Parquet rows from Tune's events (see module doc).

    Pickled into Tune's experiment state (tuner.pkl) and unpickled on restore, so it holds
    only plain settings; the MLflow client and tables are opened on first use.
    """

    instance: str | None = None  # a recorder unpickled from a tuner.pkl older than instance ids

    def __init__(
        self,
        *,
        study: str,
        target: TrackingTarget,
        parent_id: str,
        storage: str,
        base: TrainConfig,
        search_params: dict[str, Param],
        objectives: list[str],
        total: int,
        quiet: bool = False,
        tracker: Tracker | None = None,
        instance: str | None = None,
    ):
        self.study = study
        self.target = target
        self.parent_id = parent_id
        self.storage = storage
        self.base = base
        self.search_params = search_params
        self.objectives = objectives
        self.total = total
        self.quiet = quiet
        self.instance = instance
        self._state: dict[str, Any] | None = None
        if tracker is not None:  # share the caller's client (not pickled: see __getstate__)
            self._open(tracker)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_state": None}

    # lazily opened, per driver process
    @property
    def tracker(self) -> Tracker:
        return self._open()["tracker"]

    @property
    def tables(self) -> StudyTables:
        return self._open()["tables"]

    def _open(self, tracker: Tracker | None = None) -> dict[str, Any]:
        if self._state is None:
            self._state = {
                # The folder's instance when the pickled recorder predates ids (a restored
                # old study adopted one: pipeline.record.identity).
                "tracker": tracker or Tracker(
                    self.target, self.study, instance=self.instance or read_instance(self.storage)
                ),
                "tables": StudyTables(self.storage),
                "runs": {},
            }
        return self._state

    def config_of(self, sampled: dict[str, Any]) -> dict[str, Any]:
        return trial_config(self.base, self.search_params, sampled).to_dict()

    def run_id(self, trial_id: str, sampled: dict[str, Any]) -> str:
        runs = self._open()["runs"]
        if trial_id not in runs:
            params = {**self.config_of(sampled), **self.log10_params(sampled)}
            runs[trial_id] = self.tracker.trial_run(trial_id, self.parent_id, params)
        return runs[trial_id]

    def log10_params(self, sampled: dict[str, Any]) -> dict[str, float]:
        """The trial's `log10_<name>` params (pipeline.record.tracking.log10_params)."""
        return log10_params(self.search_params, self.config_of(sampled))

    def start(self, trial_id: str, sampled: dict[str, Any]) -> None:
        state = self._open()
        state.setdefault("started", {}).setdefault(trial_id, time.time())
        if not state.get("described"):
            # Once per driver, so the UI opens on runs while the study runs (finish_parent
            # writes it again at the end).
            note = self.tracker.client.get_run(self.parent_id).data.tags.get(TAG_NOTE, "")
            self.tracker.describe_experiment(note)
            state["described"] = True
        self.run_id(trial_id, sampled)

    def epoch(self, trial_id: str, sampled: dict[str, Any], result: dict[str, Any]) -> None:
        if result.get("final"):
            return
        record = {k: v for k, v in result.items() if k not in TUNE_KEYS and _number(v)}
        if "epoch" not in record:
            return
        self.tables.upsert_history(trial_id, [record])  # first: kept through a tracking outage
        self.tracker.log_epochs(self.run_id(trial_id, sampled), [record])

    def finish(
        self,
        trial_id: str,
        sampled: dict[str, Any],
        result: dict[str, Any] | None,
        checkpoint: Any,
        error_text: str | None = None,
        node: str | None = None,
    ) -> str:
        """Record a trial's end (idempotent); returns its status.

        The Parquet row is written even when MLflow fails (the failure is raised after), so
        the tables stay complete through a tracking outage; the row's run id is then empty
        until the reconciliation records the trial again.
        """
        result = dict(result or {})
        config = self.config_of(sampled)
        if error_text is not None:
            status, error = classify_error(error_text)
        elif result.get("final"):
            status, error = str(result.get("status", "ok")), str(result.get("error") or "") or None
        else:
            status, error = "stopped", None  # the scheduler ended it before its final result
        failure: Exception | None = None
        run_id: str | None = None
        with contextlib.ExitStack() as stack:
            local = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
            files = TrialFiles(local) if local else None
            final = _read_json(files.final) if files else None
            if final is not None and error_text is None:
                result = {**result, **final}
            history = _read_json(files.history) if files else None
            if history:
                self.tables.upsert_history(trial_id, history)
            if files is not None and files.neurons.is_file():
                import pyarrow.parquet as pq

                self.tables.set_neurons(trial_id, pq.read_table(files.neurons))
            metrics = {k: v for k, v in result.items() if k not in TUNE_KEYS and _number(v)}
            # (status "stopped" or "error"/"oom": error_text given, or a result that is not final)
            if status not in FINISHED:
                metrics = {k: v for k, v in metrics.items() if k in self._epoch_keys(trial_id)}
            for key in ("start_time", "end_time", "epoch"):
                metrics.pop(key, None)
            ckpt_path = getattr(checkpoint, "path", None)
            node_id = str(result.get("node_id") or node or "")
            # measured in the trial's process: its last result (every result carries it), else
            # the note on its exception (it failed before its first result)
            # (or the row's, when a replayed end, e.g. a resumed driver's, has neither)
            made_by = prov.of_result(result) or prov.from_error_text(error_text)
            if not made_by and (earlier := self.tables.trials.get(trial_id)) is not None:
                made_by = prov.of_result(vars(earlier))
            trial_tags = prov.tags(made_by)
            if made_by.get("commit"):  # MLflow's "Source" commit: the trial's, not the driver's
                trial_tags["mlflow.source.git.commit"] = str(made_by["commit"])
            if status in FINISHED and isinstance(result.get(EVAL_SPLIT), str):
                trial_tags[EVAL_SPLIT_TAG] = result[EVAL_SPLIT]  # the split eval/images counts
            try:
                run_id = self.run_id(trial_id, sampled)
                if history:
                    self.tracker.log_epochs(run_id, history)
                wrote = self.tracker.finish_trial(
                    run_id, status=status, metrics=self.logged_metrics(metrics, config, final=status in FINISHED), step=0,
                    error=error,
                    artifacts=_artifacts(local, config, error_text, bool(result.get("uploaded")), stack),
                    tags={"syncstudy.checkpoint": str(ckpt_path or ""), "syncstudy.node_id": node_id,
                          TAG_NOTE: self.note(config, status, metrics, error), **provenance(), **trial_tags},
                )  # fmt: skip
                if wrote:
                    self.tracker.log_dataset(run_id, config)
                    if files is not None and files.pictures.is_dir():
                        self.tracker.log_images(run_id, sorted(files.pictures.glob("*.png")))
                RECORDED.add(run_id)
            except Exception as exc:  # noqa: BLE001 - raised below, once the row is written
                failure = exc
        row = self.tables.trials.get(trial_id)
        start = (
            (row.start_time if row else None)
            or result.get("start_time")
            or self._open().get("started", {}).get(trial_id)
        )
        self.tables.upsert_trial(
            TrialRow(
                trial_id=trial_id, status=status, params=config, metrics=metrics, error=error,
                mlflow_run_id=run_id or (row.mlflow_run_id if row else None),
                # set once the trial's end is in its run: until then MLflow shows less than
                # the row, and the read-only commands ask MLflow (pipeline.record.finished)
                mlflow_start_time=(self._run_start(run_id) if failure is None else None)
                or (row.mlflow_start_time if row else None),
                checkpoint=ckpt_path,
                node_id=node_id or None, start_time=start, end_time=result.get("end_time") or time.time(),
                **{k: made_by.get(k) for k in prov.KEYS},
            )
        )  # fmt: skip
        self.tables.write()
        if failure is not None:
            raise failure
        return status

    def logged_metrics(self, metrics: dict[str, Any], config: dict[str, Any], final: bool = True) -> dict[str, Any]:
        """Final metrics under their MLflow names (pipeline.spec.metrics.mlflow_metrics), logged
        at step 0 (MLflow's UI draws a metric whose last step is 0 as a bar, not a one-point
        line)."""
        return mlflow_metrics(metrics, config, self.objectives, final=final)

    def _run_start(self, run_id: str | None) -> float | None:
        ms = self.tracker.run_start.get(run_id) if run_id else None
        return ms / 1000 if ms is not None else None

    def note(self, config: dict[str, Any], status: str, metrics: dict[str, Any], error: str | None) -> str:
        """The child run's one-line description: searched params → objectives (or the status)."""
        params = ", ".join(f"{k} {_short(config.get(k))}" for k in self.search_params) or "fixed config"
        shown = ", ".join(f"{m} {metrics[m]:.4g}" for m in self.objectives if _number(metrics.get(m)))
        if status != "ok" or not shown:
            shown = status + (f": {error[:120]}" if error else "")
        return f"{params} → {shown}"

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


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, str]:
    """MLflow's provenance tags of a trial's run ("Source", "User", the git commit): the
    command, the user, and the commit of the checkout the driver runs from (if it is one; the
    trial's own commit replaces it when the trial reported one: `finish`)."""
    import getpass
    import subprocess

    tags = {"mlflow.source.name": "syncstudy launch", "mlflow.source.type": "LOCAL"}
    with contextlib.suppress(Exception):
        tags["mlflow.user"] = getpass.getuser()
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        with contextlib.suppress(Exception):
            out = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            )
            if out.returncode == 0 and out.stdout.strip():
                tags["mlflow.source.git.commit"] = out.stdout.strip()
    return tags


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _artifacts(
    local: Path | None,
    config: dict[str, Any],
    error_text: str | None,
    uploaded: bool,
    stack: contextlib.ExitStack,
) -> list[tuple[Path, str | None]]:
    """(local path, artifact folder) pairs the driver uploads for a trial's child run: its
    config, its error trace, and the files of its last checkpoint unless the trial uploaded
    them itself (remote servers: `tracking.upload_from_trial`)."""
    import yaml

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncstudy-art-")))
    written = TrialFiles(tmp)
    written.config_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
    written.config_json.write_text(json.dumps(config, indent=2))
    if error_text:
        (tmp / "error.txt").write_text(error_text)
    out = [(p, d) for p, d in artifact_files(tmp) if not uploaded]
    if error_text:
        out.append((tmp / "error.txt", None))
    if local is not None and not uploaded:
        out += [(p, d) for p, d in artifact_files(local) if p.name not in TrialFiles.CONFIGS]
    return out
