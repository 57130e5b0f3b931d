"""Fault injection for the tests: the `HOOKS` that `SYNCSTUDY_HOOKS=<this file>` puts into the
product's seam (pipeline.hooks), set by tests/pipeline/conftest.py for every test process and
inherited by the drivers and Ray workers they start. Environment variables then make a chosen
trial fail, or stop the driver at a chosen point, so the reliability tests
(docs/reliability.md) run the real paths. With them unset every hook does nothing.

- ``SYNCSTUDY_FAULT="N:KIND[@E][:once],..."``: trial N (1-based, in the order Tune creates
  trials) fails with KIND, before training (no ``@E``) or right after reporting epoch E.
  KIND: ``raise`` (RuntimeError), ``oom`` (torch.OutOfMemoryError, as CUDA raises it),
  ``memory`` (MemoryError), ``exit`` (the trial's process kills itself: SIGKILL), ``nan``
  (the trial's training images become NaN: a genuinely non-finite loss, status diverged),
  ``pause`` (the trial blocks until the test kills its driver or writes ``release`` into
  SYNCSTUDY_TEST_DIR: the study cannot finish before the test acts).
  ``once``: only in a trial that did not start from a checkpoint, so a retry (spec
  ``retries``) restored from epoch E's checkpoint gets through.
- ``SYNCSTUDY_CRASH_AT=POINT``: ``ray_started`` (the driver, the moment its local ray.init
  returns, before the reaper is handed Ray's processes), ``before_first_result`` (the driver,
  when the first trial starts), ``after_trial:N`` (the driver, once N trials are recorded) or ``checkpoint_write``
  (a trial, with its epoch-1 model.safetensors written to a temporary name but not yet renamed).
  The driver SIGKILLs itself; a trial leaves a marker and pauses (as ``pause``: the test kills
  the driver).
- ``SYNCSTUDY_TEST_DIR=DIR``: where crash points leave their marker file (named like the
  point) and trials append their start events (``events.jsonl``: trial number, trial id,
  the epoch it was restored from).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.hooks import Hooks, TrialHooks

FAULT_ENV = "SYNCSTUDY_FAULT"
CRASH_ENV = "SYNCSTUDY_CRASH_AT"
DIR_ENV = "SYNCSTUDY_TEST_DIR"
KINDS = ("raise", "oom", "memory", "exit", "nan", "pause")
PAUSE_GUARD_S = 1800.0  # a hang guard: a paused trial waits for its driver's kill or a release, not for a time
RELEASE = "release"  # a file in SYNCSTUDY_TEST_DIR that lets paused trials go on


class InjectedError(RuntimeError):
    """The `raise` fault."""


@dataclass(frozen=True)
class Fault:
    trial: int  # 1-based creation order
    kind: str
    epoch: int = 0  # 0: before training
    once: bool = False


def parse_faults(text: str | None) -> list[Fault]:
    """`SYNCSTUDY_FAULT`'s value → faults; a malformed entry raises ValueError (a test bug)."""
    out: list[Fault] = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "once"):
            raise ValueError(f"{FAULT_ENV}: {entry!r} is not N:KIND[@EPOCH][:once]")
        kind, _, epoch = parts[1].partition("@")
        if kind not in KINDS:
            raise ValueError(f"{FAULT_ENV}: unknown kind {kind!r}; known: {', '.join(KINDS)}")
        out.append(Fault(int(parts[0]), kind, int(epoch or 0), len(parts) == 3))
    return out


def trial_number(name: str) -> int:
    """The creation counter that starts a trial's name ("3_1a2b3c4d" → 3), else 0."""
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else 0


def _epoch_of(resume: Path | None) -> int | None:
    if resume is None:
        return None
    from syncmodel.checkpoint import read_checkpoint

    return int(read_checkpoint(resume)["meta"].get("epoch", 0))


def _dir() -> Path | None:
    path = os.environ.get(DIR_ENV)
    return Path(path) if path else None


def _mark(point: str, **info: Any) -> None:
    folder = _dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / point.replace(":", "_")).write_text(json.dumps({"pid": os.getpid(), **info}))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # pragma: no cover - the signal arrives first


def _pause() -> None:
    """Block until the test kills this trial's driver (and with it the trial) or writes
    RELEASE into SYNCSTUDY_TEST_DIR: the study cannot go on, however fast the machine, and
    no verdict depends on how long the pause lasts."""
    folder = _dir()
    deadline = time.monotonic() + PAUSE_GUARD_S
    while time.monotonic() < deadline:
        if folder is not None and (folder / RELEASE).exists():
            return
        time.sleep(0.2)


