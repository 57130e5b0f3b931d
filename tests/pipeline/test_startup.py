"""The local Ray `launch` starts: trial actors start in the workers Ray prestarted, with the
trial's modules already imported (docs/benchmarks.md, pipeline overhead). Run in a fresh
process: the test session's own Ray is not started through `pipeline.ray_local.ray_session`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a local Ray of its own: the whole suite only

_PROBE = r"""
import json, os, re, sys, time
import ray
from ray.tune.execution.class_cache import _ActorClassCache
from pipeline.ray_local import actors_in_prestarted_workers, ray_session

class Probe:
    def info(self):
        return {"pid": os.getpid(), "preloaded": "wave" in sys.modules,
                "pl_disable_fork": os.environ.get("PL_DISABLE_FORK")}

def idle_workers():
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::IDLE"):
                pids.append(int(pid))
        except OSError:
            pass
    return pids

with ray_session(None, 2, preload=("wave",)) as local:
    assert local
    actors_in_prestarted_workers()  # as run_study does, once Ray is up
    # Wait for the raylet's own count of idle workers (its state dump, every 200 ms here: see
    # the test's environment), not a margin after the processes' titles: an actor asked for
    # before the prestarted workers are in the raylet's idle pool gets a new worker.
    state = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs", "debug_state.txt")
    deadline = time.time() + 600  # a hang guard
    while time.time() < deadline:
        try:
            counts = re.findall(r"^- num idle workers: (\d+)$", open(state).read(), re.M)
        except OSError:
            counts = []
        if counts and int(counts[-1]) >= 2 and len(idle_workers()) >= 2:
            break
        time.sleep(0.2)
    idle = idle_workers()
    actor = _ActorClassCache().get(Probe).options(num_cpus=1).remote()  # as Tune builds it
    info = ray.get(actor.info.remote(), timeout=120)
print(json.dumps({"idle": idle, **info}))
"""


def test_trial_actors_start_in_prestarted_preloaded_workers(tmp_path: Path) -> None:
    """Tune gives each trainable actor a runtime env (PL_DISABLE_FORK); unlike the prestarted
    workers' that made Ray start a new worker for the first trial (seconds). `ray_session`
    moves the variable into the local Ray's environment, `actors_in_prestarted_workers`
    drops Tune's copy."""
    drop = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS", "PL_DISABLE_FORK")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("AWS_")}
    env["RAY_debug_dump_period_milliseconds"] = "200"  # the raylet's state dump the probe reads
    p = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["idle"], out
    assert out["pid"] in out["idle"], f"the actor got a new worker: {out}"
    assert out["preloaded"] is True, out
    assert out["pl_disable_fork"] == "1", out
