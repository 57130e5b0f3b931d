"""Whose folder an MLflow experiment keeps its artifacts in, checked before a study records
into it: a study must not write its trials' files into another study's folder.

An MLflow experiment has one artifact location, fixed when it is made, and every run's
artifacts go under it, whatever the run's study asked for. A study's own store makes its
experiment with `<storage>/mlartifacts`. So study B launched with `tracking.experiment` set to
study A's, into A's store (a shared sqlite URI, a database, a server), would write B's
models, pictures and files into A's folder. A first launch is therefore refused, in one line
naming the experiment and the folder, unless the experiment keeps its artifacts where the
study's target says:

- a target with an artifact location (every store without a server, and `tracking.
  artifact_location`): the experiment's is the same place;
- a server's default (an `http(s)` URI, no `tracking.artifact_location`): the experiment's is
  not a study folder's (a local folder named `mlartifacts`).

A comparison's arm × repeat studies (pipeline.spec.arms) all name the comparison's
`mlartifacts` and share its experiment, as designed. A study of the same name from another
folder is left to `Tracker.parent_run`, whose refusal names that folder and its instance.
`launch --resume` is not checked: the study goes on recording where it recorded.
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.record import store_read
from pipeline.record.tracking import TAG_STUDY, Tracker, TrackingTarget, _run_filter
from pipeline.redact import redact
from pipeline.spec.types import StudySpec
from syncmodel.errors import SyncStudyError

ARTIFACTS_DIR = "mlartifacts"  # a study folder's (or a comparison's) artifact folder


class ExperimentTaken(SyncStudyError):
    """The experiment keeps its artifacts in another study's folder."""


@dataclass(frozen=True)
class Recorded:
    """What the store holds of the experiment: its artifact location, the study that made it
    (its tag `syncstudy.study`), and whether a parent run of this study's name is in it."""

    location: str | None
    creator: str | None
    same_name: bool


def preflight(spec: StudySpec, target: TrackingTarget) -> None:
    """Before Ray starts, at a first launch: the store as it is now (sqlite read directly, in
    milliseconds; another store through MLflow's client, which `check_target` imported)."""
    _refuse(spec, target, read_recorded(target, spec.name))


def check(tracker: Tracker, spec: StudySpec) -> None:
    """In the driver's set-up, before the parent run: the experiment now exists (made by this
    study, or by another launch that raced it), so this holds whoever made it."""
    exp = tracker.client.get_experiment(tracker.experiment_id)
    runs = tracker.client.search_runs(
        [exp.experiment_id], filter_string=_run_filter(spec.name, "study"), max_results=1
    )
    _refuse(
        spec, tracker.target, Recorded(exp.artifact_location, exp.tags.get(TAG_STUDY), bool(runs))
    )


def refusal(spec: StudySpec, target: TrackingTarget, recorded: Recorded | None) -> str | None:
    """The one-line refusal, or None when the study may record into the experiment."""
    if recorded is None or recorded.same_name:
        return None
    wanted = target.artifact_location
    if wanted is None:
        held = _local_path(recorded.location)
        if held is None or held.name != ARTIFACTS_DIR:
            return None
    elif same_place(recorded.location, wanted):
        return None
    named = spec.tracking.experiment is not None
    what = (
        f"tracking.experiment {target.experiment!r}"
        if named
        else f"experiment {target.experiment!r} (the study's name)"
    )
    by = f" (made by study {recorded.creator!r})" if recorded.creator else ""
    fix = (
        "give this study its own experiment (another tracking.experiment) or its own tracking store"
        if named else "give this study another name (launch --name NEW) or its own experiment (tracking.experiment)"
    )  # fmt: skip
    return (
        f"{what} in {redact(target.uri)}{by} keeps its artifacts in {_shown(recorded.location)}, "
        f"and an experiment has one artifact location: study {spec.name!r} would write its trials' "
        f"files there, not in {_shown(wanted) if wanted else 'the server default'}; {fix}"
    )


def same_place(a: str | None, b: str | None) -> bool:
    """Whether two artifact locations name one place: local ones (a path or a `file:` URI) as
    absolute paths, others as text without a trailing slash."""
    if a is None or b is None:
        return a is b
    pa, pb = _local_path(a), _local_path(b)
    if pa is not None or pb is not None:
        return pa == pb
    return a.rstrip("/") == b.rstrip("/")


def _refuse(spec: StudySpec, target: TrackingTarget, recorded: Recorded | None) -> None:
    message = refusal(spec, target, recorded)
    if message is not None:
        raise ExperimentTaken(message)


def read_recorded(target: TrackingTarget, study: str) -> Recorded | None:
    """The experiment as the store holds it now; None when there is none (a new store or
    experiment: this study makes it), or it is deleted (the Tracker refuses that, naming how
    to restore it)."""
    exp = store_read.experiment(target)
    if exp is None or exp.deleted:
        return None
    same = bool(store_read.parent_runs(target, exp.experiment_id, study))
    return Recorded(exp.artifact_location, exp.tags.get(TAG_STUDY), same)


def _local_path(location: str | None) -> Path | None:
    """The folder of a local artifact location (a path, or a `file:` URI), absolute; None for
    a URI of another scheme."""
    if not location:
        return None
    parts = urllib.parse.urlsplit(location)
    if parts.scheme.lower() == "file":
        return Path(urllib.request.url2pathname(parts.path)).resolve()
    if parts.scheme and len(parts.scheme) > 1:  # (a one-letter scheme is a Windows drive)
        return None
    return Path(location).expanduser().resolve()


def _shown(location: str | None) -> str:
    path = _local_path(location)
    return str(path) if path is not None else str(location)