def _raise(kind: str, where: str) -> None:
    message = f"injected by {FAULT_ENV} {where}"
    if kind == "raise":
        raise InjectedError(message)
    if kind == "oom":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 GiB ({message})")
    if kind == "memory":
        raise MemoryError(message)
    if kind == "exit":
        _die()
    if kind == "pause":
        _pause()


class TrialFaults(TrialHooks):
    """The faults and crash point that apply to one trial (built in the trainable).

    `trial_name` is Tune's trial name, "N_<id>" (pipeline.study names trials so); `resume`
    the checkpoint folder the trial continues from, or None.
    """

    def __init__(self, trial_name: str, trial_id: str, resume: Path | None):
        self.number = trial_number(trial_name)
        self.trial_id = trial_id
        self.restored = resume is not None
        self.faults: list[Fault] = []
        self.crash = os.environ.get(CRASH_ENV, "")
        folder = _dir()
        if not os.environ.get(FAULT_ENV) and not self.crash and folder is None:
            return  # the normal case: nothing read, nothing written
        self.faults = [
            f for f in parse_faults(os.environ.get(FAULT_ENV))
            if f.trial == self.number and not (f.once and self.restored)
        ]  # fmt: skip
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            event = {"trial": self.number, "trial_id": trial_id, "restored_epoch": _epoch_of(resume)}
            with open(folder / "events.jsonl", "a") as fh:
                fh.write(json.dumps(event) + "\n")
        if self.crash == "checkpoint_write" and not self.restored:
            _pause_in_checkpoint_write(self.number)

    def data(self, bundle: Any) -> Any:
        """The `nan` fault: a copy of the bundle whose training images are NaN."""
        if not any(f.kind == "nan" for f in self.faults):
            return bundle
        import dataclasses

        import torch

        train = dataclasses.replace(bundle.train, images=torch.full_like(bundle.train.images, float("nan")))
        return dataclasses.replace(bundle, train=train)

    def before_training(self) -> None:
        for f in self.faults:
            if f.epoch == 0 and f.kind != "nan":
                _raise(f.kind, f"(trial {self.number}, before training)")

    def after_epoch(self, epoch: int) -> None:
        for f in self.faults:
            if f.epoch == epoch and f.kind != "nan":
                _raise(f.kind, f"(trial {self.number}, after epoch {epoch})")


def _fired(point: str) -> bool:
    folder = _dir()
    return folder is not None and (folder / point.replace(":", "_")).exists()


def _pause_in_checkpoint_write(number: int) -> None:
    """Wrap syncmodel's atomic writer so that trial 1's second model.safetensors stops between its
    temporary file and the rename: the moment a non-atomic writer would leave half a file."""
    from syncmodel import checkpoint

    if number != 1 or _fired("checkpoint_write"):
        return
    real = getattr(checkpoint.atomic_write, "_real", checkpoint.atomic_write)
    writes = 0

    def paused(path: str | Path, write: Any) -> Path:
        nonlocal writes
        if Path(path).name != "model.safetensors":
            return real(path, write)
        writes += 1
        if writes != 2 or _fired("checkpoint_write"):
            return real(path, write)

        def write_then_pause(tmp: str) -> None:
            write(tmp)
            _mark("checkpoint_write", path=str(path), tmp=str(tmp))
            _pause()

        return real(path, write_then_pause)

    paused._real = real  # type: ignore[attr-defined]
    checkpoint.atomic_write = paused


def driver_point(point: str, count: int = 0) -> None:
    """Driver-side crash points: `ray_started`, `before_first_result` (count: trials started
    so far) and `after_trial` (count: trials recorded so far). SIGKILLs the driver when it
    matches."""
    crash = os.environ.get(CRASH_ENV, "")
    if not crash:
        return
    name, _, arg = crash.partition(":")
    if name != point:
        return
    if point == "before_first_result" and count != 1:
        return
    if point == "after_trial" and count != int(arg or 1):
        return
    if _fired(crash):
        return
    _mark(crash, count=count)
    _die()


class FaultHooks(Hooks):
    def trial(self, trial_name: str, trial_id: str, resume: Path | None) -> TrialFaults:
        return TrialFaults(trial_name, trial_id, resume)

    def driver_point(self, point: str, count: int = 0) -> None:
        driver_point(point, count)


HOOKS = FaultHooks()
