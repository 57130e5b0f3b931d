"""MLflow for studies: one parent run per study, one child run per trial, and the queries that
`runs`, `pareto` and `export` answer from. The one module that calls MLflow.

Exactly-once: a run is found by its tags (study, role, trial id) before one is created; epoch
metrics carry a `syncstudy.last_epoch` tag in the same `log_batch`, and epochs at or below it
are never logged again; a trial's final metrics go in one `log_batch` with its terminal status
tag, and a run that has that tag is never written again. So a resumed study can replay any
trial's results and MLflow still holds each value once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.env_refs import expand
from pipeline.redact import HTTP_CREDENTIALS, redact, userinfo
from pipeline.trial_files import TrialFiles
from syncmodel.errors import SyncStudyError
from syncmodel.files import can_create_in

TAG_STUDY = "syncstudy.study"
TAG_ROLE = "syncstudy.role"  # "study" (the parent) | "trial"
TAG_TRIAL = "syncstudy.trial_id"
TAG_STATUS = "syncstudy.status"  # running | ok | diverged | stopped | error | oom
TAG_LAST_EPOCH = "syncstudy.last_epoch"
TAG_ERROR = "syncstudy.error"
TAG_NODE = "syncstudy.node_id"
TAG_CHECKPOINT = "syncstudy.checkpoint"
TAG_OBJECTIVES = "syncstudy.objectives"  # parent: JSON [{"metric", "mode"}]
TAG_SEARCH = "syncstudy.search"  # parent: JSON list of searched param names
TAG_PARENT = "mlflow.parentRunId"
TAG_PARETO = "syncstudy.pareto"  # trial: "true" when on the study's Pareto front (set at its end)
TAG_NOTE = "mlflow.note.content"  # MLflow's description of a run or an experiment
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3 UI: custom_model_development → runs
# The study instance (pipeline.record.identity) of a parent or trial run, and the study folder
# of the parent: lookup and clean-up act within one instance.
TAG_INSTANCE = "syncstudy.instance"
TAG_STORAGE = "syncstudy.storage"
EPOCH_PREFIX = "epoch/"  # per-epoch metrics: epoch/<name> at step=epoch; finals are bare names

# The TrainConfig fields that decide which data a trial trains on (its MLflow dataset input).
DATA_FIELDS = ("dataset", "data_root", "n_train", "image_size", "val_fraction", "seed")

MAX_IMAGES = 8  # pictures per trial also logged as MLflow images (Tracker.log_images)

TERMINAL = ("ok", "diverged", "stopped", "error", "oom")
# A trial with one of these handed in its final result (test metrics, evaluation); the others
# (stopped by the scheduler or itself, failed) only their last epoch's values.
FINISHED = ("ok", "diverged")
_MLFLOW_STATUS = {"ok": "FINISHED", "stopped": "KILLED"}  # the rest: FAILED
_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
CHECK_TIMEOUT_S = 8.0

# MLflow's HTTP client retries a request 7 times with exponential back-off by default: a
# server that went away mid-study held the driver for 4 minutes per trial event (measured:
# 12 minutes for one trial). syncstudy re-records what was missed itself (after `fit`, and on
# `--resume`), so a request gets a short policy (user settings win), and after a failure the
# store counts as down: calls fail at once until a probe OUTAGE_PROBE_S later answers.
HTTP_POLICY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
OUTAGE_PROBE_S = 10.0
_OUTAGE_SIGNS = (
    "Max retries exceeded", "Connection refused", "Failed to establish", "timed out",
    "Connection reset", "Connection aborted", "RemoteDisconnected", "could not connect",
    "Name or service not known", "too many 5", "Bad Gateway", "Service Unavailable",
    "Gateway Timeout", "unable to open database",
)  # fmt: skip


class StudyConflict(SyncStudyError):
    """Another study instance of the same name already records into the tracking store."""


class TrackingError(SyncStudyError):
    """The tracking store cannot be used; the message names the URI (its password redacted:
    a `${VAR}` in the spec was expanded from the environment and must not reach a log)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


@dataclass(frozen=True)
class TrackingTarget:
    # As the spec wrote it: a `${VAR}` stays unexpanded here (this travels in Tune's pickles
    # and into messages); `_client` and the health probes expand it when they connect.
    uri: str
    experiment: str
    artifact_location: str | None = None  # None → the server's default (proxied artifacts)


@dataclass
class TrialRecord:
    """A trial's child run as MLflow holds it."""

    trial_id: str
    run_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]  # final metrics, bare names (`final_metrics`); epoch/* left out
    tags: dict[str, str] = field(repr=False, default_factory=dict)
    start_time: int | None = None  # ms since the epoch
    end_time: int | None = None
    artifact_uri: str | None = None
    checkpoint: str | None = None  # the trial's last checkpoint folder (Tune storage), as recorded


def param_str(value: Any) -> str:
    """How a config value is written as an MLflow param (and compared with trials.parquet)."""
    if isinstance(value, (list, tuple, dict)) or value is None:
        return json.dumps(value)
    return str(value)


def log10_params(search: dict[str, Any], config: dict[str, Any]) -> dict[str, float]:
    """`log10_<name>` of each param of `search` (name → `Param`) searched on a log scale, from
    the trial's `config`: logged beside the params, as MLflow's plots (parallel coordinates,
    scatter) have linear axes only."""
    out = {}
    for name, param in search.items():
        value = config.get(name)
        if param.log and _is_number(value) and value > 0:
            out[f"log10_{name}"] = round(math.log10(value), 6)
    return out


