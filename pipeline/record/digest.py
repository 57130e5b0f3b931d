"""The study tables' digest: what the driver wrote, so that an edited or damaged table is
refused instead of read.

When the driver compacts the tables (pipeline.record.tables.StudyTables.compact) it writes
`tables.sha256` beside them, one `<sha256>  <file>` line per table (sha256sum's format, so
`sha256sum -c tables.sha256` checks it by hand), and records the same text on the study's
MLflow parent run (tag `syncstudy.tables_sha256`). Whoever reads a table checks it first
(`check`): a value set by hand, a deleted row, a cut or garbled file no longer matches and
is refused in one line naming the file (`DamagedFile`, exit 2). A table with no digest (a
study folder from before digests, or a compaction cut between its writes) is not trusted by
the read-only commands, which then ask MLflow (pipeline.record.finished).

What this does not stop: whoever can write the folder can rewrite a table and its digest
alike. The tag on the parent run is the copy outside the folder when the store is elsewhere
(a server); docs/reliability.md says what each layout protects.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pipeline.safe_files import remove, write_text
from syncmodel.errors import SyncStudyError

DIGEST_FILE = "tables.sha256"
TAG_DIGEST = "syncstudy.tables_sha256"  # the parent run's copy of DIGEST_FILE's text
_LINE = re.compile(r"^([0-9a-f]{64})  ([A-Za-z0-9_.-]+)$")


class DamagedFile(SyncStudyError):
    """A study folder's file is not what the driver wrote (edited, cut, garbled)."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def digest_text(storage: Path, names: list[str]) -> str:
    return "".join(f"{sha256_of(storage / n)}  {n}\n" for n in names if (storage / n).is_file())


def write_digest(storage: Path, names: list[str]) -> str:
    """`tables.sha256` for the tables `names` that exist; returns its text."""
    text = digest_text(storage, names)
    write_text(storage / DIGEST_FILE, text, within=storage)
    return text


def drop_digest(storage: Path) -> None:
    """Before the tables are rewritten: a compaction cut short leaves no digest, not a stale one."""
    remove(storage / DIGEST_FILE, within=storage)


def read_digest(storage: Path) -> dict[str, str] | None:
    """file name → sha256 from `tables.sha256`; None when there is none; `DamagedFile` when it
    is not what the driver writes."""
    path = Path(storage) / DIGEST_FILE
    try:
        text = path.read_bytes().decode("ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path}: not a digest the driver wrote ({_why(exc)})") from None
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        m = _LINE.match(line)
        if m is None:
            raise DamagedFile(f"{path}: line {n} is not '<sha256>  <file>'")
        out[m.group(2)] = m.group(1)
    return out


def check(storage: Path, name: str, fix: str) -> bool:
    """Whether the table `name` of `storage` matches its digest: True when it does, False when
    there is no digest to check against; `DamagedFile` naming the file (and `fix`, what to do)
    when it does not match, or is listed and missing."""
    digest = read_digest(storage)
    if digest is None or name not in digest:
        return False
    path = Path(storage) / name
    try:
        ok = sha256_of(path) == digest[name]
    except OSError as exc:
        raise DamagedFile(f"{path}: {_why(exc)}; {fix}") from None
    if not ok:
        raise DamagedFile(
            f"{path} is not the table the driver wrote (its sha256 differs from {DIGEST_FILE}: "
            f"edited or damaged); {fix}"
        )
    return True


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or exc.__class__.__name__
