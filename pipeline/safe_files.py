"""Writes into a study folder that never go through a symbolic link the driver did not make.

A study folder may sit on a shared file system (NFS, EFS) where others can write. Someone who
plants `ln -s ../victim STUDY/.lock` (or `launch.log`, `study.yaml`, a table's part file)
must not get the driver to write, truncate or lock `victim` with the driver's rights. So
every file the driver itself writes in the folder goes through this module:

- the folders between the study folder (`within`) and the file are walked one by one with
  `O_NOFOLLOW | O_DIRECTORY` relative to the previous one (`openat`), and made with `mkdirat`
  where missing: a planted `parts -> /elsewhere` is met, not followed;
- files are opened with `O_NOFOLLOW` (a link as the last component fails with ELOOP);
- a file replaced as a whole is written to a new name made with `O_CREAT | O_EXCL` (never an
  existing file, never through a link), written through that descriptor (not reopened by
  name) and renamed over the target; a rename replaces a link itself, never what it names.

A link met on the way is refused with `UnsafeFolder` (a `SyncStudyError`: one line naming
the file, exit 2). The study folder itself (and the folders above it) are the user's choice
and are followed as given (`pipeline.paths.storage_of` resolves them once).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from syncmodel.errors import SyncStudyError
from syncmodel.files import umask

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeFolder(SyncStudyError):
    """A study folder holds a symbolic link (or another odd thing) where the driver writes."""


def _refuse(path: Path, exc: OSError) -> SyncStudyError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        # ELOOP: a link as the last component (O_NOFOLLOW); ENOTDIR: a link or a file where a
        # folder must be (O_DIRECTORY | O_NOFOLLOW); FreeBSD says EMLINK for the first.
        what = "a symbolic link" if os.path.islink(path) else "not a plain file or folder"
        return UnsafeFolder(
            f"{path} is {what}: a study folder holds no links of its own and the driver never "
            "writes through one; remove it, or use another --storage"
        )
    return SyncStudyError(f"cannot write {path} ({exc.strerror or exc})")


def _relative(path: Path, within: Path) -> tuple[str, ...]:
    try:
        parts = path.relative_to(within).parts
    except ValueError:
        raise ValueError(f"{path} is not inside {within}") from None
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{path}: not a file name inside {within}")
    return parts


@contextmanager
def _parent_fd(path: Path, within: Path | None, create: bool) -> Iterator[tuple[int, str]]:
    """(a descriptor of `path`'s folder, reached from `within` without following a link, the
    file's name); folders made on the way when `create`."""
    within = Path(within) if within is not None else path.parent
    parts = _relative(path, within)
    if create:
        within.mkdir(parents=True, exist_ok=True)  # the user's folder: followed as given
    fd = os.open(within, _DIR_FLAGS)
    try:
        reached = within
        for name in parts[:-1]:
            reached = reached / name
            if create:
                try:
                    os.mkdir(name, 0o777, dir_fd=fd)  # mkdir never follows a link at its name
                except FileExistsError:
                    pass
            try:
                sub = os.open(name, _DIR_FLAGS | _NO_FOLLOW, dir_fd=fd)
            except FileNotFoundError:
                raise  # nothing there (`remove` of a file in a folder never made)
            except OSError as exc:
                raise _refuse(reached, exc) from None
            os.close(fd)
            fd = sub
        yield fd, parts[-1]
    finally:
        os.close(fd)


def open_file(path: Path, flags: int, *, within: Path | None = None, mode: int = 0o666) -> int:
    """`os.open(path, flags | O_NOFOLLOW | O_CLOEXEC)`, every folder below `within` (default:
    the file's own folder) reached without following a link; `UnsafeFolder` for a link."""
    path = Path(path)
    with _parent_fd(path, within, create=bool(flags & os.O_CREAT)) as (folder, name):
        try:
            return os.open(name, flags | _NO_FOLLOW | os.O_CLOEXEC, mode, dir_fd=folder)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS):
                raise  # the callers tell a missing or forbidden file apart themselves
            raise _refuse(path, exc) from None


def write_atomic(path: Path, write: Callable[[BinaryIO], None], *, within: Path | None = None) -> Path:
    """Replace `path` as a whole: `write(fh)` into a fresh hidden file made with O_EXCL beside
    it, fsync, rename over `path`. A reader never sees half a file; a link at `path` is
    replaced, not written through; the temporary file is removed on any failure."""
    path = Path(path)
    with _parent_fd(path, within, create=True) as (folder, name):
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | os.O_CLOEXEC,
                0o666 & ~umask(), dir_fd=folder,
            )  # fmt: skip
        except OSError as exc:
            raise _refuse(path.with_name(tmp), exc) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.rename(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=folder)  # unlink removes a link, never what it names
            except OSError:
                pass
            raise
    return path


def write_text(path: Path, text: str, *, within: Path | None = None) -> Path:
    """`write_atomic` of UTF-8 text."""
    return write_atomic(path, lambda fh: fh.write(text.encode("utf-8")), within=within)


def remove(path: Path, *, within: Path | None = None) -> None:
    """Remove the file `path` if it is there (a link at `path` is removed itself; a link among
    the folders below `within` is refused, so nothing outside the study folder is removed)."""
    path = Path(path)
    try:
        with _parent_fd(path, within, create=False) as (folder, name):
            os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def refuse_link(path: Path) -> None:
    """`UnsafeFolder` when `path` is a symbolic link (read with lstat: nothing is created or
    followed); for a file opened later by a library that takes only a name (the launch log's
    handler opens with `open_file` too, this gives the one-line refusal before anything)."""
    if os.path.islink(path):
        raise _refuse(Path(path), OSError(errno.ELOOP, "a symbolic link"))
