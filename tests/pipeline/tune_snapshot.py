"""What Tune's last experiment-state snapshot in a study folder says about each trial, for
tests that kill a driver and must first know that the snapshot `--resume` restores from
holds a given moment (a finished trial, a trial's checkpoint). Polling this file is waiting
on what the next driver will read, not on a guess of how long Tune takes to write it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

GUARD_S = 600.0  # a hang guard only: the condition is observed, never assumed after a sleep


@dataclass(frozen=True)
class SnapshotTrial:
    trial_id: str
    name: str  # Tune's trial name, "N_<id>" (pipeline.study names trials so)
    status: str  # PENDING, RUNNING, TERMINATED, ERROR, PAUSED
    checkpoints: tuple[str, ...]  # checkpoint folder names its checkpoint manager holds


def snapshot(storage: Path) -> dict[str, SnapshotTrial]:
    """trial id → its entry in the newest `<storage>/tune/experiment_state-*.json`; {} while
    there is none or it is being replaced (a file that does not parse yet)."""
    states = sorted((storage / "tune").glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for trial_json, runtime_json in data["trial_data"]:
            trial, runtime = json.loads(trial_json), json.loads(runtime_json)
            # The checkpoint manager is a cloudpickle (hex); its checkpoints' folder names
            # are plain strings inside it.
            pickled = bytes.fromhex(runtime["checkpoint_manager"]["value"])
            names = tuple(sorted({m.decode() for m in re.findall(rb"checkpoint_\d{6}", pickled)}))
            out[trial["trial_id"]] = SnapshotTrial(
                trial["trial_id"], str(trial.get("custom_trial_name") or ""), trial["status"], names
            )
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def wait_for_snapshot(storage: Path, holds: Callable[[dict[str, SnapshotTrial]], bool], driver: Popen) -> None:
    """Until the snapshot `holds`; fails if the driver ends first (or after GUARD_S)."""
    deadline = time.monotonic() + GUARD_S
    while not holds(snapshot(storage)):
        assert driver.poll() is None, "the driver ended before Tune's snapshot held the moment"
        assert time.monotonic() < deadline, f"Tune's snapshot did not hold the moment in {GUARD_S:g} s"
        time.sleep(0.2)
