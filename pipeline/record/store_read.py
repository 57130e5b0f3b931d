"""What the checks read of a study's tracking store: its experiment (artifact location, tags)
and a study's parent runs. Used before a launch (pipeline.record.experiment_owner) and by
`export` (pipeline.record.finished).

A sqlite store is read directly, read-only, in milliseconds (MLflow's import takes seconds),
its schema by table and column name as `tracking.relocate_store` writes it; a file that is
not a readable store gives nothing. Any other store is asked through MLflow's client with
`check_target`'s quick policy: an error is one `TrackingError` line.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.record.tracking import (
    CHECK_TIMEOUT_S,
    TAG_ROLE,
    TAG_STUDY,
    TrackingTarget,
    _client,
    _quick_http,
    _run_filter,
    _with_deadline,
    sqlite_path,
)


@dataclass(frozen=True)
class Experiment:
    experiment_id: str
    artifact_location: str | None
    deleted: bool
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParentRun:
    """A study's parent run (tags `syncstudy.study` = the name, `syncstudy.role` = study)."""

    run_id: str
    start_time: int  # ms since the epoch
    tags: dict[str, str] = field(default_factory=dict)


def is_sqlite(target: TrackingTarget) -> bool:
    return urllib.parse.urlsplit(target.uri).scheme.lower() == "sqlite"


def experiment(target: TrackingTarget) -> Experiment | None:
    """The target's experiment (an active one before a deleted one), or None when the store
    has none of that name (or, sqlite, is no store yet)."""
    if is_sqlite(target):
        return _experiment_sqlite(target.uri, target.experiment)
    return _experiment_client(target.uri, target.experiment)


def parent_runs(target: TrackingTarget, experiment_id: str, study: str) -> list[ParentRun]:
    """The (not deleted) parent runs of `study` in the experiment, oldest first, as `Tracker`
    finds them (`_run_filter(study, "study")`), with their tags."""
    if is_sqlite(target):
        return _parent_runs_sqlite(target.uri, experiment_id, study)
    return _parent_runs_client(target.uri, experiment_id, study)


@contextlib.contextmanager
def _read_only(uri: str) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to the sqlite store of `uri`; None when it is not a regular file
    (missing; a FIFO, which an open would block on; a folder). Nothing is created or written."""
    path = sqlite_path(uri)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise OSError("not a regular file")
        con = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True, timeout=5)
    except (OSError, sqlite3.Error):
        yield None
        return
    try:
        yield con
    finally:
        con.close()


def _experiment_sqlite(uri: str, name: str) -> Experiment | None:
    with _read_only(uri) as con:
        if con is None:
            return None
        try:
            rows = con.execute(
                "SELECT experiment_id, artifact_location, lifecycle_stage FROM experiments "
                "WHERE name = ? ORDER BY lifecycle_stage = 'deleted'",
                (name,),
            ).fetchall()
            if not rows:
                return None
            exp_id, location, stage = rows[0]
            tags = dict(
                con.execute(
                    "SELECT key, value FROM experiment_tags WHERE experiment_id = ?", (exp_id,)
                )
            )
        except sqlite3.Error:  # no MLflow schema (an empty file), or another one
            return None
    return Experiment(str(exp_id), location, stage == "deleted", tags)


def _parent_runs_sqlite(uri: str, experiment_id: str, study: str) -> list[ParentRun]:
    with _read_only(uri) as con:
        if con is None:
            return []
        try:
            rows = con.execute(
                "SELECT r.run_uuid, r.start_time FROM runs r "
                "JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = ? AND s.value = ? "
                "JOIN tags o ON o.run_uuid = r.run_uuid AND o.key = ? AND o.value = 'study' "
                "WHERE r.experiment_id = ? AND r.lifecycle_stage = 'active' "
                "ORDER BY r.start_time, r.run_uuid",
                (TAG_STUDY, study, TAG_ROLE, experiment_id),
            ).fetchall()
            return [
                ParentRun(
                    run_id,
                    int(start or 0),
                    dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))),
                )
                for run_id, start in rows
            ]
        except sqlite3.Error:
            return []


def _ask(uri: str, question: Any) -> Any:
    with _quick_http():
        return _with_deadline(lambda: question(_client(uri)), uri, CHECK_TIMEOUT_S)


def _experiment_client(uri: str, name: str) -> Experiment | None:
    def question(client: Any) -> Experiment | None:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return None
        return Experiment(
            exp.experiment_id,
            exp.artifact_location,
            exp.lifecycle_stage == "deleted",
            dict(exp.tags),
        )

    return _ask(uri, question)


def _parent_runs_client(uri: str, experiment_id: str, study: str) -> list[ParentRun]:
    def question(client: Any) -> list[ParentRun]:
        runs = client.search_runs(
            [experiment_id], filter_string=_run_filter(study, "study"), max_results=100
        )
        found = [ParentRun(r.info.run_id, r.info.start_time, dict(r.data.tags)) for r in runs]
        return sorted(found, key=lambda r: (r.start_time, r.run_id))

    return _ask(uri, question)
