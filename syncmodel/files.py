"""File writes that a crash cannot leave half done (no torch: the pipeline's driver uses it
before torch is imported)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Any) -> Path:
    """Call `write(tmp_path)` then rename onto `path`, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; the file gets what open() would give
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_folder(parent: Path, name: str, suffix: str = ".tmp") -> Path:
    """A fresh hidden folder in `parent` to build `name` in before renaming it into place;
    mode as `mkdir` would give (mkdtemp makes 0700, which the renamed folder would keep)."""
    folder = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=suffix, dir=parent))
    os.chmod(folder, 0o777 & ~umask())
    return folder


def ensure_folder(path: Path, label: str) -> Path:
    """`mkdir -p path`, or a `SyncStudyError` starting with `label` (the flag and the path the
    user gave) and naming the cause in one line:
    a file where a folder must be, a read-only or virtual file system (/proc), no permission."""
    from syncmodel.errors import SyncStudyError

    path = Path(path)
    for above in (path, *path.parents):
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                raise SyncStudyError(f"{label}: {above} is not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SyncStudyError(f"{label}: cannot create {path} ({exc.strerror or exc})") from None
    return path


def can_create_in(folder: Path) -> bool:
    """Whether a file can be created in `folder`: a real file, not os.access (as root, access()
    passes on folders nobody can write, such as /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
