"""Fixtures for the cluster tests: PostgreSQL + `mlflow server` on 127.0.0.1, and a Ray
cluster of one head and two GPU workers on this machine, with token auth on.

Who talked to MLflow: every node of the test cluster starts with its own
MLFLOW_TRACKING_TOKEN (`node-head`, `node-worker0`, ...), which Ray's worker processes inherit
from their raylet (not from the driver); MLflow's client sends it as `Authorization: Bearer`,
and `RecordingProxy` (in front of the server, which ignores the header) notes it per request.
So each request is traced to the node whose process made it, and the study driver (token
`driver`) is told apart.

Without PostgreSQL's server binaries the service tests skip, naming the apt package; CI sets
SYNCSTUDY_REQUIRE_SERVICES=1 so that a missing package fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deploy.services import (
    MlflowServer,
    Postgres,
    ServiceError,
    find_pg_bindir,
    free_port,
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
class Request:
    method: str
    path: str
    token: str | None  # the bearer token: who sent it
    body: bytes = field(repr=False, default=b"")  # JSON API bodies only (not artifact uploads)


class RecordingProxy:
    """An HTTP reverse proxy on 127.0.0.1 that forwards everything to `upstream` and records
    each request's method, path, bearer token and (for API calls) body."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.requests: list[Request] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            return b"".join(chunks)
                        chunks.append(chunk)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self) -> None:
                body = self._body()
                auth = self.headers.get("Authorization") or ""
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
                upload = "/mlflow-artifacts/" in self.path
                with lock:
                    proxy.requests.append(Request(self.command, self.path, token, b"" if upload else body))
                skip = {"host", "content-length", "transfer-encoding", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in skip:
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self) -> None:
                try:
                    self._forward()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); nothing to answer

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class RayCluster:
    address: str  # GCS address, what `ray.init(address=...)` and `--address` take
    head_node_id: str
    worker_node_ids: list[str]
    env: dict[str, str]  # what a driver subprocess needs (token auth settings)
    node_tokens: dict[str, str]  # MLFLOW_TRACKING_TOKEN → the node id whose processes send it

    def node_of_token(self, token: str | None) -> str | None:
        return self.node_tokens.get(token or "")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """`ray.cluster_utils.Cluster`: a head with no GPU and two worker nodes declaring one
    logical GPU each (and 1 CPU), token auth on with a fresh token in a temp file, and a
    per-node MLFLOW_TRACKING_TOKEN (module doc)."""
    from ray._raylet import AuthenticationTokenLoader, Config
    from ray.cluster_utils import Cluster

    token_dir = Path(tempfile.mkdtemp(prefix="syncstudy-ray-token-"))
    token_file = token_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    names = (*auth_env, "RAY_AUTH_TOKEN", "MLFLOW_TRACKING_TOKEN")
    saved = {key: os.environ.get(key) for key in names}
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ.update(auth_env)
    # Ray caches its config and token in C++: reload both so this process (which starts the
    # head in-process) talks token auth to the nodes it starts.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    cluster = None
    try:
        os.environ["MLFLOW_TRACKING_TOKEN"] = "node-head"
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False},
        )
        tokens = {"node-head": cluster.head_node.node_id}
        workers = []
        for i in range(2):
            os.environ["MLFLOW_TRACKING_TOKEN"] = f"node-worker{i}"
            workers.append(cluster.add_node(num_cpus=1, num_gpus=1))
            tokens[f"node-worker{i}"] = workers[-1].node_id
        os.environ.pop("MLFLOW_TRACKING_TOKEN")
        cluster.wait_for_nodes()
        yield RayCluster(
            address=cluster.address,
            head_node_id=cluster.head_node.node_id,
            worker_node_ids=[w.node_id for w in workers],
            env=dict(auth_env),
            node_tokens=tokens,
        )
    finally:
        if cluster is not None:
            cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        shutil.rmtree(token_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def recorded_tracking(tracking_services) -> Iterator[RecordingProxy]:
    """The session's MLflow server behind a `RecordingProxy`: give trials `.url`."""
    proxy = RecordingProxy(tracking_services.url)
    try:
        yield proxy
    finally:
        proxy.close()
