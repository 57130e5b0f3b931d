"""Start and stop the tracking services of a cluster study: a private PostgreSQL and an
`mlflow server` backed by it, with proxied artifacts. Used by the cluster head and the tests.

From Python::

    with tracking_services(Path("/srv/syncstudy")) as (pg, server):
        print(server.url)  # hand this to every trial as MLFLOW_TRACKING_URI

From a shell (what `cluster.yaml` runs on the head; `down` stops both)::

    python -m deploy.services up --root ~/syncstudy-services --host 0.0.0.0 --port 5000
    python -m deploy.services down --root ~/syncstudy-services

The database password comes from `SYNCSTUDY_DB_PASSWORD` or, if that is unset, is generated
once and kept in `<root>/db_password` (mode 0600); it never appears on a command line (the
server gets it as `PGPASSWORD`). PostgreSQL listens on 127.0.0.1 only: nothing but the MLflow
server talks to it. PostgreSQL refuses to run as root, so as root its commands run as the
`postgres` system user (Debian's `postgresql` package creates it).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from syncmodel.errors import SyncStudyError

PASSWORD_ENV = "SYNCSTUDY_DB_PASSWORD"
PG_BINDIR_ENV = "SYNCSTUDY_PG_BINDIR"


class ServiceError(SyncStudyError):
    """A tracking service could not be started or stopped; the message says what to do."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` different TCP ports nothing listens on right now. The sockets are held bound
    together while the OS picks, so no two are the same: ports picked one at a time, each
    socket closed before the next bind, can come back equal (a head started with its
    dashboard and client server on one port refuses to start)."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def find_pg_bindir() -> Path:
    """The folder holding `initdb` and `pg_ctl`: $SYNCSTUDY_PG_BINDIR, PATH, or the newest
    /usr/lib/postgresql/<version>/bin (Debian/Ubuntu keep them off PATH)."""
    override = os.environ.get(PG_BINDIR_ENV)
    candidates: list[Path] = [Path(override)] if override else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates += [Path(p) for p in reversed(versions)]
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    raise ServiceError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install them "
        "(Debian/Ubuntu: apt-get install postgresql) or set "
        f"{PG_BINDIR_ENV} to the folder that holds them"
    )