def default_uri(storage: Path) -> str:
    return f"sqlite:///{Path(storage).resolve() / 'mlflow.db'}"


def resolve_target(
    uri: str | None, experiment: str, storage: Path, artifact_location: str | None = None
) -> TrackingTarget:
    """The tracking URI to use: given, or sqlite in the study's folder; sqlite made absolute.

    Artifacts of a store without a server go to `<storage>/mlartifacts` unless the spec names
    another place: MLflow's own default for a database store is `./mlruns` of whatever folder
    the driver runs in. A server keeps them where it is told (proxied artifacts).
    """
    storage = Path(storage).resolve()
    uri = uri or default_uri(storage)
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("http", "https") and userinfo(uri):
        # Refused before anything is sent: urllib takes TOKEN@host for a host name to resolve.
        raise TrackingError(f"tracking URI {uri}: holds a user name or token before '@'; {HTTP_CREDENTIALS}")
    if scheme == "sqlite":
        # a sqlite path is no secret: expanded now; its ?query is dropped (sqlite_path)
        uri = f"sqlite:///{sqlite_path(expand(uri))}"
    if artifact_location is None and not is_remote(uri) and scheme != "databricks":
        artifact_location = (storage / "mlartifacts").as_uri()
    return TrackingTarget(uri, experiment, artifact_location)


def sqlite_path(uri: str) -> Path:
    # SQLAlchemy's form: sqlite:///relative/path or sqlite:////absolute/path. A ?query is not
    # part of the file's name (`tok.db?token=…` would put a credential in a directory
    # listing); the spec drops one with a warning (pipeline.spec.sections), this holds for any URI.
    head, sep, raw = uri.partition(":///")
    if not sep:
        raise TrackingError(f"tracking URI {uri!r}: expected sqlite:///PATH")
    return Path(raw.partition("?")[0]).expanduser().resolve()  # relative → against the current folder


@contextlib.contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow's HTTP client retries for minutes by default; a check must answer in seconds."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(CHECK_TIMEOUT_S / 2))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_target(target: TrackingTarget, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Fail fast (seconds, before Ray starts) when the tracking store cannot be used."""
    uri = target.uri
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(expand(health), timeout=timeout / 2) as resp:
                if resp.status != 200:
                    raise TrackingError(f"tracking URI {uri}: {health} answered HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            raise TrackingError(f"tracking URI {uri}: {health} answered HTTP {exc.code} (is it an MLflow server?)") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"tracking URI {uri} is unreachable ({reason})") from None
        import mlflow  # noqa: F401 - its import (seconds on a loaded machine) is not the server's time

        with _quick_http():
            _with_deadline(lambda: _client(uri).search_experiments(max_results=1), uri, timeout)
    elif scheme == "sqlite":
        path = sqlite_path(uri)
        if path.is_dir():
            raise TrackingError(f"tracking URI {uri}: {path} is a folder, not a database file")
        parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        if parent is None or not parent.is_dir() or not can_create_in(parent):
            raise TrackingError(f"tracking URI {uri}: cannot create {path} (folder missing or not writable)")
        if path.exists():
            with open(path, "rb") as fh:
                if fh.read(16) != b"SQLite format 3\x00":
                    raise TrackingError(f"tracking URI {uri}: {path} is not an SQLite database")
    elif scheme in _DB_SCHEMES:
        import mlflow  # noqa: F401 - as above

        _with_deadline(lambda: _client(uri).search_experiments(max_results=1), uri, timeout)
    elif scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow 3 needs a database or a server; use "
            "sqlite:////ABSOLUTE/PATH/mlflow.db or http://HOST:PORT"
        )
    else:
        raise TrackingError(
            f"tracking URI {uri!r}: unsupported scheme {scheme!r} (use http(s)://, sqlite:///, postgresql://)"
        )


def _with_deadline(fn: Any, uri: str, timeout: float) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported below
            box["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise TrackingError(f"tracking URI {uri} did not answer within {timeout:.0f} s")
    if "error" in box:
        exc = box["error"]
        raise TrackingError(f"tracking URI {uri}: {exc.__class__.__name__}: {str(exc)[:300]}") from None
    return box.get("value")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "syncstudy"


def _sqlite_template() -> Path:
    """An empty sqlite store with MLflow's schema migrated, one per MLflow version.

    MLflow builds a new store by running its whole migration history (seconds on a small
    machine); a new study's store is a copy of this one instead (milliseconds). Uses MLflow's
    own table set-up, which is private API: any failure falls back to MLflow's normal path.
    """
    import mlflow
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    template = _cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"
    if not template.is_file():
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
        engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, template)  # concurrent builders write the same thing
    return template


def prepare_store(uri: str) -> None:
    """Start a new sqlite store as a copy of the migrated template (see `_sqlite_template`)."""
    if urllib.parse.urlsplit(uri).scheme.lower() != "sqlite":
        return
    path = sqlite_path(uri)
    if path.exists():
        return
    try:
        template = _sqlite_template()
    except Exception:  # noqa: BLE001 - MLflow will create the store itself, only slower
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.copyfile(template, tmp)
    try:
        os.link(tmp, path)  # never replaces a store another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


# Where MLflow 3's sqlite store keeps absolute artifact URIs (table, column): a study folder's
# own store names the folder it was written in, so a copy would read (and write) the original's
# files until these are rewritten (`relocate_store`).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)
# syncstudy's run tags that hold a plain path in the study folder (rewritten with the URIs, so
# a copy names no file of the folder it came from).
PATH_TAGS = (TAG_STORAGE, TAG_CHECKPOINT)


