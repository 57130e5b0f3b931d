"""A local study's Ray stays on this machine and ends with its driver (issue 14, item 11).

One smoke study (`syncstudy launch --smoke`, a driver of its own) is watched from outside:
every socket its processes listen on, sampled every few tenths of a second from its start
until a trial has trained an epoch, must be on a loopback address; then the driver is SIGKILLed and every
process it had must be gone within seconds (pipeline.ray_local: `loopback_only`,
`reaped_with_this_process`).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

import pytest

pytestmark = pytest.mark.slow  # a study of its own, watched and killed: the whole suite only

try:
    import psutil
except ImportError:  # Ray vendors it (ray/thirdparty_files), on the path once Ray is imported
    __import__("ray")  # puts ray/thirdparty_files on sys.path
    import psutil

GONE_WITHIN_S = 15.0  # after the driver's SIGKILL; Ray alone left agents for about a minute
WATCH_GUARD_S = 600.0  # a hang guard for the watch; it ends when a trial has trained an epoch


@dataclass
class Watched:
    sockets: dict[tuple[str, int], str] = field(default_factory=dict)  # (ip, port) -> process
    tree: list[psutil.Process] = field(default_factory=list)  # the driver's descendants at the kill
    trained: bool = False  # a trial's actor was seen (the study was past Ray's start-up)
    output: str = ""
    left: list[str] = field(default_factory=list)  # processes still there GONE_WITHIN_S after the kill


def _bound(proc: psutil.Process) -> list[tuple[str, int]]:
    """(ip, port) of every TCP socket `proc` listens on and every UDP socket it has bound."""
    out = []
    for c in proc.net_connections(kind="inet"):
        listening = c.status == psutil.CONN_LISTEN if c.type == socket.SOCK_STREAM else bool(c.laddr)
        if listening:
            out.append((c.laddr.ip, c.laddr.port))
    return out


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 (a dual-stack socket)
    return (mapped or addr).is_loopback


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory, write_spec, launch_driver) -> Watched:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("loopback")
    spec = write_spec(
        tmp / "digits.yaml", samples=2, storage=str(tmp / "study"), train={"epochs": 60, "n_train": 300}
    )
    proc: subprocess.Popen = launch_driver(spec)
    driver = psutil.Process(proc.pid)
    seen = Watched()
    try:
        deadline = time.monotonic() + WATCH_GUARD_S
        storage = tmp / "study"
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                tree = [driver, *driver.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    title = " ".join(p.cmdline())[:80] or p.name()
                    for addr in _bound(p):
                        seen.sockets.setdefault(addr, title)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            # Watched until a trial has trained an epoch and Tune has stored its checkpoint:
            # by then every process of the study (GCS, raylet, agents, the trial's worker)
            # has started and bound what it binds. Observed, not a time after the start.
            if any(storage.glob("tune/*/checkpoint_000000")):
                seen.trained = True
                seen.tree = tree[1:]
                break
            time.sleep(0.3)  # the sampling period of the watch, not a wait for the work
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: what it started must follow
        proc.wait(timeout=30)
        end = time.monotonic() + GONE_WITHIN_S
        while time.monotonic() < end and any(_alive(p) for p in seen.tree):
            time.sleep(0.2)
        seen.left = [f"{p.pid} {p.name()}" for p in seen.tree if _alive(p)]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leave nothing behind, whatever the outcome
        except ProcessLookupError:
            pass
        for p in seen.tree:
            if _alive(p):
                p.kill()
        seen.output = proc.stdout.read() if proc.stdout else ""  # type: ignore[union-attr]
    assert seen.trained, "no trial started in time:\n" + seen.output[-3000:]
    return seen


def test_every_socket_of_a_local_study_is_on_loopback(watched: Watched) -> None:
    assert watched.sockets, "no listening socket seen: the watch is broken"
    outside = {f"{ip}:{port}": who for (ip, port), who in watched.sockets.items() if not _is_loopback(ip)}
    assert not outside, outside


def test_the_local_rays_processes_end_with_a_killed_driver(watched: Watched) -> None:
    assert len(watched.tree) >= 4, watched.tree  # GCS, raylet, agents, workers: the tree was seen
    assert not watched.left, f"still running {GONE_WITHIN_S:g} s after the driver's SIGKILL: {watched.left}"


def test_loopback_check_itself() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::") and not _is_loopback("192.0.2.2")

