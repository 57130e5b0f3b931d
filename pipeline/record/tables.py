"""The study's Parquet tables in its storage folder, written atomically (temp file + rename).

- trials.parquet: one row per trial, keyed by trial_id;
- history.parquet: one row per trial and epoch, keyed by (trial_id, epoch);
- neurons.parquet: evaluate()'s neuron table of every evaluated trial, keyed by trial_id.

Every write is an upsert by key, so replaying a trial (a resumed study) never duplicates a
row; during a study each trial is written to files of its own, compacted at the end
(`StudyTables`). Schemas: docs/pipeline.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.record.digest import DamagedFile, check, drop_digest, write_digest
from pipeline.record.provenance import KEYS as PROVENANCE
from pipeline.safe_files import remove, write_atomic

TRIALS = "trials.parquet"
HISTORY = "history.parquet"
NEURONS = "neurons.parquet"
PARTS = "parts"  # per-trial files until the study compacts them (StudyTables)

PARAM_PREFIX = "params."
METRIC_PREFIX = "metrics."

# Fixed leading columns of trials.parquet, in order, with their types.
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "trial_id": pa.string(),
    "status": pa.string(),  # ok | diverged | stopped | error | oom
    "error": pa.string(),
    "mlflow_run_id": pa.string(),
    # The run's start_time as MLflow holds it, once the trial's end is recorded in the run
    # (null until then): MLflow lists a study's runs in this order (ties by run id), so `runs`
    # and `pareto` answered from the tables keep its order (pipeline.record.finished).
    "mlflow_start_time": pa.timestamp("ms", tz="UTC"),
    "checkpoint": pa.string(),  # the trial's last checkpoint folder (Tune storage)
    "node_id": pa.string(),  # Ray node id (or IP) the trial last ran on
    "start_time": pa.timestamp("ms", tz="UTC"),
    "end_time": pa.timestamp("ms", tz="UTC"),
    # Provenance, measured in the trial's process (pipeline.record.provenance); null in rows
    # written before trials reported it, and commit/dirty null outside a git checkout.
    "commit": pa.string(),  # git commit of the code that trained it
    "dirty": pa.bool_(),  # whether that checkout had uncommitted changes to tracked files
    "torch": pa.string(),  # torch.__version__
    "device": pa.string(),  # "cpu" or "cuda:N (card name)"
    "data_version": pa.string(),  # the data's generator/supplier version (null: unversioned)
}


@dataclass
class TrialRow:
    trial_id: str
    status: str
    params: dict[str, Any]  # the full resolved trial config
    metrics: dict[str, float]  # final metrics
    error: str | None = None
    mlflow_run_id: str | None = None
    mlflow_start_time: float | None = None  # seconds since the epoch (MLflow's ms / 1000)
    checkpoint: str | None = None
    node_id: str | None = None
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None
    commit: str | None = None
    dirty: bool | None = None
    torch: str | None = None
    device: str | None = None
    data_version: str | None = None


def _param_value(v: Any) -> Any:
    # Lists (e.g. `layers`) and dicts become JSON text so that every param is one scalar column.
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else v


def _ts(seconds: float | None) -> datetime | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _column(values: list[Any]) -> pa.Array:
    """A column from Python values; mixed int/float → float64, anything odd → string."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.array(values, pa.bool_())
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        if all(isinstance(v, int) for v in present):
            return pa.array(values, pa.int64())
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    if not present:
        return pa.array(values, pa.null())
    return pa.array([None if v is None else str(v) for v in values], pa.string())


