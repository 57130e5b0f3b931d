"""Arguments and helpers shared by the commands that read a launched study: from the study
folder's tables when it holds the finished study (pipeline.record.finished), else from MLflow."""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.paths import SPEC_FILE, storage_of, target_of
from pipeline.record.finished import finished_trials
from pipeline.record.tracking import (
    Tracker,
    TrackingTarget,
    TrialRecord,
    check_target,
    own_store,
    relocate_store,
    resolve_target,
    sqlite_path,
)
from pipeline.spec import Param, load_spec
from pipeline.spec.sections import NAME_RE
from syncmodel.errors import SyncStudyError


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", nargs="?", help="the study's spec YAML")
    parser.add_argument("--study", metavar="NAME", help="a study launched from this folder (runs/NAME)")
    parser.add_argument("--smoke", action="store_true", help="the spec's smoke form")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (overrides the spec)")


def add_source_argument(parser: argparse.ArgumentParser) -> None:
    """`--mlflow`, for the commands that read the trials (`trials_from_args`)."""
    parser.add_argument(
        "--mlflow", action="store_true",
        help="ask the tracking store even when the study folder's tables hold the finished study",
    )  # fmt: skip


def open_from_args(args: argparse.Namespace) -> tuple[StudyRef, Tracker]:
    ref = locate_study(args.spec, args.study, args.tracking_uri, smoke=getattr(args, "smoke", False))
    return ref, open_study(ref)


def trials_from_args(args: argparse.Namespace) -> tuple[StudyRef, list[TrialRecord], Tracker | None]:
    """The study and its trials as MLflow lists them (`Tracker.trials()`), with the tracker
    (None when they were read from the study folder's tables).

    The tables answer when the study folder is here (its study.yaml, which names the
    objectives and the search), no tracking URI was given and `--mlflow` was not, and they
    hold the finished study (`finished_trials`); otherwise MLflow does."""
    ref = locate_study(args.spec, args.study, args.tracking_uri, smoke=getattr(args, "smoke", False))
    if not args.mlflow and not args.tracking_uri and ref.objectives is not None and ref.search is not None:
        records = finished_trials(ref.storage, [m for m, _ in ref.objectives], ref.search)
        if records is not None:
            return ref, records, None
    tracker = open_study(ref)
    return ref, tracker.trials(), tracker


def clean(v: Any) -> Any:
    """JSON-safe: non-finite floats → null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)


def fmt(v: Any) -> str:
    if isinstance(v, str):  # MLflow params are text: show numbers as numbers
        try:
            v = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def table(rows: list[list[Any]]) -> str:
    widths = [max(len(fmt(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(fmt(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


@dataclass
class StudyRef:
    """Where a launched study's records are: for `runs`, `pareto`, `export`, `dashboard`."""

    name: str
    target: TrackingTarget
    storage: Path
    objectives: list[tuple[str, str]] | None = None  # (metric, mode); None → ask MLflow
    searched: list[str] | None = None
    search: dict[str, Param] | None = None  # the spec's search block (None: no spec here)
    launched_in: Path | None = None  # the folder the study was launched in (its study.yaml says)
    unrelocated: str | None = None  # why a moved folder's store still names the old one (`relocate`)


def locate_study(
    spec_path: str | None, study: str | None, tracking_uri: str | None = None, smoke: bool = False
) -> StudyRef:
    """A study from its spec file, or from `--study NAME`: ./runs/NAME (whose resolved spec
    names the tracking store), or the experiment NAME in `--tracking-uri`."""
    launched_in: Path | None = None
    if spec_path:
        spec = load_spec(spec_path, smoke=smoke, overrides={"tracking.uri": tracking_uri}, writable=False)
    elif study:
        if not NAME_RE.match(study):
            # a study name is a folder name under runs/: nothing that climbs out of it
            raise SyncStudyError(f"--study {study!r}: not a study name (a-z 0-9 _ -, first a letter or digit)")
        saved = Path("runs") / study / SPEC_FILE
        if saved.is_file():
            spec = load_spec(saved, overrides={"tracking.uri": tracking_uri}, writable=False)
            launched_in = storage_of(spec)
            spec = _where_it_is(spec, saved, tracking_uri)
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
    ref = StudyRef(
        spec.name, target_of(spec, storage), storage,
        [(o.metric, o.mode) for o in spec.objectives], list(spec.searched()), dict(spec.search),
        launched_in or storage,
    )  # fmt: skip
    if ref.launched_in != storage:
        ref.unrelocated = relocate(ref)
    return ref


