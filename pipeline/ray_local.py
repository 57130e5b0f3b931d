"""The private local Ray a study starts on this machine, and its start-up tricks: a token of
its own, trial modules preloaded in the workers Ray prestarts, Tune's per-actor environment
moved into the local Ray's environment; it listens on loopback only and ends with its driver.
Connecting to a cluster (`--address`) goes through `ray_session` too.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from pipeline.hooks import hooks

# What a trial's worker process imports before its first trial (a local Ray only): Ray
# starts its workers while the driver prepares the study, so the first trial does not wait
# seconds for torch. Evaluation adds its own modules (preload_modules).
TRIAL_MODULES = ("ray.tune", "syncmodel.training", "syncmodel.data.registry", "pipeline.trial")


def preload_modules(evaluate: bool = False) -> tuple[str, ...]:
    return TRIAL_MODULES + (("syncmodel.evaluation",) if evaluate else ())


@contextlib.contextmanager
def ray_session(
    address: str | None, num_cpus: int | None = None, preload: tuple[str, ...] = ()
) -> Iterator[bool]:
    """Connect to a cluster (`address`), reuse a Ray already started in this process, or start
    a local one (token authentication on, Ray's default for local clusters) and stop it after.
    Yields whether it started a local Ray.

    A local Ray listens on loopback only (`loopback_only`) and ends with this process, even a
    SIGKILLed one (`reaped_with_this_process`); tests/pipeline/test_loopback.py checks both.

    `preload`: modules the local Ray's worker processes import as they start (Ray's
    `preload_python_modules`); a cluster's workers are started by the cluster, not here.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
        try:
            yield False
        finally:
            ray.shutdown()
        return
    # address="local": a new cluster, never one that `ray start` left on this machine (plain
    # ray.init() would join that one).
    private_token()
    for key, value in TUNE_ACTOR_ENV.items():
        os.environ.setdefault(key, value)
    system = {"preload_python_modules": list(preload)} if preload else None
    with loopback_only(), reaped_with_this_process() as started:
        ray.init(
            address="local", num_cpus=num_cpus, _node_ip_address=LOOPBACK, _system_config=system, **kwargs
        )
        hooks().driver_point("ray_started")  # a test seam (pipeline.hooks): a driver killed here
        started()
        try:
            yield True
        finally:
            ray.shutdown()


# Tune's environment for every trainable actor (ray.tune.execution.class_cache.DEFAULT_ENV_VARS
# in Ray 2.60): set in the local Ray's environment instead (see _actors_in_prestarted_workers).
TUNE_ACTOR_ENV = {"PL_DISABLE_FORK": "1"}


def actors_in_prestarted_workers() -> None:
    """Let the local Ray's trial actors start in the workers Ray prestarted (and preloaded).

    Tune gives every trainable actor `runtime_env={"env_vars": {"PL_DISABLE_FORK": "1"}}`
    (for PyTorch Lightning). A runtime env unlike the prestarted workers' (none) makes Ray
    start a fresh worker process for the first trial: 3 s of Python, Ray and torch imports
    on this project's 2-core machine. `ray_session` sets those variables in this process's
    environment before Ray starts, so that every process of the local Ray inherits them;
    here Tune's per-actor copy is dropped (for the rest of this process), but only if it
    holds nothing else (a Ray whose Tune adds other variables keeps them, and its first
    trial just starts slower: tests/pipeline/test_startup.py notices). Only for the local
    Ray `ray_session` started: a cluster's workers (`--address`) do not inherit this
    environment.

    Called from the main thread once the preparing thread is done: two threads importing
    ray.tune at once can fail (its circular imports with ray.train).
    """
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict) and all(os.environ.get(k) == v for k, v in defaults.items()):
        defaults.clear()


def private_token() -> None:
    """A token of this process's own for the local Ray it starts (token auth stays on).

    Ray's default token file (~/.ray/auth_token) is shared by everything run under the same
    home folder; RAY_AUTH_TOKEN outranks it and is inherited by the cluster's processes only.
    A token the user set (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) is kept. RAY_AUTH_MODE is
    left to ray.init, which turns token mode on for a new local cluster and refreshes this
    process's Ray config; setting it here would leave that config stale (Ray imported).
    """
    import secrets

    if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


# --------------------------------------------------------------------------- loopback only

