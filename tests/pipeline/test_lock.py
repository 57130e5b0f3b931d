"""One driver per study folder (pipeline.lock): a second driver exits 2 naming the holder,
before any check or write of its own; a lock left by a dead process is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.lock import LOCK_FILE, StudyLocked, acquire

ROOT = Path(__file__).resolve().parents[2]


def _holder(storage: Path) -> subprocess.Popen:
    """Another process that takes the study's lock and keeps it until killed."""
    code = (
        "import sys, time; from pathlib import Path; from pipeline.lock import acquire; "
        "acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(300)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(storage)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_acquire_names_the_holder(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "study")
    try:
        with pytest.raises(StudyLocked) as err:
            acquire(tmp_path / "study")
        message = str(err.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and "since" in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    proc = _holder(tmp_path / "study")
    os.kill(proc.pid, signal.SIGKILL)  # the kernel drops its flock; its holder info stays
    proc.wait()
    with acquire(tmp_path / "study") as lock:
        assert lock.previous is not None and lock.previous["pid"] == proc.pid
        info = json.loads((tmp_path / "study" / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()


def test_a_reader_in_the_instant_of_launch_does_not_lock_the_driver_out(tmp_path: Path) -> None:
    # `held` (what `runs` and `pareto` ask) takes a shared lock for an instant; a driver that
    # starts in that instant waits it out instead of reporting the study as in use.
    import fcntl
    import threading

    acquire(tmp_path / "s").release()
    reader = os.open(tmp_path / "s" / LOCK_FILE, os.O_RDONLY)
    fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)
    let_go = threading.Event()

    def release() -> None:  # the reader lets go, as held() does
        let_go.set()
        os.close(reader)

    threading.Timer(0.3, release).start()
    with acquire(tmp_path / "s"):
        assert let_go.is_set()  # it waited for the reader, then took it


def test_a_reader_and_a_driver_never_collide(tmp_path: Path) -> None:
    from pipeline.lock import held

    storage = tmp_path / "s"
    acquire(storage).release()
    stop = False

    def read() -> None:
        while not stop:
            held(storage)

    import threading

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(300):
            acquire(storage).release()
    finally:
        stop = True
        thread.join()


def test_lock_is_released_at_the_end(tmp_path: Path) -> None:
    acquire(tmp_path / "s").release()
    acquire(tmp_path / "s").release()  # no StudyLocked: the first was let go


def test_launch_on_a_locked_folder_exits_2_before_its_checks(
    tmp_path: Path, write_spec, syncstudy, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """The lock comes before "a study already ran" and before any write: the second driver
    says who holds the folder, and the folder is left as it was."""
    storage = tmp_path / "study"
    (storage / "tune").mkdir(parents=True)  # a study ran here: without the lock, that message
    (storage / "tune" / "tuner.pkl").write_bytes(b"")
    spec = write_spec(tmp_path / "digits.yaml", storage=str(storage))
    proc = _holder(storage)
    try:
        before = sorted(p.name for p in storage.iterdir())
        ray_tmp = tmp_path / "ray-tmp"  # where a Ray started by these drivers would put its session
        monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
        for extra in ([], ["--resume"]):
            out = syncstudy("launch", str(spec), "--smoke", *extra)
            assert out.returncode == 2, out.stdout + out.stderr
            line = out.stderr.strip().splitlines()[-1]
            assert "in use by another driver" in line and f"pid {proc.pid}" in line, out.stderr
            assert "already ran" not in out.stderr and "Traceback" not in out.stderr
        assert not ray_tmp.exists()  # no Ray was started
        assert sorted(p.name for p in storage.iterdir()) == before  # no study.yaml, no instance
    finally:
        proc.kill()
        proc.wait()
