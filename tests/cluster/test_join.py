"""Joining a cluster that cannot be joined: `syncstudy launch --address` against a real `ray
start --head` (token authentication on) fails in its pre-flight check, before Ray's own
connect (which retried for 20-40 s), with one line that names the address, the cause and the
fix, exit 2, and writes nothing: no study folder, no tracking store, nothing in the working
folder, no Ray session (pipeline.ray_join; docs/cluster.md, "When joining fails"). How long the
refusal takes is the pre-flight's budget (`pipeline.ray_join.BUDGET_S`), not asserted here: a
test that timed it would fail on a machine slow enough to import Ray slowly.

One head serves the tests that need one; each test has its own folder and HOME (the token
file it may find is its own), so none reads the user's ~/.ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from raystart import REPO, Cluster, cluster_of, exe

from deploy.services import free_port

pytestmark = pytest.mark.cluster

SPEC = REPO / "studies" / "digits.yaml"


@pytest.fixture(scope="module")
def head() -> Iterator[Cluster]:
    with cluster_of(dashboard=False) as cluster:
        yield cluster


def launch(address: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`syncstudy launch studies/digits.yaml --smoke --address ADDRESS` as a user runs it, from
    `work`, with the study folder and tracking store under `work` (which must stay empty)."""
    cmd = [
        exe("syncstudy"), "launch", str(SPEC), "--smoke", "--address", address,
        "--storage", str(work / "study"), "--tracking-uri", f"sqlite:///{work / 'tracking' / 'mlflow.db'}",
    ]  # fmt: skip
    # Where a Ray started by this driver would put its session: outside `work`, which must
    # stay empty, and checked by check_refused.
    env = {**env, "RAY_TMPDIR": str(work.parent / f"{work.name}-ray-tmp")}
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell with nothing of Ray's set, HOME at `home`, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env.update(HOME=str(home), **extra)
    return env


def check_refused(proc: subprocess.CompletedProcess, work: Path, address: str, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("syncstudy launch: error: cannot join"), line
    assert address in line, line
    for word in words:
        assert word in line, (word, line)
    assert not (work.parent / f"{work.name}-ray-tmp").exists(), "a Ray session was started"
    assert sorted(p.name for p in work.iterdir()) == ["home"], list(work.rglob("*"))
    return line


def workdir(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path


def test_no_token(head: Cluster, tmp_path: Path) -> None:
    work = workdir(tmp_path)
    proc = launch(head.address, work, user_env(work / "home"))
    check_refused(proc, work, head.address, "none was found", "~/.ray/auth_token")


def test_wrong_token(head: Cluster, tmp_path: Path) -> None:
    work = workdir(tmp_path)
    wrong = work / "home" / "other_token"
    wrong.write_text("0" * 64)
    proc = launch(head.address, work, user_env(work / "home", RAY_AUTH_TOKEN_PATH=str(wrong)))
    check_refused(proc, work, head.address, "refused the token", str(wrong))


def test_nothing_listening(tmp_path: Path) -> None:
    work = workdir(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    proc = launch(address, work, user_env(work / "home"))
    check_refused(proc, work, address, "nothing listens", "ray start --head")


def test_another_ray_version(head: Cluster, tmp_path: Path) -> None:
    """Simulated: the head's record of its versions (what `ray start --head` stores in the
    GCS, and what ray.init checks) says Ray 2.59.0; restored after."""
    work = workdir(tmp_path)
    put = (
        "import json, sys\n"
        "from ray._raylet import GcsClient\n"
        "from ray._common.usage.usage_constants import CLUSTER_METADATA_KEY as K\n"
        "from ray._private.ray_constants import KV_NAMESPACE_CLUSTER as NS\n"
        "c = GcsClient(address=sys.argv[1])\n"
        "old = c.internal_kv_get(K, namespace=NS)\n"
        "if sys.argv[2] == 'fake':\n"
        "    meta = dict(json.loads(old), ray_version='2.59.0')\n"
        "    c.internal_kv_put(K, json.dumps(meta).encode(), True, namespace=NS)\n"
        "else:\n"
        "    c.internal_kv_put(K, sys.argv[2].encode(), True, namespace=NS)\n"
        "print(old.decode())\n"
    )

    def kv(arg: str) -> str:
        proc = subprocess.run([sys.executable, "-c", put, head.address, arg], env=head.env(),
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout.strip()

    original = kv("fake")
    try:
        assert json.loads(original)["ray_version"] != "2.59.0"
        env = user_env(work / "home", RAY_AUTH_TOKEN_PATH=str(head.token_file))
        proc = launch(head.address, work, env)
        check_refused(proc, work, head.address, "runs Ray 2.59.0", "ray job submit")
    finally:
        kv(original)