LOOPBACK = "127.0.0.1"
# Ray 2.60 (ray._private.services.get_node_ip_address, read through resolve_ip_for_localhost)
# replaces a loopback node address by the machine's outward address unless this is False;
# the variable is how Ray's own macOS/Windows default (a local-only Ray) is asked for.
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Every process of the local Ray started inside listens on loopback only.

    Ray derives each bind address from the node's address: with the node at 127.0.0.1 the GCS,
    raylet and worker gRPC servers (C++: listen_to_localhost_only), the dashboard agent, the
    runtime-env agent and the metrics exporters bind 127.0.0.1 instead of all interfaces or
    the machine's outward address (tests/pipeline/test_loopback.py lists them). Ray rewrites
    a loopback `_node_ip_address` to the outward address unless clusters are off
    (ray_constants.ENABLE_RAY_CLUSTER, read from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray is
    imported): both are set here, the variable for the processes Ray starts and the constant
    for this one (Ray is already imported), and restored afterwards, so that a later
    `--address` in this process still reports its outward address to the cluster.
    """
    from ray._private import ray_constants

    saved_env = os.environ.get(_LOCAL_ONLY_ENV)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOCAL_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        else:
            os.environ[_LOCAL_ONLY_ENV] = saved_env


# --------------------------------------------------------------------------- gone with the driver

REAP_GRACE_S = 2.0  # SIGTERM, then SIGKILL for what is still there after this
REAP_POLL_S = 0.5  # how often the reaper notes the processes of the session

# The reaper: a bare Python (-I -S: no site, no project imports; milliseconds to start) that
# reads a pipe only the driver holds. The driver writes the pids of the processes ray.init
# started (GCS, raylet, monitors); every REAP_POLL_S the reaper notes them and all their
# descendants (the raylet's agents and workers), each with its start time (a reused pid is
# never taken for one of them). The pipe reads EOF when the driver is gone, however it went
# (SIGKILL included), or when `ray_session` closes it after ray.shutdown(): then every noted
# process still there gets SIGTERM, and SIGKILL after REAP_GRACE_S. Linux only (/proc).
_REAPER = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
grace, poll, me = float(sys.argv[1]), float(sys.argv[2]), os.getpid()
def stat(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            text = fh.read()
    except OSError:
        return None
    f = text[text.rindex(b")") + 2:].split()
    return f[0], int(f[1]), int(f[19])  # state, ppid, start time
roots, known, buf = set(), {}, b""
def note():
    procs = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            s = stat(int(name))
            if s is not None:
                procs[int(name)] = s
    children = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    todo = [pid for pid in roots if pid in procs]
    while todo:
        pid = todo.pop()
        if known.setdefault(pid, procs[pid][2]) == procs[pid][2]:
            todo.extend(children.get(pid, ()))
def alive():
    out = []
    for pid, start in known.items():
        s = stat(pid)
        if pid != me and s is not None and s[2] == start and s[0] not in (b"Z", b"X"):
            out.append(pid)
    return out
while True:
    if select.select([0], [], [], poll)[0]:
        data = os.read(0, 4096)
        if not data:
            break
        buf += data
        *lines, buf = buf.split(b"\n")
        roots.update(int(word) for line in lines for word in line.split())
    note()
for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
    pids = alive()
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    end = time.monotonic() + wait
    while time.monotonic() < end and alive():
        time.sleep(0.05)
"""


@contextlib.contextmanager
def reaped_with_this_process() -> Iterator[Any]:
    """The local Ray started inside is ended when this process ends, however it ends.

    Ray ties its GCS, raylet, log monitor and dashboard to the driver (PR_SET_PDEATHSIG), but
    not what the raylet starts: after a SIGKILLed driver its dashboard and runtime-env agents
    notice their dead raylet and then spend up to a minute reporting it to the dead GCS
    (ray._private.process_watcher: publish_error with a 60 s timeout). The reaper (`_REAPER`)
    ends every process of the session at once instead; after a normal ray.shutdown() it finds
    nothing left, or ends what shutdown left behind.

    Yields a function to call once Ray has started: it hands the reaper Ray's processes.
    """
    import subprocess
    import sys

    if not sys.platform.startswith("linux"):
        yield lambda: None
        return
    read_end, write_end = os.pipe()  # both close-on-exec: Ray's processes never hold the write end
    try:
        reaper = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _REAPER, str(REAP_GRACE_S), str(REAP_POLL_S)],
            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # no Ctrl-C or hang-up of the terminal reaches it
        )  # fmt: skip
    finally:
        os.close(read_end)

    def started() -> None:
        pids = _ray_processes()
        if pids:
            os.write(write_end, (" ".join(map(str, pids)) + "\n").encode())

    try:
        yield started
    finally:
        os.close(write_end)  # EOF: the reaper ends what ray.shutdown() left, then exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            reaper.wait(REAP_GRACE_S + 2.0)  # nothing left (the usual case): milliseconds


def _ray_processes() -> list[int]:
    """The pids of the processes ray.init started in this process (Ray 2.60's Node keeps them
    in `all_processes`: kind -> [ProcessInfo(process=Popen)])."""
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    infos = getattr(node, "all_processes", None) or {}
    return [
        info.process.pid
        for group in infos.values()
        for info in group
        if getattr(info, "process", None) is not None
    ]