def trials_table(rows: Iterable[TrialRow]) -> pa.Table:
    rows = sorted(rows, key=lambda r: r.trial_id)
    cols: dict[str, pa.Array] = {
        "trial_id": pa.array([r.trial_id for r in rows], pa.string()),
        "status": pa.array([r.status for r in rows], pa.string()),
        "error": pa.array([r.error for r in rows], pa.string()),
        "mlflow_run_id": pa.array([r.mlflow_run_id for r in rows], pa.string()),
        "mlflow_start_time": pa.array([_ts(r.mlflow_start_time) for r in rows], TRIAL_COLUMNS["mlflow_start_time"]),
        "checkpoint": pa.array([r.checkpoint for r in rows], pa.string()),
        "node_id": pa.array([r.node_id for r in rows], pa.string()),
        "start_time": pa.array([_ts(r.start_time) for r in rows], TRIAL_COLUMNS["start_time"]),
        "end_time": pa.array([_ts(r.end_time) for r in rows], TRIAL_COLUMNS["end_time"]),
        **{k: pa.array([getattr(r, k) for r in rows], TRIAL_COLUMNS[k]) for k in PROVENANCE},
    }
    param_keys = _ordered_keys(r.params for r in rows)
    for k in param_keys:
        cols[PARAM_PREFIX + k] = _column([_param_value(r.params.get(k)) for r in rows])
    metric_keys = sorted({k for r in rows for k in r.metrics})
    for k in metric_keys:
        cols[METRIC_PREFIX + k] = pa.array(
            [_float_or_none(r.metrics.get(k)) for r in rows], pa.float64()
        )
    return pa.table(cols)


def history_table(history: dict[str, dict[int, dict[str, float]]]) -> pa.Table:
    rows = [(tid, ep, rec) for tid in sorted(history) for ep, rec in sorted(history[tid].items())]
    keys = _ordered_keys(rec for _, _, rec in rows)
    cols: dict[str, pa.Array] = {
        "trial_id": pa.array([tid for tid, _, _ in rows], pa.string()),
        "epoch": pa.array([ep for _, ep, _ in rows], pa.int64()),
    }
    for k in keys:
        if k == "epoch":
            continue
        cols[k] = pa.array([_float_or_none(rec.get(k)) for _, _, rec in rows], pa.float64())
    return pa.table(cols)