def _run_as() -> str | None:
    """PostgreSQL will not run as root: then run its commands as the `postgres` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise ServiceError(
            "running as root, and there is no 'postgres' user to run PostgreSQL as: "
            "install Debian's postgresql package (it creates the user) or run as a normal user"
        ) from exc
    return "postgres"


def _pg_cmd(run_as: str | None, *args: str | Path) -> list[str]:
    cmd = [str(a) for a in args]
    return ["runuser", "-u", run_as, "--", *cmd] if run_as else cmd


def _check(cmd: list[str], what: str, timeout: float = 120) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise ServiceError(f"{what} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc.stdout


def _give_to(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A running private PostgreSQL cluster (one database, one user that owns it)."""

    data_dir: Path
    host: str
    port: int
    user: str
    database: str
    password: str = field(repr=False)
    bindir: Path
    run_as: str | None = None

    @property
    def uri(self) -> str:
        """SQLAlchemy URI without the password (give the password as PGPASSWORD). The driver is
        named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which we do not ship."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.database}"

    def connect(self, database: str | None = None) -> Any:
        """A psycopg2 connection (autocommit off), for queries from tests and tools."""
        import psycopg2

        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=database or self.database,
            connect_timeout=10,
        )

    def is_running(self) -> bool:
        proc = subprocess.run(
            _pg_cmd(self.run_as, self.bindir / "pg_ctl", "status", "-D", self.data_dir),
            capture_output=True,
            text=True,
        )
        return proc.returncode == 0

    def stop(self) -> None:
        if self.data_dir.exists() and self.is_running():
            _check(
                _pg_cmd(self.run_as, self.bindir / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w"),
                "pg_ctl stop",
            )


def start_postgres(
    data_dir: str | Path,
    *,
    password: str,
    port: int | None = None,
    host: str = "127.0.0.1",
    user: str = "mlflow",
    database: str = "mlflow",
    timeout: float = 60,
) -> Postgres:
    """Initialise `data_dir` if it is new, then start PostgreSQL on `host:port` (TCP only
    from that address, password auth) and make sure `database` exists.

    Idempotent: an already running cluster in `data_dir` is reused. As root, `data_dir` is
    handed to the `postgres` user, so its parent folders must let that user through (a
    pytest tmp_path does not: use tempfile.mkdtemp())."""
    data_dir = Path(data_dir).absolute()
    bindir = find_pg_bindir()
    run_as = _run_as()
    port = port or free_port(host)
    pg = Postgres(data_dir, host, port, user, database, password, bindir, run_as)

    if not (data_dir / "PG_VERSION").exists():
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _give_to(data_dir, run_as)
        if run_as and subprocess.run(_pg_cmd(run_as, "test", "-w", data_dir)).returncode != 0:
            raise ServiceError(
                f"the '{run_as}' user cannot reach {data_dir}: as root, put the data dir under "
                "folders that user may enter (tempfile.mkdtemp() in /tmp works; pytest's "
                "tmp_path does not)"
            )
        # initdb reads the superuser password from a file: one only it can read, removed after.
        fd, pwfile = tempfile.mkstemp(prefix="syncstudy-pw-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            _give_to(Path(pwfile), run_as)
            _check(
                _pg_cmd(
                    run_as, bindir / "initdb", "-D", data_dir, "-U", user, f"--pwfile={pwfile}",
                    "--auth=scram-sha-256", "--encoding=UTF8", "--no-instructions",
                ),
                "initdb (are the parent folders of the data dir readable by the postgres user?)",
            )
        finally:
            os.unlink(pwfile)
        # Later lines in postgresql.conf win: pin the address, port and socket folder so that
        # a restart (pg_ctl start, reboot of the head) comes back the same way.
        with open(data_dir / "postgresql.conf", "a") as conf:
            conf.write(
                "\n# syncstudy: private instance for the MLflow server only\n"
                f"listen_addresses = '{host}'\nport = {port}\n"
                f"unix_socket_directories = '{data_dir}'\n"
            )
    else:
        pg.port = _conf_port(data_dir) or port

    if not pg.is_running():
        _check(
            _pg_cmd(
                run_as, bindir / "pg_ctl", "start", "-D", data_dir, "-l", data_dir / "postgres.log",
                "-w", "-t", str(int(timeout)),
            ),
            f"pg_ctl start (log: {data_dir / 'postgres.log'})",
            timeout=timeout + 10,
        )
    _ensure_database(pg)
    return pg


def _conf_port(data_dir: Path) -> int | None:
    port = None
    for line in (data_dir / "postgresql.conf").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port":
            port = int(value.split("#")[0].strip())
    return port


def _ensure_database(pg: Postgres) -> None:
    conn = pg.connect(database="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{pg.database}"')
    finally:
        conn.close()


# --------------------------------------------------------------------------- MLflow server


@dataclass
class MlflowServer:
    """A running `mlflow server` (its own process group, so stop() takes its workers too)."""

    url: str
    pid: int
    artifacts_destination: str  # a folder on the server's machine, or s3://... etc.
    log_path: Path

    def stop(self, timeout: float = 20) -> None:
        _stop_group(self.pid, timeout)


def start_mlflow_server(
    backend_uri: str,
    artifacts_destination: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 1,
    password: str | None = None,
    log_path: str | Path | None = None,
    timeout: float = 180,
) -> MlflowServer:
    """Run `mlflow server` with proxied artifacts (`--serve-artifacts`): clients log runs and
    upload artifacts over HTTP only, the server writes them to `artifacts_destination` (a
    local folder, or an object-store URI such as s3://bucket/prefix); new experiments get
    `mlflow-artifacts:/` roots. Returns once /health answers.

    `password` reaches the database driver as PGPASSWORD, never on the command line."""
    destination = str(artifacts_destination)
    if "://" not in destination:
        local = Path(destination).absolute()
        local.mkdir(parents=True, exist_ok=True)
        destination = str(local)
    port = port or free_port("127.0.0.1" if host in ("0.0.0.0", "") else host)
    log_path = Path(log_path) if log_path else Path(tempfile.mkdtemp(prefix="mlflow-")) / "server.log"
    env = dict(os.environ)
    # MLflow 3's server also starts a job runner and a pool of huey consumers (GenAI jobs: prompt
    # optimisation, trace roll-ups); a study tracker uses none of them, so keep the head lean.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--serve-artifacts", "--artifacts-destination", destination,
        "--host", host, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    client_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    server = MlflowServer(f"http://{client_host}:{port}", proc.pid, destination, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"mlflow server exited with {proc.returncode}: {_tail(log_path)}")
        if _healthy(server.url) and _store_ready(server.url, deadline - time.monotonic()):
            return server
        time.sleep(0.5)
    server.stop()
    raise ServiceError(f"mlflow server did not answer on {server.url} within {timeout:.0f} s: {_tail(log_path)}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _store_ready(url: str, timeout: float) -> bool:
    """/health answers before the server has opened its backend store, which it does on the
    first API call (seconds on a busy machine: engine, schema check). Make that call here, so
    that clients with short timeouts do not pay for it."""
    query = urllib.parse.urlencode({"experiment_name": "Default"})
    try:
        with urllib.request.urlopen(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=max(timeout, 1)
        ) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pid` (one we started), SIGKILL it if it lingers."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- both together


def read_or_create_password(root: Path) -> str:
    """$SYNCSTUDY_DB_PASSWORD, else `<root>/db_password` (created once, mode 0600)."""
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    path = root / "db_password"
    if path.exists():
        return path.read_text().strip()
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    return password


@contextlib.contextmanager
def tracking_services(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    pg_data_dir: str | Path | None = None,
    workers: int = 1,
) -> Iterator[tuple[Postgres, MlflowServer]]:
    """PostgreSQL + `mlflow server` under `root` (artifacts in `<root>/artifacts`), both
    stopped on exit. `pg_data_dir` defaults to `<root>/pgdata`."""
    root = Path(root).absolute()
    password = read_or_create_password(root)
    pg = start_postgres(pg_data_dir or root / "pgdata", password=password)
    try:
        server = start_mlflow_server(
            pg.uri, root / "artifacts", host=host, port=port, workers=workers,
            password=password, log_path=root / "mlflow-server.log",
        )  # fmt: skip
        try:
            yield pg, server
        finally:
            server.stop()
    finally:
        pg.stop()


# --------------------------------------------------------------------------- CLI (head node)


def _cli_up(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    if _run_as():
        root.chmod(0o711)  # as root, PostgreSQL runs as `postgres` and must reach root/pgdata
    _cli_stop_server(root)  # a restarted head (ray up again) gets a fresh server
    password = read_or_create_password(root)
    pg = start_postgres(root / "pgdata", password=password, port=args.pg_port)
    server = start_mlflow_server(
        pg.uri, args.artifacts or root / "artifacts", host=args.host, port=args.port,
        workers=args.workers, password=password, log_path=root / "mlflow-server.log",
    )  # fmt: skip
    (root / "mlflow-server.pid").write_text(str(server.pid))
    print(f"postgres {pg.uri} (data {pg.data_dir}); mlflow server {server.url} (pid {server.pid})")
    return 0


def _cli_stop_server(root: Path) -> None:
    pid_file = root / "mlflow-server.pid"
    if pid_file.exists():
        _stop_group(int(pid_file.read_text()), timeout=20)
        pid_file.unlink()


def _cli_down(args: argparse.Namespace) -> int:
    root = Path(args.root).expanduser().absolute()
    _cli_stop_server(root)
    data_dir = root / "pgdata"
    if (data_dir / "PG_VERSION").exists():
        pg = Postgres(data_dir, "127.0.0.1", 0, "", "", "", find_pg_bindir(), _run_as())
        pg.stop()
    print(f"stopped the services under {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.services", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL and the mlflow server (detached)")
    up.add_argument("--root", required=True, help="folder for pgdata/, artifacts/, logs, password")
    up.add_argument("--host", default="127.0.0.1", help="MLflow bind address (0.0.0.0: the VPC, via the security group)")
    up.add_argument("--port", type=int, default=5000)
    up.add_argument("--pg-port", type=int, default=5432)
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--artifacts", help="artifact destination (default <root>/artifacts; s3://... works too)")
    down = sub.add_parser("down", help="stop both")
    down.add_argument("--root", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _cli_up(args) if args.command == "up" else _cli_down(args)
    except SyncStudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
