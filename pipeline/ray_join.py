"""Joining a Ray cluster (`syncstudy launch --address ADDR|auto`, or `RAY_ADDRESS`): which
address, which token, and a pre-flight check that fails in seconds with one line.

Ray 2.60 left to itself (measured on one machine, `ray start --head` with token auth): a
driver without `RAY_AUTH_MODE=token` retried for 20 s, logging "InvalidAuthToken" once a
second, and ended in a traceback (`ConnectionError`, exit 1), although the token was in
~/.ray/auth_token; a closed port took 40 s to time out; `RAY_AUTH_MODE=token` with an
unreadable `RAY_AUTH_TOKEN_PATH` aborts the process in C++. So, before the study writes
anything (its folder, its tracking store):

1. `join_address`: `--address`, else `RAY_ADDRESS`; `auto` is resolved the way Ray resolves it
   (`RAY_ADDRESS`, the cluster `ray start` last started here). None: start a local Ray.
2. `prepare_auth`: the token Ray would send (its order: `RAY_AUTH_TOKEN`,
   `RAY_AUTH_TOKEN_PATH`, ~/.ray/auth_token). Ray turns token mode on by itself only for an
   address it found on its own (`auto`), never for an explicit one; here a token that exists
   turns it on for any address unless `RAY_AUTH_MODE` is set (then it is respected).
3. `preflight`: a TCP connect (nothing listening, no route), then, in a thread with a hard
   deadline, a GCS client that fetches the cluster id (the token is checked there) and the
   cluster's Ray and Python versions (what `ray.init` would refuse later). Any failure is a
   `JoinError` (exit 2 in the CLI) naming the address, the cause and the fix.

The probe runs in this process (the driver imports Ray next anyway: a child process paid the
2-4 s import twice on a loaded 2-core machine) but in a thread: the GCS client's own timeouts
cannot be made short. A missing token file is caught before Ray sees it (Ray aborts on it).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from syncmodel.errors import SyncStudyError

ADDRESS_ENV = "RAY_ADDRESS"
MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_FILE = "~/.ray/auth_token"  # Ray's default (ray get-auth-token --generate)

BUDGET_S = 7.0  # the pre-flight check (Ray's import included): the CLI's own start takes 1-2 s
GCS_WAIT_MIN_S = 3.0  # the GCS's answer, however long the import took on a loaded machine
CONNECT_S = 2.0  # the TCP connect
DEFAULT_GCS_PORT = 6379

TOKEN_FIX = (
    f"copy the head's {DEFAULT_TOKEN_FILE} to this machine (same path), or set "
    f"{TOKEN_ENV} / {TOKEN_PATH_ENV}"
)


class JoinError(SyncStudyError):
    """The Ray cluster cannot be joined; one line: the address, the cause, the fix."""


@dataclass(frozen=True)
class Token:
    source: str  # where it came from, for messages: "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH=/p", ...
    value: str


# ----------------------------------------------------------------------------- address


def join_address(address: str | None) -> str | None:
    """The cluster to join: `address` (`--address`), else `RAY_ADDRESS`; `auto` resolved to
    HOST:PORT. None: no cluster named, the study starts its own local Ray."""
    if not address:
        address = os.environ.get(ADDRESS_ENV) or None
        if address is None or address == "local":
            return None
    if address == "auto":
        env = os.environ.get(ADDRESS_ENV)
        if env and env != "auto":
            address = env  # what a `ray job submit` driver is given: the GCS's HOST:PORT
        else:
            address = _auto_address()
    if "://" in address and not address.startswith("ray://"):
        raise JoinError(
            f"cannot join the Ray cluster at {address}: that is the dashboard's URL (what "
            f"`ray job submit --address` takes), not the cluster's GCS address: give "
            f"--address HOST:PORT as `ray start --head` printed it (port {DEFAULT_GCS_PORT} "
            f"by default), or run the study through `ray job submit -- syncstudy launch ... --address auto`"
        )
    return address


def _auto_address() -> str:
    """Ray's own lookup for `auto` (the cluster `ray start` last started on this machine)."""
    from ray._private import services

    try:
        found = services.canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError):
        found = None
    if not found:
        raise JoinError(
            "cannot join the Ray cluster at 'auto': no cluster found (RAY_ADDRESS is unset and "
            "`ray start` started none on this machine): start one with `ray start --head`, or "
            "give --address HOST:PORT"
        )
    return found


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise JoinError(
            f"cannot join the Ray cluster at {address!r}: not HOST:PORT: give the address "
            f"`ray start --head` printed (e.g. 10.0.0.5:{DEFAULT_GCS_PORT}), or 'auto'"
        )
    return host.strip("[]"), int(port)


