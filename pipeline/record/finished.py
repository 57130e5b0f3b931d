"""A finished study's trials read from its own Parquet tables, as its MLflow child runs show
them: what `runs`, `pareto` and `export` answer from when the study folder is at hand, without
MLflow's import (seconds) or a query to its store.

The recorder writes each trial's row and its run from the same values (pipeline.record.recorder),
so the run is rebuilt here by the same rules: params as `param_str` writes them plus the
`log10_` ones, final metrics under their MLflow names and back (`mlflow_metrics`,
`final_metrics`), runs in MLflow's order (start time, then run id). Tables that may not hold
what MLflow holds give None, and the caller asks MLflow (see `finished_trials`).

`export`, which ships the trial the tables pick, also holds their digest against its copy in
the tracking store (`check_parent_digest`): a sqlite store is read directly (milliseconds),
another store through MLflow's client (its import: seconds).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from pipeline.lock import LOCK_FILE, held, last_holder
from pipeline.record import provenance, store_read
from pipeline.record.digest import DIGEST_FILE, TAG_DIGEST, DamagedFile, check
from pipeline.record.identity import read_instance
from pipeline.record.tables import REBUILD, TRIALS, TrialRow, has_parts, read_trials
from pipeline.record.tracking import (
    EPOCH_PREFIX,
    FINISHED,
    TAG_INSTANCE,
    TERMINAL,
    TrackingError,
    TrackingTarget,
    TrialRecord,
    check_target,
    final_metrics,
    log10_params,
    param_str,
)
from pipeline.redact import redact
from pipeline.spec.metrics import FINAL_FROM_LAST_EPOCH, mlflow_metrics, split_bookkeeping

# MLflow's SQL stores keep +-inf as the largest finite double (SQL has no infinity), and give
# that back; NaN is kept.
_SQL_INF = sys.float_info.max


def finished_trials(
    storage: Path, objectives: list[str], search: dict[str, Any]
) -> list[TrialRecord] | None:
    """The study's trials, oldest run first, as `Tracker.trials()` lists them; None when the
    folder's tables may hold less than MLflow: no trials.parquet, per-trial parts not yet
    compacted (the study runs, or its driver died), a live driver holding the folder or one
    started after the tables were written (it may have died before its first trial ended), a
    row whose end is not in its run (the store was down when the trial ended: no run start
    time, perhaps no run id; also tables written before the start time was kept). `objectives`: metric names; `search`: name → `Param`."""
    if held(storage) or has_parts(storage):
        return None
    # the table as the driver wrote it (pipeline.record.digest): an edited value or a deleted
    # row is refused in one line; with no digest to check against, MLflow answers
    if (storage / TRIALS).is_file() and not check(storage, TRIALS, REBUILD):
        return None
    rows = read_trials(storage)
    if rows is None or _driver_since(storage):
        return None
    if any(
        not r.mlflow_run_id or r.mlflow_start_time is None or r.status not in TERMINAL for r in rows
    ):
        return None
    rows.sort(key=lambda r: (round(r.mlflow_start_time * 1000), r.mlflow_run_id))
    return [as_run(r, objectives, search) for r in rows]


def check_parent_digest(storage: Path, target: TrackingTarget, study: str) -> None:
    """`tables.sha256` of a finished study against its copy on the study's MLflow parent run
    (tag `syncstudy.tables_sha256`, set with the file at the study's end), for `export` from
    the tables. `check` holds a table to its digest; someone who rewrote a table and
    `tables.sha256` together passes it, and this names them (`DamagedFile`: the file, the run,
    the store). Nothing is said when the store cannot be asked (unreachable, no database
    file), holds no parent run of the study, or its run has no tag (a study from before the
    tag, or whose store was down when it ended): the tables' own digest then stands alone.
    The parent run is this folder's instance's (`instance.json`), else the oldest of the name."""
    path = Path(storage) / DIGEST_FILE
    try:
        text = path.read_bytes().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return  # (no digest: the tables were not trusted; a garbled one: `check` named it)
    try:
        if not store_read.is_sqlite(target):
            check_target(target)  # seconds at most: an unreachable server is not waited for
        exp = store_read.experiment(target)
        runs = store_read.parent_runs(target, exp.experiment_id, study) if exp else []
    except TrackingError:
        return
    mine = read_instance(storage)
    run = next((r for r in runs if mine and r.tags.get(TAG_INSTANCE) == mine), runs[0] if runs else None)
    if run is None or TAG_DIGEST not in run.tags or run.tags[TAG_DIGEST] == text:
        return
    raise DamagedFile(
        f"{path} differs from its copy on the study's MLflow parent run (tag {TAG_DIGEST} of run "
        f"{run.run_id} in {redact(target.uri)}): the tables and their digest were rewritten after "
        "the driver wrote them; `--mlflow` reads the study from its runs"
    )


def _driver_since(storage: Path) -> bool:
    """Whether a driver took the folder after trials.parquet was last written (its lock file
    says when: pipeline.lock); unknown (a lock file without a time) counts as yes."""
    if not (storage / LOCK_FILE).exists():
        return False  # no driver ever held it (tables written by hand, or by a tool)
    since = (last_holder(storage) or {}).get("since")
    if not isinstance(since, (int, float)):
        return True
    return since > (storage / TRIALS).stat().st_mtime


def as_run(row: TrialRow, objectives: list[str], search: dict[str, Any]) -> TrialRecord:
    """A trial's row as its MLflow run shows it (`Tracker.trials()`): params as text with the
    `log10_` ones after them, final metrics as MLflow gives them back (`final_metrics` of what
    the recorder logged; the ones left out of MLflow read from the last epoch, which the row's
    final values are); of its tags only the provenance ones."""
    params = {k: param_str(v) for k, v in row.params.items()}
    params.update({k: param_str(v) for k, v in log10_params(search, row.params).items()})
    logged = mlflow_metrics(row.metrics, row.params, objectives, final=row.status in FINISHED)
    logged, bookkeeping, _ = split_bookkeeping(logged)  # params in MLflow (Tracker.finish_trial)
    params.update(bookkeeping)
    logged.update({EPOCH_PREFIX + k: row.metrics[k] for k in FINAL_FROM_LAST_EPOCH if k in row.metrics})
    metrics = {k: _as_stored(v) for k, v in final_metrics(logged).items()}
    return TrialRecord(
        trial_id=row.trial_id,
        run_id=str(row.mlflow_run_id),
        status=row.status,
        params=params,
        metrics=metrics,
        tags=provenance.tags(vars(row)),  # the run's syncstudy.<provenance> tags (runs, pareto mark commits)
        start_time=round(row.mlflow_start_time * 1000) if row.mlflow_start_time is not None else None,
        checkpoint=row.checkpoint,
    )


def _as_stored(v: float) -> float:
    v = float(v)
    return math.copysign(_SQL_INF, v) if math.isinf(v) else v
