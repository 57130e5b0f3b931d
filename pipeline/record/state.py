"""Tune's experiment state kept whole: a copy of the last complete set of Tune's state files
(`tune/experiment_state-*.json`, `tuner.pkl`, `searcher-state-*.pkl`) in `<storage>/tune.good`,
refreshed by the driver while the study runs (`pipeline.record.callback.StateKeeper`) and put
back by `launch --resume` when a file in `tune/` is cut short (a full disk while Tune wrote it).
docs/reliability.md.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickletools
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.paths import EXPERIMENT_DIR, GOOD_STATE_DIR
from syncmodel.errors import SyncStudyError


def _whole(path: Path) -> bool:
    """Whether a Tune state file is complete: JSON that parses, a pickle that reaches its STOP
    (read op by op, nothing executed). A file cut by a full disk is neither."""
    try:
        data = path.read_bytes()
        # By content, not name: Tune's search_gen_state-*.json is a pickle.
        if not data.startswith(b"\x80"):
            json.loads(data)
            return True
        for op, _, _ in pickletools.genops(io.BytesIO(data)):
            if op.name == "STOP":
                return True
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return False


def _state_files(folder: Path) -> list[Path]:
    # What Tune restores from: experiment_state-*.json, tuner.pkl, searcher-state-*.pkl,
    # callback state (Tune's sync_down reads every *.json and *.pkl of the folder's top).
    return sorted(p for p in folder.glob("*") if p.suffix in (".json", ".pkl") and p.is_file())


def _complete(files: list[Path]) -> bool:
    # A set Tune can restore from: its tuner and at least one experiment state.
    names = [p.name for p in files]
    return "tuner.pkl" in names and any(n.startswith("experiment_state-") for n in names)


def keep_good_state(storage: Path, seen: dict[str, tuple[int, int]] | None = None) -> bool:
    """Copy Tune's experiment state (`tune/*.json`, `tune/*.pkl`) to GOOD_STATE_DIR when it
    changed and every file of it is whole; returns whether a copy was made.

    The copy is made beside and swapped in by renames, so GOOD_STATE_DIR always holds one
    complete set; a failed copy (the disk is full) keeps the previous set.
    """
    exp = storage / EXPERIMENT_DIR
    files = _state_files(exp)
    if not files:
        return False
    try:
        stamp = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in files}
    except OSError:
        return False
    if seen is not None and seen == stamp:
        return False
    if not _complete(files):
        return False
    good, tmp, old = (
        storage / GOOD_STATE_DIR,
        storage / f".{GOOD_STATE_DIR}.new",
        storage / f".{GOOD_STATE_DIR}.old",
    )
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for p in files:
            shutil.copy2(p, tmp / p.name)
        # The copies are checked, not the originals: what is kept is what was read whole (a
        # file Tune was writing, or one cut short, fails here and waits for the next call).
        # One parse of each file per change: the experiment state grows with the study.
        if not all(_whole(tmp / p.name) for p in files):
            raise OSError("state not whole")
        shutil.rmtree(old, ignore_errors=True)
        if good.exists():
            os.rename(good, old)
        os.rename(tmp, good)
        shutil.rmtree(old, ignore_errors=True)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    if seen is not None:
        seen.clear()
        seen.update(stamp)
    return True


def restore_good_state(storage: Path, out: Callable[[str], None] | None = None) -> list[str]:
    """Before `Tuner.restore`: if any of Tune's state files in `tune/` is not whole (a write
    cut by a full disk), put the last good set (GOOD_STATE_DIR) in place of all of them; the
    damaged files are kept as `<name>.damaged`. Returns the damaged files' names.

    Raises SyncStudyError (exit 2, saying what to do) when no good set is kept.
    """
    exp = storage / EXPERIMENT_DIR
    damaged = [p.name for p in _state_files(exp) if not _whole(p)]
    if not damaged:
        return []
    good = storage / GOOD_STATE_DIR
    if not good.is_dir():
        old = storage / f".{GOOD_STATE_DIR}.old"  # a swap cut between its two renames
        good = old if old.is_dir() else good
    kept = _state_files(good) if good.is_dir() else []
    if not _complete(kept) or not all(_whole(p) for p in kept):
        raise SyncStudyError(
            f"--resume: Tune's experiment state in {exp} is damaged ({', '.join(damaged)}: cut short, "
            "probably by a full disk) and no good copy of it is kept: the study cannot be resumed; "
            "its finished trials are in the tables and MLflow: launch it again with another --storage"
        )
    for p in _state_files(exp):  # all of them: the kept set is one consistent snapshot
        os.replace(
            p,
            p.with_name(p.name + ".damaged")
            if p.name in damaged
            else p.with_name(p.name + ".replaced"),
        )
    for p in kept:
        shutil.copy2(p, exp / p.name)
    (out or (lambda m: print(m, file=sys.stderr, flush=True)))(
        f"syncstudy: Tune's experiment state was damaged ({', '.join(damaged)}); resuming from the last "
        f"good copy ({good}); trials that ended after it are run again and recorded once"
    )
    return damaged


DISK_FULL_SIGNS = ("No space left on device", "[Errno 28]", "database or disk is full", "Disk quota exceeded")


def disk_full(exc: BaseException | str | None) -> bool:
    """Whether an exception (possibly wrapped by Tune, Ray, pyarrow, SQLAlchemy: its causes are
    followed) or an error trace comes from a full disk."""
    seen: set[int] = set()
    todo: list[BaseException | str | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(sign in str(e) for sign in DISK_FULL_SIGNS):
            return True
        if isinstance(e, BaseException):
            todo += [e.__cause__, e.__context__]
    return False


class DiskFull(OSError):
    """Raised in the driver's Tune callbacks to end `fit` at the first full-disk error: the
    study stops with one line (pipeline.study) and resumes once there is space, instead of
    recording every later trial as failed."""

    def __init__(self, what: str):
        super().__init__(errno.ENOSPC, f"No space left on device ({what})")


class _NoDiskFullTraces(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not disk_full(text)


def quiet_disk_full_logs() -> None:
    """Drop Tune's logged tracebacks of full-disk errors (one per failed write, hundreds of
    lines): the study ends with one line that says what to do (pipeline.study)."""
    for name in ("ray", "ray.tune", "ray.train"):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoDiskFullTraces) for f in handler.filters):
                handler.addFilter(_NoDiskFullTraces())
