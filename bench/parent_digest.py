"""What `export`'s check of `tables.sha256` against the parent run's copy costs
(pipeline.record.finished.check_parent_digest), on a finished study's folder:

- `sqlite_ms`: the check as export makes it on a sqlite store (read directly, no MLflow), in
  this process, median of `--repeat`;
- `client_s`: the same lookup through MLflow's client, as for a server or another database,
  in a fresh process (MLflow's import included, as a user's command pays it), median of 3.

    python bench/parent_digest.py runs/digits

A folder under a `runs/` folder is read as `--study NAME` from the folder above it (a copied
study is read where it is), any other by its `study.yaml`.

Prints one JSON object with the load average before and after (a shared machine: compare
figures taken at a similar load).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_CLIENT = """
import sys, time
t0 = time.perf_counter()
from pipeline.record import store_read
from pipeline.record.tracking import TrackingTarget
target = TrackingTarget(sys.argv[1], sys.argv[2], None)
exp = store_read._experiment_client(target.uri, target.experiment)
runs = store_read._parent_runs_client(target.uri, exp.experiment_id, sys.argv[3])
assert runs, "no parent run"
print(time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="a finished study's folder (its study.yaml)")
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    from pipeline.commands._study import locate_study
    from pipeline.record.finished import check_parent_digest

    folder = a.folder.resolve()
    if folder.parent.name == "runs":  # `--study NAME` from the folder above: read where it is
        os.chdir(folder.parent.parent)
        ref = locate_study(None, folder.name)
    else:
        ref = locate_study(str(folder / "study.yaml"), None)
    load_before = os.getloadavg()
    times = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        check_parent_digest(ref.storage, ref.target, ref.name)
        times.append(time.perf_counter() - t0)
    client = []
    for _ in range(3):
        proc = subprocess.run(
            [sys.executable, "-c", _CLIENT, ref.target.uri, ref.target.experiment, ref.name],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )  # fmt: skip
        client.append(float(proc.stdout.strip().splitlines()[-1]))
    print(json.dumps({
        "study": str(ref.storage), "sqlite_ms": round(statistics.median(times) * 1000, 2),
        "sqlite_ms_max": round(max(times) * 1000, 2), "client_s": round(statistics.median(client), 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