def _float_or_none(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _ordered_keys(dicts: Iterable[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for d in dicts:
        for k in d:
            seen.setdefault(k, None)
    return list(seen)


def write_table(table: pa.Table, path: Path, within: Path | None = None) -> Path:
    """`path` replaced atomically by `table`; no folder below `within` (default: the file's
    own) and not the file itself is reached through a link (pipeline.safe_files): pyarrow
    writes to the descriptor made with O_EXCL, never to a name it would reopen."""
    return write_atomic(path, lambda fh: pq.write_table(table, fh), within=within)


class StudyTables:
    """A study's three tables: kept in memory, written per trial, compacted at the end.

    During a study each `write()` writes only the trials changed since the last one, one
    file per trial and table (`<storage>/parts/<table>/<trial_id>.parquet`, atomically), so
    a trial's bookkeeping costs the same at trial 5 and trial 5,000 (bench/bookkeeping.py).
    `compact()` (the study's end: pipeline.study) writes the three whole tables from memory
    and removes the parts. Loading reads the whole tables, then the parts over them: a driver
    killed before its compaction loses nothing, and the next one compacts.
    """

    def __init__(self, storage: str | Path):
        self.storage = Path(storage)
        self.trials: dict[str, TrialRow] = {}
        self.history: dict[str, dict[int, dict[str, float]]] = {}
        self.neurons: dict[str, pa.Table] = {}
        self._dirty: set[str] = set()
        self._load()

    def _part(self, table: str, trial_id: str) -> Path:
        return self.storage / PARTS / table / f"{trial_id}.parquet"

    def _load(self) -> None:
        # Each whole table is checked against the digest the last compaction wrote, and every
        # file read is parsed under `_readable`: an edited or damaged file ends in one line
        # naming it (DamagedFile), before a resumed driver starts Ray (pipeline.study).
        for name in (TRIALS, HISTORY, NEURONS):
            if (self.storage / name).is_file():
                check(self.storage, name, REBUILD)
        path = self.storage / TRIALS
        if path.is_file():
            with _readable(path):
                self._load_trials(pq.read_table(path))
        path = self.storage / HISTORY
        if path.is_file():
            with _readable(path):
                self._load_history(pq.read_table(path))
        path = self.storage / NEURONS
        if path.is_file():
            with _readable(path):
                table = pq.read_table(path)
                # Rows grouped by trial in one pass (a mask per trial was quadratic in the
                # study's size: 5,000 trials of 64 neurons, 1.6e9 comparisons), order kept.
                rows: dict[str, list[int]] = {}
                for i, tid in enumerate(table.column("trial_id").to_pylist()):
                    rows.setdefault(tid, []).append(i)
                body = table.drop_columns(["trial_id"])
                for tid, idx in rows.items():
                    self.neurons[tid] = body.take(pa.array(idx, type=pa.int64()))
        parts = self.storage / PARTS
        for file in sorted((parts / "trials").glob("*.parquet")):
            with _readable(file):
                self._load_trials(pq.read_table(file))
        for file in sorted((parts / "history").glob("*.parquet")):
            with _readable(file):
                self.history.pop(file.stem, None)
                self._load_history(pq.read_table(file))
        for file in sorted((parts / "neurons").glob("*.parquet")):
            with _readable(file):
                self.neurons[file.stem] = pq.read_table(file)

    def _load_trials(self, table: pa.Table) -> None:
        for row in trial_rows(table):
            self.trials[row.trial_id] = row

    def _load_history(self, table: pa.Table) -> None:
        for rec in table.to_pylist():
            tid, ep = rec.pop("trial_id"), int(rec.pop("epoch"))
            self.history.setdefault(tid, {})[ep] = {"epoch": ep, **{k: v for k, v in rec.items() if v is not None}}

    def upsert_trial(self, row: TrialRow) -> None:
        self.trials[row.trial_id] = row
        self._dirty.add(row.trial_id)

    def upsert_history(self, trial_id: str, records: Iterable[dict[str, float]]) -> None:
        per_epoch = self.history.setdefault(trial_id, {})
        for rec in records:
            per_epoch[int(rec["epoch"])] = dict(rec)
        self._dirty.add(trial_id)

    def set_neurons(self, trial_id: str, table: pa.Table) -> None:
        self.neurons[trial_id] = table.drop_columns([c for c in ("trial_id",) if c in table.column_names])
        self._dirty.add(trial_id)

    def drop(self, trial_ids: Iterable[str]) -> None:
        for tid in trial_ids:
            self.trials.pop(tid, None)
            self.history.pop(tid, None)
            self.neurons.pop(tid, None)
            self._dirty.discard(tid)
            for table in ("trials", "history", "neurons"):
                remove(self._part(table, tid), within=self.storage)

    def write(self) -> None:
        """The changed trials' part files (the cost of one trial, whatever the study's size)."""
        for tid in sorted(self._dirty):
            if tid in self.trials:
                self._write_part("trials", tid, trials_table([self.trials[tid]]))
            if tid in self.history:
                self._write_part("history", tid, history_table({tid: self.history[tid]}))
            if tid in self.neurons:
                self._write_part("neurons", tid, self.neurons[tid])
        self._dirty.clear()

    def _write_part(self, table: str, trial_id: str, data: pa.Table) -> None:
        write_table(data, self._part(table, trial_id), within=self.storage)

    def compact(self) -> str:
        """The three whole tables from memory (each atomically), their digest
        (pipeline.record.digest), then the parts removed; returns the digest's text."""
        drop_digest(self.storage)  # cut short from here on: no digest rather than a stale one
        write_table(trials_table(self.trials.values()), self.storage / TRIALS, self.storage)
        write_table(history_table(self.history), self.storage / HISTORY, self.storage)
        if self.neurons:
            parts = []
            for tid in sorted(self.neurons):
                t = self.neurons[tid]
                parts.append(t.add_column(0, "trial_id", pa.array([tid] * t.num_rows, pa.string())))
            table = pa.concat_tables(parts, promote_options="permissive")
            write_table(table, self.storage / NEURONS, self.storage)
        else:
            remove(self.storage / NEURONS, within=self.storage)
        self._dirty.clear()
        digest = write_digest(self.storage, [TRIALS, HISTORY, NEURONS])
        shutil.rmtree(self.storage / PARTS, ignore_errors=True)  # removes a link, never follows one
        return digest


def read_trials(storage: str | Path) -> list[TrialRow] | None:
    """The compacted trials.parquet of a study folder (None if there is none); the per-trial
    parts of a study not yet compacted are not read (`StudyTables` reads both)."""
    path = Path(storage) / TRIALS
    if not path.is_file():
        return None
    with _readable(path):
        # ParquetFile: read_table goes through pyarrow.dataset, whose import takes pandas (~1 s)
        return trial_rows(pq.ParquetFile(path).read())


# What to do about a damaged table (pipeline.record.digest.DamagedFile's message ends with it).
REBUILD = (
    "`--mlflow` reads the study from MLflow; to rebuild the tables, move it aside and run "
    "`syncstudy launch SPEC --resume` (docs/reliability.md)"
)


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """A table that pyarrow cannot read, or whose columns are not the ones written, → one
    line naming it (DamagedFile), not pyarrow's or a KeyError's traceback."""
    try:
        yield
    except DamagedFile:
        raise
    except (pa.ArrowException, OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        text = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise DamagedFile(
            f"{path} is not a table the driver wrote ({exc.__class__.__name__}: {text}); {REBUILD}"
        ) from None


def has_parts(storage: str | Path) -> bool:
    """Whether the folder holds per-trial files not yet compacted into the tables (the study
    is running, or its driver died before its end)."""
    return any((Path(storage) / PARTS).glob("*/*.parquet"))


def trial_rows(table: pa.Table) -> list[TrialRow]:
    """The rows of a trials table (its columns as `trials_table` writes them)."""
    # Times as integer ms (the columns' unit, the same 64 bits viewed as integers): pyarrow
    # turns a zoned timestamp into a datetime through pandas (its import alone ~1 s), and a
    # cast loads pyarrow.compute (~0.3 s); seconds are what TrialRow holds.
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type):
            column = table.column(i)
            if f.type.unit != "ms":  # not as trials_table writes it
                column = column.cast(pa.timestamp("ms", f.type.tz))
            ints = pa.chunked_array([c.view(pa.int64()) for c in column.chunks], pa.int64())
            table = table.set_column(i, f.name, ints)
    return [_row_from_record(rec) for rec in table.to_pylist()]


def _row_from_record(rec: dict[str, Any]) -> TrialRow:
    def seconds(ms: int | None) -> float | None:
        return ms / 1000 if ms is not None else None

    params = {k[len(PARAM_PREFIX):]: v for k, v in rec.items() if k.startswith(PARAM_PREFIX)}
    metrics = {
        k[len(METRIC_PREFIX):]: v for k, v in rec.items() if k.startswith(METRIC_PREFIX) and v is not None
    }
    return TrialRow(
        trial_id=rec["trial_id"],
        status=rec["status"],
        params=params,
        metrics=metrics,
        error=rec.get("error"),
        mlflow_run_id=rec.get("mlflow_run_id"),
        mlflow_start_time=seconds(rec.get("mlflow_start_time")),
        checkpoint=rec.get("checkpoint"),
        node_id=rec.get("node_id"),
        start_time=seconds(rec.get("start_time")),
        end_time=seconds(rec.get("end_time")),
        **{k: rec.get(k) for k in PROVENANCE},  # absent from tables written before them: None
    )
