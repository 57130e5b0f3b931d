"""Ray nodes started the way users start them (`ray start --head`, `ray start --address`), for
the cluster journey tests: each cluster in its own short temp folder (Ray's socket paths are
limited to ~107 characters), with its own ports, its own token and its own HOME, so the
user's ~/.ray is never read or written. `stop()` takes down everything whose command line
names that folder (the nodes' processes, their workers, job drivers in their own sessions).

Ray 2.60 on Linux maps 127.0.0.1 to the machine's own IP for its internal addresses and its
GCS listens on every interface; the tests address the cluster through 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from deploy.services import free_port, free_ports

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 240  # `ray start` on a loaded 2-core machine
# Environment a test must not pass on from whoever runs pytest: it would point Ray elsewhere.
FOREIGN = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI")


def exe(name: str) -> str:
    """A console script of this venv (ray, syncstudy)."""
    return str(BIN / name)


@dataclass
class Cluster:
    root: Path  # everything of this cluster lives here: home/, ray/, logs, the study
    token_file: Path
    gcs_port: int = 0
    dashboard_port: int = 0
    pgids: list[int] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def env(self, **extra: str) -> dict[str, str]:
        """A shell of a user of this cluster: its own HOME, the token file named, token mode
        on (what `ray` CLI commands need), the venv first on PATH."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        env.update(
            HOME=str(self.home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file),
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
            RAY_USAGE_STATS_ENABLED="0",
        )  # fmt: skip
        env.update(extra)
        return env

    def _start(self, args: list[str], log: str, *, agent_port: int) -> None:
        with open(self.root / log, "ab") as out:
            proc = subprocess.Popen(
                [exe("ray"), "start", *args, "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                 f"--dashboard-agent-listen-port={agent_port}", "--object-store-memory=100000000"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env(),
                cwd=self.root, start_new_session=True,
            )  # fmt: skip
        # Its daemons stay in the process group `ray start` led: remember it for stop().
        self.pgids.append(proc.pid)
        if proc.wait(timeout=START_TIMEOUT_S) != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed: {(self.root / log).read_text()[-3000:]}")

    def start_head(self, *, num_cpus: int = 1, num_gpus: int = 0, dashboard: bool = True) -> None:
        # Four different ports: picked one at a time they can repeat, and Ray refuses a head
        # whose components share one.
        self.gcs_port, self.dashboard_port, client_port, agent_port = free_ports(4)
        self._start(
            ["--head", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
             f"--temp-dir={self.root / 'ray'}", f"--include-dashboard={str(dashboard).lower()}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
             f"--ray-client-server-port={client_port}"],
            "head.log", agent_port=agent_port,
        )  # fmt: skip

    def add_worker(self, *, num_cpus: int = 1, num_gpus: int = 0) -> None:
        self._start(
            [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}"],
            f"worker{len(self.pgids)}.log", agent_port=free_port(),
        )

    def stop(self) -> None:
        """SIGKILL the nodes' process groups, then every process left whose command line
        names this cluster's folder (job drivers run in sessions of their own)."""
        for pgid in self.pgids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            left = _processes_naming(self.root)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)


def _processes_naming(root: Path) -> list[int]:
    mark = str(root).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        # A Ray worker's command line names the session folder; a job driver's names the spec
        # or storage under root; anything else this cluster started has HOME=root/home.
        if mark in cmdline or b"HOME=" + mark + b"/home\x00" in environ:
            found.append(int(entry.name))
    return found


def new_cluster() -> Cluster:
    root = Path(tempfile.mkdtemp(prefix="ssj-"))
    (root / "home").mkdir()
    token_file = root / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    return Cluster(root, token_file)


@contextlib.contextmanager
def cluster_of(*, workers: list[dict] | None = None, dashboard: bool = True):
    """A head (no GPU, 1 CPU) and `workers` (kwargs of add_worker), stopped and deleted after."""
    cluster = new_cluster()
    try:
        cluster.start_head(dashboard=dashboard)
        for kwargs in workers or []:
            cluster.add_worker(**kwargs)
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(cluster.root, ignore_errors=True)
