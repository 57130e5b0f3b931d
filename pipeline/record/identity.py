"""A study instance's identity: a uuid created at the first launch into a study folder and kept
in `<storage>/instance.json`, beside `study.yaml`. The parent run and every trial run carry it
(tag `syncstudy.instance`); run lookup and orphan clean-up act only within it, so two study
folders of one name in one tracking store never touch each other's runs (docs/reliability.md).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

from pipeline.safe_files import write_text

INSTANCE_FILE = "instance.json"


def read_instance(storage: str | Path) -> str | None:
    """The instance id kept in `storage`, or None (a folder of a study launched before ids
    existed, or none yet)."""
    try:
        info = json.loads((Path(storage) / INSTANCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    value = info.get("id") if isinstance(info, dict) else None
    return value if isinstance(value, str) and value else None


def ensure_instance(storage: Path) -> tuple[str, bool]:
    """(the folder's instance id, whether it was created now). Written atomically: a torn
    write never leaves half an id."""
    found = read_instance(storage)
    if found is not None:
        return found, False
    info = {
        "id": uuid.uuid4().hex,
        "created": time.time(),
        "host": socket.gethostname(),
        "storage": str(storage),
    }
    # the umask's permissions, like the rest; never through a planted link (pipeline.safe_files)
    write_text(storage / INSTANCE_FILE, json.dumps(info) + "\n", within=storage)
    return info["id"], True


def restore_instance(storage: Path, instance: str) -> None:
    """Write back the id of the folder's own study (its parent run's tag, found by the folder's
    path: pipeline.record.tracking) after `instance.json` was deleted and a resume made a new one."""
    info = {"id": instance, "created": time.time(), "host": socket.gethostname(), "storage": str(storage), "restored": True}
    write_text(storage / INSTANCE_FILE, json.dumps(info) + "\n", within=storage)
