"""One driver per study folder, taken by `launch` and `launch --resume` before anything else
is written and held until the driver exits: an exclusive `flock` on the study folder itself
and on `<storage>/.lock`.

`flock` is released by the kernel when its holder dies (SIGKILL, OOM kill, a power cut of the
client on most NFS servers), so a lock left by a dead driver is simply taken over; the lock
file's content (host, pid, start time of the holder) is only for the message a second driver
prints.

Why two locks: anyone who can write in a (shared) study folder can remove `.lock`; the live
driver's lock then sits on a file no longer in the folder, and a second driver would create a
new `.lock` and take it. The folder itself cannot be swapped under a driver that way (a folder
removed or renamed away is no longer the study's folder), so its lock is what tells a second
driver that the first is alive. It is taken first, before the lock file is opened or created.
NFS cannot lock a folder (its `flock` is a write lock, which needs a file opened for writing):
there the folder's lock is skipped and only `.lock` counts (docs/reliability.md says so). The
lock file is also checked to be the one in the folder (same inode) once locked: one removed
and created anew between the open and the lock is opened again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.safe_files import open_file
from syncmodel.errors import SyncStudyError

LOCK_FILE = ".lock"


class StudyLocked(SyncStudyError):
    """Another live driver holds the study folder."""


class StudyLock:
    """The held lock of one study folder (`acquire`); `release` (or the process's end) frees it."""

    def __init__(self, storage: Path, fd: int, previous: dict[str, object] | None, folder_fd: int | None = None):
        self.storage = storage
        self.path = storage / LOCK_FILE
        self._fd: int | None = fd
        self._folder_fd = folder_fd  # None where the file system cannot lock a folder (NFS)
        # The holder info a dead driver left (None if none): the lock was taken over.
        self.previous = previous

    def release(self) -> None:
        for name in ("_fd", "_folder_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)  # closing the only descriptor releases its flock
                setattr(self, name, None)

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


_BUSY = (errno.EWOULDBLOCK, errno.EACCES)
# What a file system that cannot flock a folder answers (NFS: a write lock on a read-only
# descriptor is EBADF; some FUSE file systems say ENOLCK or EOPNOTSUPP).
_NO_FOLDER_LOCK = (errno.EBADF, errno.ENOLCK, errno.EINVAL, errno.EOPNOTSUPP)


def _locked(storage: Path, holder: dict[str, object] | None) -> StudyLocked:
    # Stop the process, never remove a file: the lock file is not what keeps the driver in.
    return StudyLocked(
        f"the study in {storage} is in use by another driver ({describe(holder)}); "
        "wait for it to end, or stop that driver"
    )


def _folder_holder(folder_fd: int) -> dict[str, object] | None:
    """The process holding a flock on the folder, from /proc/locks (Linux): what the message
    names when the lock file that held the holder's details was removed."""
    st = os.fstat(folder_fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[3] == "WRITE" and fields[5] == key:
            return {"host": socket.gethostname(), "pid": int(fields[4]) if fields[4].isdigit() else "?"}
    return None


def _lock_folder(storage: Path) -> int | None:
    """The study folder's own exclusive flock (a descriptor to keep), None where the file
    system cannot lock a folder; `StudyLocked` when a driver holds it."""
    folder = os.open(storage, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _lock_exclusive(folder)
    except OSError as exc:
        try:
            if exc.errno in _BUSY:
                raise _locked(storage, last_holder(storage) or _folder_holder(folder)) from None
            if exc.errno in _NO_FOLDER_LOCK:
                return None
            raise SyncStudyError(f"cannot lock the study folder {storage} ({exc.strerror})") from None
        finally:
            os.close(folder)
    return folder


def _open_lock_file(storage: Path) -> int:
    """The lock file, created if missing, locked exclusively, and the one the folder holds
    now (its inode checked after the lock: a file removed or replaced meanwhile is retried)."""
    path = storage / LOCK_FILE
    for _ in range(20):
        # no-follow: a planted `.lock -> ../victim` is refused, never truncated (safe_files)
        fd = open_file(path, os.O_RDWR | os.O_CREAT, within=storage, mode=0o644)
        try:
            _lock_exclusive(fd)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in _BUSY:
                raise _locked(storage, holder) from None
            raise SyncStudyError(f"cannot lock the study folder {storage} ({exc.strerror})") from None
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        mine = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
        os.close(fd)  # removed or replaced between the open and the lock: open the new one
    raise SyncStudyError(f"cannot lock the study folder {storage}: {path} keeps being replaced")


def acquire(storage: Path, command: str = "launch") -> StudyLock:
    """Lock `storage` (created if missing) for this process, or raise `StudyLocked` naming the
    holder. The descriptors are not inherited by child processes (Ray's raylet, workers), so
    the lock ends with this process."""
    storage.mkdir(parents=True, exist_ok=True)
    folder = _lock_folder(storage)  # first: a live driver is seen even without its lock file
    try:
        fd = _open_lock_file(storage)
    except BaseException:
        if folder is not None:
            os.close(folder)
        raise
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
    return StudyLock(storage, fd, previous, folder)


@contextlib.contextmanager
def hold_quietly(storage: Path) -> Iterator[None]:
    """The study folder's lock for a short step of a command that is not a driver (relocating
    a moved study's store: pipeline.commands._study): the folder's flock and the lock file's
    if there is one, which is neither created nor written, as it keeps the last driver's
    details and those tell the read-only commands whether the tables are current
    (pipeline.record.finished). Raises `StudyLocked` when a driver holds the folder."""
    folder = _lock_folder(storage)
    fd: int | None = None
    try:
        try:
            fd = os.open(storage / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            fd = None  # no lock file (or a planted link): the folder's lock is the one that counts
        if fd is not None:
            try:
                _lock_exclusive(fd)
            except OSError as exc:
                if exc.errno in _BUSY:
                    raise _locked(storage, _holder(fd)) from None
                if exc.errno not in _NO_FOLDER_LOCK:
                    raise SyncStudyError(f"cannot lock the study folder {storage} ({exc.strerror})") from None
        yield
    finally:
        for held_fd in (fd, folder):
            if held_fd is not None:
                os.close(held_fd)


def _shared_busy(fd: int) -> bool | None:
    """Whether an exclusive flock is held on `fd`'s file (tried with a shared lock, dropped at
    once); None when the file system cannot tell (a folder on NFS)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _BUSY:
            return True
        return None if exc.errno in _NO_FOLDER_LOCK else False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def held(storage: Path) -> bool:
    """Whether a live driver holds `storage` now (read-only: creates no lock file, takes no
    lock that outlives the call): the folder's lock, then the lock file's (a driver whose lock
    file was removed still holds its folder). Links are not followed."""
    try:
        folder = os.open(storage, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if _shared_busy(folder):
            return True
    finally:
        os.close(folder)  # closing the descriptor drops the shared lock taken above
    try:
        fd = os.open(storage / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        return bool(_shared_busy(fd))
    finally:
        os.close(fd)


def last_holder(storage: Path) -> dict[str, object] | None:
    """What the last driver to take `storage` wrote into its lock file (host, pid, since), read
    only; None when there is no lock file or nothing readable in it."""
    try:
        fd = os.open(storage / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        return _holder(fd)
    finally:
        os.close(fd)
