"""One driver per study folder: an exclusive `flock` on `<storage>/.lock`, taken by `launch`
and `launch --resume` before anything else is written and held until the driver exits.

`flock` is released by the kernel when its holder dies (SIGKILL, OOM kill, a power cut of the
client on most NFS servers), so a lock left by a dead driver is simply taken over; the file's
content (host, pid, start time of the holder) is only for the message a second driver prints.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import random
import socket
import time
from pathlib import Path

from syncmodel.errors import SyncStudyError

LOCK_FILE = ".lock"


class StudyLocked(SyncStudyError):
    """Another live driver holds the study folder."""


class StudyLock:
    """The held lock of one study folder (`acquire`); `release` (or the process's end) frees it."""

    def __init__(self, storage: Path, fd: int, previous: dict[str, object] | None):
        self.storage = storage
        self.path = storage / LOCK_FILE
        self._fd: int | None = fd
        # The holder info a dead driver left (None if none): the lock was taken over.
        self.previous = previous

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> dict[str, object] | None:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        info = json.loads(text) if text else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def describe(info: dict[str, object] | None) -> str:
    if not info:
        return "an unknown process"
    since = info.get("since")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(since)))
        if isinstance(since, (int, float))
        else "?"
    )
    return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, since {when}"


READER_WAIT_S = 5.0  # how long a driver waits for readers' shared locks (each held for microseconds)


def _lock_exclusive(fd: int) -> None:
    """flock(LOCK_EX | LOCK_NB), waiting out readers: `held` takes a shared lock for an instant,
    and a driver starting in that instant must not be told the study is in use. Raises the
    OSError (EWOULDBLOCK) at once when a driver (an exclusive holder) has it."""
    deadline = time.monotonic() + READER_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES) or time.monotonic() > deadline:
                raise
            try:  # a shared lock is granted only when no one holds it exclusively
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise exc from None  # a driver holds it
            fcntl.flock(fd, fcntl.LOCK_UN)
            # jittered: two drivers probing at once must not keep meeting each other's probe
            time.sleep(0.002 + 0.008 * random.random())


def acquire(storage: Path, command: str = "launch") -> StudyLock:
    """Lock `storage` (created if missing) for this process, or raise `StudyLocked` naming the
    holder. The descriptor is not inherited by child processes (Ray's raylet, workers), so the
    lock ends with this process."""
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _lock_exclusive(fd)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise StudyLocked(
                f"the study in {storage} is in use by another driver ({describe(holder)}); "
                f"wait for it to end, or stop it (its lock: {path})"
            ) from None
        raise SyncStudyError(f"cannot lock the study folder {storage} ({exc.strerror})") from None
    previous = _holder(fd)
    info = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.time(),
        "command": command,
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:  # a full disk: the lock holds all the same; only the message loses its details
        pass
    return StudyLock(storage, fd, previous)


def held(storage: Path) -> bool:
    """Whether a live driver holds `storage` now (read-only: creates no lock file, takes no
    lock that outlives the call). A folder without a lock file has never had a driver."""
    try:
        fd = os.open(storage / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EACCES)
    finally:
        os.close(fd)  # closing the descriptor drops the shared lock taken above
    return False


def last_holder(storage: Path) -> dict[str, object] | None:
    """What the last driver to take `storage` wrote into its lock file (host, pid, since), read
    only; None when there is no lock file or nothing readable in it."""
    try:
        fd = os.open(storage / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return _holder(fd)
    finally:
        os.close(fd)