def relocate(ref: StudyRef) -> str | None:
    """A moved or copied study folder's own MLflow store made to name the folder it is in now
    (`relocate_store`), under the folder's lock, so that its runs, logged models, dashboard
    and registrations use this folder's files, not the original's (which may be gone). Once
    done it is a no-op (one query). Returns why it could not be done (a driver holds the
    folder, the folder is read-only), after one warning line: the store is then read through
    `Tracker.moved_artifacts`, and `export --register` is refused."""
    from pipeline.lock import StudyLocked, hold_quietly

    if own_store(ref.target, ref.storage) is None:
        return None  # a server or a database elsewhere does not move with the folder
    try:
        with hold_quietly(ref.storage):
            done = relocate_store(ref.target, ref.storage)
    except (StudyLocked, sqlite3.Error, OSError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"warning: the MLflow store in {ref.storage} was not relocated to it ({why})", file=sys.stderr)
        return why
    if done is not None:
        print(
            f"relocated study {ref.name!r}'s MLflow store to this folder: {done.rows} artifact "
            f"locations and paths now name {done.new}", file=sys.stderr,
        )  # fmt: skip
    return None


def _where_it_is(spec: Any, saved: Path, tracking_uri: str | None) -> Any:
    """A study folder that was moved or copied reads its own files: `study.yaml` names the
    folder it was launched in (absolute), so when that is not the folder it sits in, the
    storage and a tracking store inside it (the default sqlite) are taken from where it is,
    with a warning; a store outside the folder (a server, another database) is kept."""
    folder = saved.parent.resolve()
    recorded = storage_of(spec)
    if recorded == folder:
        return spec
    overrides: dict[str, Any] = {"storage": str(folder), "tracking.uri": tracking_uri}
    uri = spec.tracking.uri
    if tracking_uri is None and uri and uri.startswith("sqlite:") and sqlite_path(uri).parent == recorded:
        overrides["tracking.uri"] = f"sqlite:///{folder / sqlite_path(uri).name}"
    print(
        f"warning: {saved} was written for the study folder {recorded}; reading the study "
        f"from where it is now, {folder}", file=sys.stderr,
    )  # fmt: skip
    return load_spec(saved, overrides=overrides, writable=False)


def open_study(ref: StudyRef) -> Tracker:
    """A tracker on the study's store, after a quick check; fills objectives from MLflow."""
    check_target(ref.target)
    if ref.target.uri.startswith("sqlite:"):
        db = sqlite_path(ref.target.uri)
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


def typed_param(value: Any, param: Param | None = None) -> Any:
    """A param as MLflow holds it (text: `param_str`) back as a value of its type: by the
    spec's `param` when given (int, float, one of the choices, the fixed value), else read as
    JSON, with Python's True/False as booleans, and left as text when it is neither."""
    if not isinstance(value, str):
        return value
    if param is not None:
        from pipeline.record.tracking import param_str

        try:
            if param.kind == "int":
                return int(value)
            if param.kind == "float":
                return float(value)
        except ValueError:
            return value
        for candidate in (*(param.choices or ()), param.value):
            if param_str(candidate) == value:
                return candidate
    if value in ("True", "False"):
        return value == "True"
    try:
        return json.loads(value)
    except ValueError:
        return value