# ----------------------------------------------------------------------------- token


def find_token() -> Token | None:
    """The token Ray would send, in Ray's order; None when there is none. A `RAY_AUTH_TOKEN_PATH`
    naming a missing or empty file is a `JoinError` (Ray would abort the process on it)."""
    value = os.environ.get(TOKEN_ENV, "").strip()
    if value:
        return Token(TOKEN_ENV, value)
    path_env = os.environ.get(TOKEN_PATH_ENV)
    if path_env:
        path = Path(path_env).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise JoinError(
                f"cannot join a Ray cluster: {TOKEN_PATH_ENV}={path_env} cannot be read "
                f"({exc.strerror or exc}): point it at the cluster's token file, or unset it"
            ) from None
        if not value:
            raise JoinError(
                f"cannot join a Ray cluster: {TOKEN_PATH_ENV}={path_env} is empty: point it at "
                "the cluster's token file, or unset it"
            )
        return Token(f"{TOKEN_PATH_ENV}={path_env}", value)
    default = Path(DEFAULT_TOKEN_FILE).expanduser()
    try:
        value = default.read_text().strip()
    except OSError:
        return None
    return Token(str(default), value) if value else None


def prepare_auth() -> Token | None:
    """Find the token and, when there is one and `RAY_AUTH_MODE` is unset, turn token mode on
    for this process and the ones it starts (token authentication stays on)."""
    token = find_token()
    mode = os.environ.get(MODE_ENV)
    if token is not None and mode is None:
        os.environ[MODE_ENV] = "token"
        if "ray._raylet" in sys.modules:
            # Ray caches its config and token in C++: reload both, as ray.init does when it
            # turns token mode on for a new local cluster.
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
    elif token is None and (mode or "").lower() == "token":
        raise JoinError(
            f"cannot join a Ray cluster: {MODE_ENV}=token but no token was found ({TOKEN_ENV}, "
            f"{TOKEN_PATH_ENV}, {DEFAULT_TOKEN_FILE}): {TOKEN_FIX}"
        )
    return token


# ----------------------------------------------------------------------------- pre-flight