@dataclass(frozen=True)
class Relocation:
    """What `relocate_store` rewrote: the study folder the store was written in, the one it
    is in now, and how many values (artifact URIs, path tags) now name the new one."""

    old: Path
    new: Path
    rows: int


def own_store(target: TrackingTarget, storage: Path) -> Path | None:
    """The sqlite file of `target` when it is the study folder's own store (the default: the
    database in `storage`, artifacts in `<storage>/mlartifacts`), the only kind that moves with
    the folder; else None (a server or another database keeps the artifact folder it names,
    which a copy of the study folder did not copy)."""
    storage = Path(storage).resolve()
    if urllib.parse.urlsplit(target.uri).scheme.lower() != "sqlite":
        return None
    db = sqlite_path(target.uri)
    if db.parent != storage or target.artifact_location != (storage / "mlartifacts").as_uri():
        return None
    return db


def _recorded_folder(con: sqlite3.Connection, experiment: str, new: str) -> str | None:
    """The artifact folder URI the experiment recorded when it is another study folder's
    `mlartifacts` (the store was moved or copied with its folder), else None."""
    row = con.execute("SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)).fetchone()
    old = str(row[0]).rstrip("/") if row and row[0] else None
    if old is None or old == new or not old.startswith("file:") or not old.endswith("/mlartifacts"):
        return None  # not moved, or an artifact folder the spec named (not the folder's own)
    return old


def relocate_store(target: TrackingTarget, storage: Path) -> Relocation | None:
    """Point the study folder's own sqlite store (`own_store`) at the folder it is in now: the
    artifact URIs under the folder it was written in (`ARTIFACT_COLUMNS`) and the `PATH_TAGS`
    naming that folder are rewritten, in one transaction; values naming anything else are left
    alone. Returns None when there is nothing to do (not moved, not the folder's own store, no
    database). The caller holds the study folder's lock (pipeline.lock.hold_quietly): no
    driver writes meanwhile. Plain sqlite3 (MLflow's schema, read by name): no MLflow import,
    which the read-only commands do without. A read-only folder raises sqlite3's error."""
    db = own_store(target, storage)
    if db is None or not db.is_file():
        return None
    storage = Path(storage).resolve()
    new = (storage / "mlartifacts").as_uri()
    con = sqlite3.connect(db, timeout=30, isolation_level=None)  # transactions as written below
    try:
        if _recorded_folder(con, target.experiment, new) is None:
            return None  # checked before the write lock: the common case writes nothing
        con.execute("BEGIN IMMEDIATE")
        try:
            old = _recorded_folder(con, target.experiment, new)
            if old is None:  # another command relocated it in between
                con.execute("ROLLBACK")
                return None
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            rows = 0
            for table, column in ARTIFACT_COLUMNS:
                if table in tables:  # an older schema may lack one (logged_models: MLflow 3)
                    rows += _replace_prefix(con, table, column, old, new)
            old_dir = urllib.request.url2pathname(urllib.parse.urlsplit(old).path.rpartition("/")[0])
            marks = ",".join("?" * len(PATH_TAGS))
            rows += _replace_prefix(con, "tags", "value", old_dir, str(storage), f"key IN ({marks})", PATH_TAGS)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return Relocation(Path(old_dir), storage, rows)


def _replace_prefix(
    con: sqlite3.Connection, table: str, column: str, old: str, new: str, where: str = "1", args: tuple[str, ...] = ()
) -> int:
    """`old` → `new` at the start of `column` where the value is `old` or lies under it
    (`old/...`): compared as text, not with LIKE, whose wildcards a folder name may hold."""
    cursor = con.execute(
        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
        f"WHERE ({column} = ? OR substr({column}, 1, ?) = ?) AND {where}",
        (new, len(old) + 1, old, len(old) + 1, old + "/", *args),
    )
    return cursor.rowcount


def _client(uri: str):  # noqa: ANN202 - mlflow.MlflowClient, imported lazily
    from mlflow import MlflowClient

    if is_remote(uri):
        for key, value in HTTP_POLICY.items():
            os.environ.setdefault(key, value)
    live = expand(uri)  # `${VAR}`s from this process's environment, now (pipeline.env_refs)
    return MlflowClient(tracking_uri=live, registry_uri=live)


def is_outage(exc: BaseException) -> bool:
    """Whether an error says the store did not answer (vs. answered with an error)."""
    text = f"{exc.__class__.__name__}: {exc}"
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(s in text for s in _OUTAGE_SIGNS)


class StoreDown(TrackingError):
    """Refused without a request: the store did not answer a moment ago."""


class Outage:
    """Whether one store (a URI) is down, shared by every client of it in this process: once
    a call meets an outage, calls fail at once until OUTAGE_PROBE_S later, when one goes
    through (after a /health probe for a server) and clears the outage or restarts the wait."""

    def __init__(self, uri: str):
        self.uri = uri
        self.down_since: float | None = None  # monotonic
        self.next_try = 0.0
        self.refused = 0  # calls refused while down
        self.windows: list[list[float | None]] = []  # [start, end or None], wall time

    def gate(self) -> None:
        if self.down_since is None:
            return
        now = time.monotonic()
        if now >= self.next_try:
            self.next_try = now + OUTAGE_PROBE_S
            if self._probe():
                return  # let this call through: it decides
        self.refused += 1
        since = time.strftime("%H:%M:%S", time.localtime(self.windows[-1][0]))
        raise StoreDown(f"tracking URI {self.uri} is down (no answer since {since}); not recorded now")

    def _probe(self) -> bool:
        if not is_remote(self.uri):
            return True
        try:
            with urllib.request.urlopen(expand(self.uri.rstrip("/") + "/health"), timeout=2) as resp:
                return resp.status == 200
        except (OSError, ValueError, SyncStudyError):
            return False

    def down(self) -> None:
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.windows.append([time.time(), None])
        self.next_try = time.monotonic() + OUTAGE_PROBE_S

    def up(self) -> None:
        if self.down_since is not None:
            self.down_since = None
            self.windows[-1][1] = time.time()

    def report(self, since: float = 0.0) -> str:
        """'tracking store down 12:01:02-12:03:40, 12:10:00-now (17 calls refused while
        down)' for the windows that ended after `since` (wall time), or ''."""
        shown = [(a, b) for a, b in self.windows if b is None or b >= since]
        if not shown:
            return ""

        def clock(t: float | None) -> str:
            return "now" if t is None else time.strftime("%H:%M:%S", time.localtime(t))

        spans = ", ".join(f"{clock(a)}-{clock(b)}" for a, b in shown)
        return f"tracking store down {spans} ({self.refused} calls refused while down)"


_OUTAGES: dict[str, Outage] = {}


def outage_of(uri: str) -> Outage:
    return _OUTAGES.setdefault(uri, Outage(uri))


class GuardedClient:
    """An MlflowClient whose calls fail at once while its store is down (`Outage`)."""

    def __init__(self, client: Any, uri: str):
        self._client = client
        self.outage = outage_of(uri)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.outage.gate()
            try:
                value = attr(*args, **kwargs)
            except Exception as exc:
                if is_outage(exc):
                    self.outage.down()
                else:
                    self.outage.up()  # an error message is an answer
                raise
            self.outage.up()
            return value

        return call


def _now_ms() -> int:
    return int(time.time() * 1000)


def _chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Tracker:
    """A study's experiment in one tracking store: parent and child runs, logging, queries."""

    def __init__(
        self,
        target: TrackingTarget,
        study: str,
        instance: str | None = None,
        storage: str | None = None,
        adopt: bool = False,
    ):
        if "'" in study or "`" in study:
            raise TrackingError(f"study name {study!r}: quotes are not allowed")
        self.target = target
        self.study = study
        # The study instance's id (None: every run of the name, for the read-only commands),
        # its folder (tagged on the parent, for the message a second instance gets), and
        # whether a parent run without an instance (a study from before ids) may be adopted.
        self.instance = instance
        self.storage = storage
        self.adopt = adopt
        self.reclaimed: str | None = None  # the instance id taken back from the parent run (see parent_run)
        prepare_store(target.uri)
        self.client = GuardedClient(_client(target.uri), target.uri)
        self._experiment_id: str | None = None
        self._last_epoch: dict[str, int] = {}
        self.run_start: dict[str, int] = {}  # run id → its start_time (ms), as MLflow holds it
        # trial id → run id of this instance's trial runs: listed once, then kept by trial_run
        # (a search per trial start scans every run's tags: its cost grew with the study)
        self._trial_runs: tuple[str | None, dict[str, str]] | None = None

    # ------------------------------------------------------------------ set-up
    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self._ensure_experiment(create=True)
        return self._experiment_id

    def _ensure_experiment(self, create: bool) -> str:
        exp = self.client.get_experiment_by_name(self.target.experiment)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TrackingError(
                    f"tracking URI {self.target.uri}: experiment {self.target.experiment!r} is deleted; "
                    "restore it in MLflow or name another one (tracking.experiment)"
                )
            return exp.experiment_id
        if not create:
            raise TrackingError(f"tracking URI {self.target.uri}: no experiment {self.target.experiment!r}")
        try:
            return self.client.create_experiment(
                self.target.experiment,
                artifact_location=self.target.artifact_location,
                # The kind from the start, not only at the study's end (describe_experiment):
                # MLflow 3 UIs before the view switch (and its experiment header) read it.
                tags={TAG_STUDY: self.study, TAG_EXPERIMENT_KIND: "custom_model_development"},
            )
        except Exception:  # another driver created it in between
            exp = self.client.get_experiment_by_name(self.target.experiment)
            if exp is None:
                raise
            return exp.experiment_id

    def exists(self) -> bool:
        return self.client.get_experiment_by_name(self.target.experiment) is not None

    def _find(self, role: str, trial_id: str | None = None) -> Any | None:
        flt = _run_filter(self.study, role, trial_id, self.instance)
        return _oldest(self.client.search_runs([self.experiment_id], filter_string=flt, max_results=10))

    def _others(self) -> list[Any]:
        """Parent runs of this study's name that belong to another instance (or to none: a
        study launched before instance ids), oldest first."""
        flt = _run_filter(self.study, "study")
        runs = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=100)
        mine = self.instance
        return sorted((r for r in runs if r.data.tags.get(TAG_INSTANCE) != mine), key=_age)

    def _adopt(self, run: Any) -> None:
        """Give a parent run from before instance ids, and its trial runs, this instance."""
        self.client.set_tag(run.info.run_id, TAG_INSTANCE, self.instance)
        if self.storage:
            self.client.set_tag(run.info.run_id, TAG_STORAGE, self.storage)
        flt = _run_filter(self.study, "trial")
        for trial in self.client.search_runs([self.experiment_id], filter_string=flt, max_results=10000):
            if TAG_INSTANCE not in trial.data.tags:
                self.client.set_tag(trial.info.run_id, TAG_INSTANCE, self.instance)

    def parent_run(self, params: dict[str, Any], tags: dict[str, str]) -> str:
        """The study instance's parent run (found by tags, else created).

        Another instance's parent run of the same name in the same experiment (another study
        folder, or a study from before instance ids) makes this raise `StudyConflict` naming
        it, rather than share or clean up its runs; a study folder from before ids (`adopt`)
        takes over the one parent run without an instance.
        """
        run = self._find("study")
        if run is None and self.instance is not None:
            others = self._others()
            legacy = [r for r in others if TAG_INSTANCE not in r.data.tags]
            own = [r for r in others if self.storage and r.data.tags.get(TAG_STORAGE) == self.storage]
            if self.adopt and legacy and len(legacy) == len(others):
                run = legacy[0]
                self._adopt(run)
            elif self.adopt and len(own) == 1 == len(others):
                # this folder's own study, its instance.json deleted: take its id back
                run = own[0]
                self.instance = run.data.tags[TAG_INSTANCE]
                self.reclaimed = self.instance
            elif others:
                raise StudyConflict(self._conflict(others[0]))
        if run is None:
            extra = {TAG_INSTANCE: self.instance} if self.instance else {}
            if self.storage:
                extra[TAG_STORAGE] = self.storage
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.study,
                tags={TAG_STUDY: self.study, TAG_ROLE: "study", **extra, **tags},
            )
            if self.instance is not None:
                # Two first launches racing into one store: the older parent run wins, the
                # other driver deletes its own and stops.
                first = [r for r in self._others() if _age(r) < _age(run)]
                if first:
                    self.client.delete_run(run.info.run_id)
                    raise StudyConflict(self._conflict(first[0]))
            self._log_params(run.info.run_id, params, existing={})
        else:
            self.client.log_batch(run.info.run_id, tags=_tags(tags))
            if run.info.status != "RUNNING":
                self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def _conflict(self, other: Any) -> str:
        tags = other.data.tags
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(other.info.start_time / 1000))
        whose = (
            f"the study folder {tags[TAG_STORAGE]} (instance {tags.get(TAG_INSTANCE, '?')})"
            if TAG_STORAGE in tags else f"a study launched before instance ids (run {other.info.run_id})"
        )  # fmt: skip
        return (
            f"study {self.study!r} already exists in {redact(self.target.uri)} (experiment "
            f"{self.target.experiment!r}): {whose}, started {when}; give this one another name "
            "(launch --name NEW), or --resume that study in its own folder"
        )

    def finish_parent(
        self, run_id: str, status: str = "FINISHED", records: list[TrialRecord] | None = None
    ) -> None:
        """End the study's parent run, holding the study's results (`summarize_parent`;
        `records`: the trial runs as just listed, else listed here)."""
        self.summarize_parent(run_id, records)
        self.client.set_terminated(run_id, status=status)

    def describe_experiment(self, description: str) -> None:
        """The experiment's description (the spec's) and MLflow 3's experiment kind for model
        training (`mlflow.experimentKind`, as the UI sets it), so its UI opens on runs, not on
        the GenAI overview."""
        tags = {TAG_EXPERIMENT_KIND: "custom_model_development"}
        if description:
            tags[TAG_NOTE] = description
        for key, value in tags.items():
            self.client.set_experiment_tag(self.experiment_id, key, value)

    def summarize_parent(self, run_id: str, records: list[TrialRecord] | None = None) -> Any:
        """Write the study's results to its parent run (idempotent: values are overwritten at
        the same step): metrics `best/<objective>`, `pareto_front_size`, `trials_finished`,
        `trials`; tags `syncstudy.best.<objective>` (the trial) and `syncstudy.pareto_front`;
        artifacts `pareto.png` and `trials.json` (MLflow's table); each front trial's child
        run tagged `syncstudy.pareto=true` (the others `false`). Returns the `StudySummary`."""
        from mlflow.entities import Metric

        from pipeline.record.summary import pareto_png, summarize, trials_table

        run = self.client.get_run(run_id)
        objectives = [(o["metric"], o["mode"]) for o in json.loads(run.data.tags.get(TAG_OBJECTIVES, "[]"))]
        searched = json.loads(run.data.tags.get(TAG_SEARCH, "[]"))
        self.describe_experiment(run.data.tags.get(TAG_NOTE, ""))
        records = self.trials() if records is None else records
        summary = summarize(records, objectives)
        ts = _now_ms()
        metrics = [Metric(k, float(v), ts, 0) for k, v in summary.metrics().items()]
        self.client.log_batch(run_id, metrics=metrics, tags=_tags(summary.tags()))
        front = set(summary.front)
        for r in records:
            flag = "true" if r.trial_id in front else "false"
            if r.tags.get(TAG_PARETO) != flag:
                self.client.set_tag(r.run_id, TAG_PARETO, flag)
        self.client.log_table(run_id, data=trials_table(records, searched, summary), artifact_file="trials.json")
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            png = pareto_png(records, summary, Path(tmp) / "pareto.png")
            if png is not None:
                self.client.log_artifact(run_id, str(png))
        return summary

    def _known_trial_runs(self) -> dict[str, str]:
        """This instance's trial runs, trial id → run id (the oldest where a creation raced),
        listed from the store at the first call and kept up to date by `trial_run` after it.
        One driver holds a study (pipeline.lock), so no other process adds to them meanwhile."""
        if self._trial_runs is None or self._trial_runs[0] != self.instance:
            known: dict[str, str] = {}
            for record in self.trials():  # oldest first
                known.setdefault(record.trial_id, record.run_id)
            self._trial_runs = (self.instance, known)
        return self._trial_runs[1]

    def trial_run(self, trial_id: str, parent_id: str, params: dict[str, Any]) -> str:
        """The trial's child run (found among the study's, else created), with every param logged.

        Constant in the study's size: the study's trial runs are listed once per tracker
        (`_known_trial_runs`), then a run is fetched by its id (issue 28, item 4)."""
        known = self._known_trial_runs()
        run = self.client.get_run(known[trial_id]) if trial_id in known else None
        if run is not None and run.info.lifecycle_stage == "deleted":
            run = None  # soft-deleted as an orphan meanwhile: a new run, as a search would find none
        if run is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=trial_id,
                tags={
                    **({TAG_INSTANCE: self.instance} if self.instance else {}),
                    TAG_STUDY: self.study,
                    TAG_ROLE: "trial",
                    TAG_TRIAL: trial_id,
                    TAG_PARENT: parent_id,
                    TAG_STATUS: "running",
                },
            )
            known[trial_id] = run.info.run_id
        self._log_params(run.info.run_id, params, existing=run.data.params)
        self._last_epoch[run.info.run_id] = int(run.data.tags.get(TAG_LAST_EPOCH, 0))
        self.run_start[run.info.run_id] = run.info.start_time
        return run.info.run_id

    def _log_params(self, run_id: str, params: dict[str, Any], existing: dict[str, str]) -> None:
        todo = [(k, param_str(v)) for k, v in params.items() if k not in existing]
        from mlflow.entities import Param

        for chunk in _chunks(todo, 100):  # MLflow's limit per batch
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])

    # ------------------------------------------------------------------ logging
    def log_epochs(self, run_id: str, records: list[dict[str, float]]) -> int:
        """Log per-epoch records (epoch/<name>, step=epoch) not logged before; returns how many."""
        from mlflow.entities import Metric, RunTag

        if run_id not in self._last_epoch:
            run = self.client.get_run(run_id)
            self._last_epoch[run_id] = int(run.data.tags.get(TAG_LAST_EPOCH, 0))
        last = self._last_epoch[run_id]
        new = sorted((r for r in records if int(r["epoch"]) > last), key=lambda r: r["epoch"])
        if not new:
            return 0
        ts = _now_ms()
        metrics = [
            Metric(EPOCH_PREFIX + k, float(v), ts, int(r["epoch"]))
            for r in new
            for k, v in r.items()
            if k != "epoch" and _is_number(v)
        ]
        top = int(new[-1]["epoch"])
        chunks = list(_chunks(metrics, 900)) or [[]]
        for i, chunk in enumerate(chunks):
            # The tag rides with the last chunk: it never claims epochs that are not stored.
            tags = [RunTag(TAG_LAST_EPOCH, str(top))] if i == len(chunks) - 1 else []
            self.client.log_batch(run_id, metrics=chunk, tags=tags)
        self._last_epoch[run_id] = top
        return len(new)

    def is_final(self, run_id: str) -> bool:
        return self.client.get_run(run_id).data.tags.get(TAG_STATUS, "running") in TERMINAL

    def finish_trial(
        self,
        run_id: str,
        *,
        status: str,
        metrics: dict[str, Any],
        step: int,
        error: str | None = None,
        tags: dict[str, str] | None = None,
        artifacts: list[tuple[Path, str | None]] = (),
    ) -> bool:
        """Record a trial's end once: artifacts, then final metrics + status in one batch
        (`metrics` under their MLflow names, `mlflow_metrics`: its bookkeeping goes as params).

        Returns False (and writes nothing) when the run already holds a final status.
        """
        from mlflow.entities import Metric

        if status not in TERMINAL:
            raise ValueError(f"not a terminal status: {status!r}")
        from pipeline.spec.metrics import split_bookkeeping

        if self.is_final(run_id):
            return False
        _log_files(self.client, run_id, artifacts)
        # The evaluation's counts and setting are params, its seconds a tag: one name per
        # measured quantity among the metrics (pipeline.spec.metrics.BOOKKEEPING). Params
        # before the final batch: a retry after a failure logs the same values again, which
        # MLflow accepts.
        metrics, params, bookkeeping = split_bookkeeping(metrics)
        self._log_params(run_id, params, existing={})
        ts = _now_ms()
        final = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if _is_number(v)]
        all_tags = {**(tags or {}), **bookkeeping, TAG_STATUS: status}
        if error:
            all_tags[TAG_ERROR] = error[:4000]
        chunks = list(_chunks(final, 900)) or [[]]
        for i, chunk in enumerate(chunks):
            self.client.log_batch(run_id, metrics=chunk, tags=_tags(all_tags) if i == len(chunks) - 1 else [])
        self.client.set_terminated(run_id, status=_MLFLOW_STATUS.get(status, "FAILED"))
        return True

    def log_dataset(self, run_id: str, config: dict[str, Any]) -> None:
        """The trial's data set as an MLflow input (the run's "Datasets" column): name, a digest
        of the fields that decide its contents, where it comes from, context "training"."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        fields = {k: config.get(k) for k in DATA_FIELDS if k in config}
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
        source = json.dumps({k: v for k, v in fields.items() if k in ("dataset", "data_root")}, default=str)
        dataset = Dataset(
            name=str(config.get("dataset", "data")), digest=digest, source_type="syncmodel.data",
            source=source, profile=json.dumps(fields, default=str),
        )  # fmt: skip
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])

    def log_images(self, run_id: str, paths: list[Path], limit: int = MAX_IMAGES) -> int:
        """Pictures as MLflow images (key = file stem, step 0), so the UI's image grid compares
        them across trials; the PNG files stay plain artifacts under pictures/ too. MLflow
        writes three files per image (~0.1 s each on the 2-core machine, synchronously: its
        asynchronous mode stalled here), so at most `limit` per trial: the similarity
        matrices first, then the module grids in module order (`picture_order`). Returns how
        many were logged."""
        from PIL import Image

        chosen = picture_order(paths)[:limit]
        for path in chosen:
            with Image.open(path) as image:
                self.client.log_image(run_id, image.convert("RGB"), key=path.stem, step=0, synchronous=True)
        return len(chosen)

    def delete_orphans(self, keep: set[str], records: list[TrialRecord] | None = None) -> list[str]:
        """Soft-delete trial runs whose trial Tune no longer knows (created after the last
        experiment snapshot of a driver that died); they stay restorable in MLflow's trash.
        `records`: the trial runs as just listed (`trials`), else listed here."""
        gone = [r for r in (self.trials() if records is None else records) if r.trial_id not in keep]
        for r in gone:
            self.client.delete_run(r.run_id)
            if self._trial_runs is not None and self._trial_runs[1].get(r.trial_id) == r.run_id:
                del self._trial_runs[1][r.trial_id]
        return [r.trial_id for r in gone]

    # ------------------------------------------------------------------ queries
    def parent(self) -> Any | None:
        return self._find("study")

    def trials(self) -> list[TrialRecord]:
        """Every (not deleted) trial run of the study, oldest first."""
        flt = _run_filter(self.study, "trial", instance=self.instance)
        out: list[TrialRecord] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=flt, max_results=1000,
                order_by=["attributes.start_time ASC"], page_token=token,
            )
            for run in page:
                out.append(
                    TrialRecord(
                        trial_id=run.data.tags.get(TAG_TRIAL, ""),
                        run_id=run.info.run_id,
                        status=run.data.tags.get(TAG_STATUS, "running"),
                        params=dict(run.data.params),
                        metrics=final_metrics(run.data.metrics),
                        tags=dict(run.data.tags),
                        start_time=run.info.start_time,
                        end_time=run.info.end_time,
                        artifact_uri=run.info.artifact_uri,
                        checkpoint=run.data.tags.get(TAG_CHECKPOINT) or None,
                    )
                )
            token = page.token
            if not token:
                return out

    def moved_artifacts(self, run_id: str) -> str | None:
        """The run's artifact URI inside this target's artifact folder when the study folder
        was moved or copied (the store records the absolute URIs of the folder it was written
        in); None when it was not (or the store is not a study folder's own)."""
        new = self.target.artifact_location
        if not new or not new.startswith("file:") or not self.target.uri.startswith("sqlite:"):
            return None
        # Only a store that lives in the study folder moves with it; a database named elsewhere
        # keeps the artifact folder it recorded.
        if sqlite_path(self.target.uri).parent != Path(urllib.parse.urlparse(new).path).parent:
            return None
        old = self.client.get_experiment(self.experiment_id).artifact_location
        uri = self.client.get_run(run_id).info.artifact_uri
        if old == new or not uri.startswith(old.rstrip("/") + "/"):
            return None
        return new.rstrip("/") + uri[len(old.rstrip("/")) :]

    def download(self, run_id: str, artifact_path: str, dst: Path) -> Path:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        moved = self.moved_artifacts(run_id)
        if moved is not None:
            import mlflow.artifacts

            return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{moved}/{artifact_path}", dst_path=str(dst)))
        return Path(self.client.download_artifacts(run_id, artifact_path, str(dst)))

    def has_artifact(self, run_id: str, artifact_path: str) -> bool:
        """Whether the run lists the file `artifact_path` (errors asking the store propagate)."""
        folder = artifact_path.rpartition("/")[0] or None
        moved = self.moved_artifacts(run_id)
        if moved is not None:
            import mlflow.artifacts

            listed = mlflow.artifacts.list_artifacts(artifact_uri=f"{moved}/{folder}" if folder else moved)
            return any(a.path.rpartition("/")[2] == artifact_path.rpartition("/")[2] for a in listed)
        return any(a.path == artifact_path for a in self.client.list_artifacts(run_id, folder))

    def register(
        self, run_id: str, name: str, model_uri: str, *, description: str = "", alias: str | None = None
    ) -> str:
        """Register the MLflow model `model_uri` (logged by `run_id`; a logged model's
        `models:/<model id>`) as a new version of model `name`, with `description` and, if
        given, `alias` pointing at it; returns the version. A logged model lists its versions in
        its `mlflow.modelVersions` tag, as `mlflow.register_model` leaves it (the UI shows them)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags={TAG_STUDY: self.study})
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        run = self.client.get_run(run_id)
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
        # Given `models:/<id>`, MLflow's sqlite registry looks the model up in the process-wide
        # tracking store, not the client's (mlflow/store/model_registry/sqlalchemy_store.py,
        # create_model_version): that is this store for the call.
        with _process_tracking_uri(expand(self.target.uri)):
            version = self.client.create_model_version(
                name, source=model_uri, run_id=run_id, description=description or None, model_id=model_id,
                tags={TAG_STUDY: self.study, TAG_TRIAL: run.data.tags.get(TAG_TRIAL, "")},
            )  # fmt: skip
        if model_id:
            listed = self.client.get_logged_model(model_id).tags.get(MODEL_VERSIONS_TAG) or "[]"
            try:
                versions = [*json.loads(listed), {"name": name, "version": str(version.version)}]
            except (ValueError, TypeError):  # not MLflow's list: start it again
                versions = [{"name": name, "version": str(version.version)}]
            self.client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps(versions)})
        if alias:
            self.client.set_registered_model_alias(name, alias, version.version)
        return str(version.version)


MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # mlflow.utils.mlflow_tags.MLFLOW_MODEL_VERSIONS


@contextlib.contextmanager
def _process_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI (and the MLFLOW_TRACKING_URI variable it sets) is
    `uri` inside the block and as it was after it."""
    import mlflow

    variable = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


# Where a trial's files go in its child run: (file or folder in the trial's final checkpoint,
# artifact folder). Used by the driver (from Tune's storage) and by a trial uploading its own.
def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """`text` split into runs of digits (compared as numbers) and of the rest (as text)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.findall(r"\d+|\D+", text))


def picture_order(paths: Iterable[Path]) -> list[Path]:
    """A trial's pictures in the order they are logged as MLflow images: the similarity
    matrices (`{layer}_similarity.png`) first, then the rest by name with numbers compared as
    numbers: `{layer}_module0`, `_module1`, ..., `_module10`, then `{layer}_unsynchronised`."""
    return sorted(paths, key=lambda p: (not p.stem.endswith("_similarity"), _natural(p.name)))


def _run_filter(study: str, role: str, trial_id: str | None = None, instance: str | None = None) -> str:
    """MLflow's filter for a study's runs of one role (study, trial), or one trial's run; with
    `instance`, only that study instance's."""
    flt = f"tags.`{TAG_STUDY}` = '{study}' and tags.`{TAG_ROLE}` = '{role}'"
    if instance is not None:
        flt += f" and tags.`{TAG_INSTANCE}` = '{instance}'"
    return flt + (f" and tags.`{TAG_TRIAL}` = '{trial_id}'" if trial_id is not None else "")


def _age(run: Any) -> tuple[int, str]:
    # Creation order, ties broken by id: two racing drivers agree on which run came first.
    return (run.info.start_time, run.info.run_id)


def _oldest(runs: list[Any]) -> Any | None:
    # Two runs for one role/trial exist only if a creation raced; the oldest is the canonical one.
    return min(runs, key=lambda r: r.info.start_time) if runs else None


def _log_files(client: Any, run_id: str, files: Iterable[tuple[Path, str | None]]) -> None:
    """Upload (local file or folder, artifact folder) pairs to a run; the trial's model folder
    becomes the run's logged model `model` (MLflow 3), not a plain artifact folder."""
    for local, dest in files:
        if local.name == TrialFiles.MLFLOW_MODEL and local.is_dir():
            from pipeline.record.mlflow_model import log_trial_model

            log_trial_model(client, run_id, local)
        elif local.is_dir():
            client.log_artifacts(run_id, str(local), dest)
        elif local.is_file():
            client.log_artifact(run_id, str(local), dest)


def artifact_files(folder: Path) -> list[tuple[Path, str | None]]:
    """(path, artifact folder) of the `TrialFiles.ARTIFACTS` present in `folder`."""
    return [(folder / name, dest) for name, dest in TrialFiles.ARTIFACTS if (folder / name).exists()]


def is_remote(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme.lower() in ("http", "https")


def upload_from_trial(
    target: TrackingTarget, study: str, trial_id: str, folder: Path, wait_s: float = 10.0
) -> bool:
    """A trial's own upload of its files to its child run (remote servers, proxied artifacts:
    the bytes go from the worker to the server, not through the driver or a shared disk).
    The driver created the run when the trial started; returns False if it cannot be found
    or the upload fails (the driver then uploads from Tune's storage)."""
    flt = _run_filter(study, "trial", trial_id)
    deadline = time.monotonic() + wait_s
    try:
        client = _client(target.uri)  # a `${VAR}` unset on this node: the driver uploads
        exp = client.get_experiment_by_name(target.experiment)
        while True:
            runs = client.search_runs([exp.experiment_id], filter_string=flt, max_results=10) if exp else []
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        run = _oldest(runs)
        if run is None:
            return False
        _log_files(client, run.info.run_id, artifact_files(folder))
        return True
    except Exception:  # noqa: BLE001 - the driver falls back to Tune's storage
        return False


def final_metrics(logged: dict[str, float]) -> dict[str, float]:
    """A run's final metrics under their bare names (pipeline.spec.metrics.mlflow_name undone),
    with the ones left out of MLflow as repeats (FINAL_FROM_LAST_EPOCH) read from the last
    epoch's value, which they equal."""
    from pipeline.spec.metrics import FINAL_FROM_LAST_EPOCH, bare_name

    out = {bare_name(k): v for k, v in logged.items() if not k.startswith(EPOCH_PREFIX)}
    for name in FINAL_FROM_LAST_EPOCH:
        if name not in out and EPOCH_PREFIX + name in logged:
            out[name] = logged[EPOCH_PREFIX + name]
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _tags(tags: dict[str, str]) -> list[Any]:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in tags.items()]


def finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(v)
