"""The MLflow half of a trial's bookkeeping alone, against the number of runs in the store: the
calls the recorder makes for one tiny trial (create the run, look it up by tags, 40 params,
one epoch's metrics, the run read back, six artifact files, 30 final metrics and 8 tags,
terminate), replayed N times on a fresh sqlite store, no Ray, no training. Reports the mean
time per trial per 100 trials and the last 10% over the first 10%. Beside
`bench/bookkeeping_study.py` (the recorder in a real Ray study), it separates what grows in
the store from what grows around it.

    python bench/bookkeeping_mlflow.py --trials 1000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    args = ap.parse_args()

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-bookkeeping-mlflow-") as tmp:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        exp = client.create_experiment("bench", artifact_location=Path(tmp, "artifacts").as_uri())
        artifact = Path(tmp, "config.json")
        artifact.write_text("{}" * 1000)
        for n in range(args.trials):
            t0 = time.perf_counter()
            tags = {"study": "s", "role": "trial", "instance": "i", "trial": f"t{n}", "status": "running"}
            run = client.create_run(exp, run_name=f"t{n}", tags=tags)
            rid = run.info.run_id
            client.search_runs([exp], filter_string=f"tags.`study` = 's' and tags.`trial` = 't{n}x'", max_results=10)
            client.log_batch(rid, params=[Param(f"p{k}", str(k)) for k in range(40)])
            client.log_batch(rid, metrics=[Metric(f"epoch/m{k}", 0.5, 0, 1) for k in range(6)], tags=[RunTag("last", "1")])
            client.get_run(rid)
            for _ in range(6):
                client.log_artifact(rid, str(artifact), "config")
            client.log_batch(
                rid, metrics=[Metric(f"m{k}", 0.5, 0, 0) for k in range(30)], tags=[RunTag(f"x{k}", "v") for k in range(8)]
            )  # fmt: skip
            client.set_terminated(rid, "FINISHED")
            times.append(time.perf_counter() - t0)
    tenth = max(1, args.trials // 10)
    per_100 = [round(statistics.mean(times[i : i + 100]) * 1e3, 1) for i in range(0, len(times), 100)]
    print(json.dumps({
        "trials": args.trials, "first_10pct_ms": round(statistics.mean(times[:tenth]) * 1e3, 1),
        "last_10pct_ms": round(statistics.mean(times[-tenth:]) * 1e3, 1),
        "ratio": round(statistics.mean(times[-tenth:]) / statistics.mean(times[:tenth]), 3),
        "per_100_ms": per_100, "loadavg": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