def preflight(address: str, budget_s: float = BUDGET_S) -> None:
    """Check, within `budget_s`, that this process can join the cluster at `address` (as
    `join_address` returned it) with the token it has; a `JoinError` otherwise."""
    t0 = time.monotonic()
    host, port = _host_port(address)
    where = f"the Ray cluster at {address}"
    try:
        with socket.create_connection((host, port), timeout=CONNECT_S):
            pass
    except ConnectionRefusedError:
        raise JoinError(
            f"cannot join {where}: nothing listens on {host}:{port}: start the head there "
            f"(`ray start --head --port={port}`), or give --address as `ray start --head` printed it"
        ) from None
    except socket.gaierror as exc:
        raise JoinError(f"cannot join {where}: host {host!r} is unknown ({exc.strerror}): check the address") from None
    except OSError as exc:
        reason = f"no answer within {CONNECT_S:.0f} s" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise JoinError(
            f"cannot join {where}: {reason}: check that the head is up and that {host}:{port} "
            "is reachable from this machine (security group, firewall)"
        ) from None
    token = prepare_auth()
    if address.startswith("ray://"):
        return  # Ray Client: another protocol, checked by ray.init itself
    import ray._raylet  # noqa: F401 - here, not in the probe's thread: the import is not the GCS's time

    wait = max(budget_s - (time.monotonic() - t0), GCS_WAIT_MIN_S)
    reply = _probe(address, wait)
    if reply is None:
        raise JoinError(
            f"cannot join {where}: {host}:{port} accepts connections but no Ray answered within "
            f"{wait:.0f} s: give the GCS port (`ray start --head --port`, {DEFAULT_GCS_PORT} "
            "by default), not the dashboard's (8265) or the client's (10001)"
        )
    if reply.get("error") == "auth":
        mode = os.environ.get(MODE_ENV)
        if token is None:
            cause = f"the cluster wants a token and none was found ({TOKEN_ENV}, {TOKEN_PATH_ENV}, {DEFAULT_TOKEN_FILE})"
            fix = TOKEN_FIX
        elif (mode or "").lower() != "token":
            cause = f"the cluster wants a token and {MODE_ENV}={mode} keeps this process from sending it"
            fix = f"unset {MODE_ENV} (or set it to token)"
        else:
            cause = f"the cluster refused the token from {token.source}"
            fix = f"use the token the head was started with (the head's {DEFAULT_TOKEN_FILE} or {TOKEN_ENV})"
        raise JoinError(f"cannot join {where}: {cause}: {fix}")
    if "error" in reply:
        raise JoinError(
            f"cannot join {where}: no Ray of a compatible version answered ({reply['message']}): "
            f"check that {host}:{port} is the GCS port of a Ray {_ray_version()} cluster"
        )
    theirs = (reply.get("ray_version"), reply.get("python_version"))
    ours = (_ray_version(), platform.python_version())
    if theirs[0] and not _versions_match(theirs, ours):
        raise JoinError(
            f"cannot join {where}: it runs Ray {theirs[0]} on Python {theirs[1]}, this machine "
            f"Ray {ours[0]} on Python {ours[1]}: install the cluster's versions here "
            f"(pip install 'ray[default]=={theirs[0]}'), or submit the study to the cluster "
            "with `ray job submit -- syncstudy launch ... --address auto`"
        )


def _ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def _versions_match(theirs: tuple[str | None, str | None], ours: tuple[str, str]) -> bool:
    """Ray's own rule (ray._private.utils.check_version_info): the same Ray, and the same
    Python to the patch level unless RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor."""
    if theirs[0] != ours[0]:
        return False
    level = os.environ.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "patch")
    parts = 2 if level == "minor" else 3
    return (theirs[1] or "").split(".")[:parts] == ours[1].split(".")[:parts]


def _probe(address: str, timeout: float) -> dict | None:
    """`_ask_gcs` in a daemon thread; its reply, or None past `timeout` (the GCS client's own
    connect timeout is 14 to 40 s against a port that is not a GCS; its C++ wait releases
    the GIL, so the thread is simply left behind: the CLI exits with the error).

    Ray's C++ client logs each failed attempt to stderr (fd 2, not Python's sys.stderr): the
    error says it in one line, so fd 2 points at /dev/null while the probe runs."""
    box: dict[str, dict] = {}
    thread = threading.Thread(target=lambda: box.update(reply=_ask_gcs(address)), daemon=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        thread.start()
        thread.join(timeout)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return box.get("reply")


def _ask_gcs(address: str) -> dict:
    """Connect a GCS client (the token is checked on its first call, the cluster id) and read
    the cluster's metadata, which `ray start --head` writes: its Ray and Python versions."""
    try:
        from ray._common.usage.usage_constants import CLUSTER_METADATA_KEY
        from ray._private.ray_constants import KV_NAMESPACE_CLUSTER
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError

        try:
            client = GcsClient(address=address)
            raw = client.internal_kv_get(CLUSTER_METADATA_KEY, namespace=KV_NAMESPACE_CLUSTER, timeout=5)
        except AuthenticationError as exc:
            return {"error": "auth", "message": str(exc).split(".")[0]}
        meta = json.loads(raw) if raw else {}
        return {"ray_version": meta.get("ray_version"), "python_version": meta.get("python_version")}
    except Exception as exc:  # noqa: BLE001 - reported as one line by preflight
        text = str(exc).strip()
        return {"error": type(exc).__name__, "message": text.splitlines()[0] if text else type(exc).__name__}
