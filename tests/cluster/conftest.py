"""Fixtures for the cluster tests: PostgreSQL + `mlflow server` on 127.0.0.1, and a Ray
cluster of one head and two GPU workers on this machine, with token auth on.

Without PostgreSQL's server binaries the service tests skip, naming the apt package; CI sets
SYNCSTUDY_REQUIRE_SERVICES=1 so that a missing package fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.services import (
    MlflowServer,
    Postgres,
    ServiceError,
    find_pg_bindir,
    start_mlflow_server,
    start_postgres,
)


@dataclass
class TrackingServices:
    pg: Postgres
    server: MlflowServer
    root: Path  # holds artifacts/ (the server's artifact destination) and the server log

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def artifacts_dir(self) -> Path:
        return Path(self.server.artifacts_destination)


def _require_pg() -> None:
    try:
        find_pg_bindir()
    except ServiceError as exc:
        if os.environ.get("SYNCSTUDY_REQUIRE_SERVICES") == "1":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def tracking_services() -> Iterator[TrackingServices]:
    """A private PostgreSQL and an `mlflow server --serve-artifacts` on it, both on loopback
    ports the OS picked; stopped and deleted at the end of the session."""
    _require_pg()
    # mkdtemp, not tmp_path: as root PostgreSQL runs as `postgres`, which must enter the
    # folder, and pytest's tmp_path parents are private to root.
    root = Path(tempfile.mkdtemp(prefix="syncstudy-services-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="syncstudy-pg-"))
    password = secrets.token_urlsafe(16)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        stack.callback(shutil.rmtree, pg_dir, ignore_errors=True)
        pg = start_postgres(pg_dir, password=password)
        stack.callback(pg.stop)
        server = start_mlflow_server(
            pg.uri, root / "artifacts", password=password, log_path=root / "mlflow-server.log"
        )
        stack.callback(server.stop)
        yield TrackingServices(pg, server, root)


@dataclass
class RayCluster:
    address: str  # GCS address, what `ray.init(address=...)` and `--address` take
    head_node_id: str
    worker_node_ids: list[str]
    env: dict[str, str]  # what a driver subprocess needs (token auth settings)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """`ray.cluster_utils.Cluster`: a head with no GPU and two worker nodes declaring one
    logical GPU each (and 1 CPU), token auth on with a fresh token in a temp file."""
    from ray._raylet import AuthenticationTokenLoader, Config
    from ray.cluster_utils import Cluster

    token_dir = Path(tempfile.mkdtemp(prefix="syncstudy-ray-token-"))
    token_file = token_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    saved = {key: os.environ.get(key) for key in (*auth_env, "RAY_AUTH_TOKEN")}
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(auth_env)
    # Ray caches its config and token in C++: reload both so this process (which starts the
    # head in-process) talks token auth to the nodes it starts.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
    )
    try:
        workers = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        yield RayCluster(
            address=cluster.address,
            head_node_id=cluster.head_node.node_id,
            worker_node_ids=[w.node_id for w in workers],
            env=dict(auth_env),
        )
    finally:
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        shutil.rmtree(token_dir, ignore_errors=True)
