"""A trial's Parquet bookkeeping against the study's size (issue 12): the driver's per-trial
table work (`StudyTables` upserts + `write()`) over N synthetic trial results, the time per
trial in the first and the last 10%.

Synthetic, not a Ray study: a real 1,000-trial study of tiny trials takes hours on the 2-core
machine; the tables are what grew with the study (MLflow's writes are per run). Each trial
is a final row of ~40 params and ~30 metrics, one epoch of history and a neuron table of
`--neurons` rows, as a tiny evaluated digits trial records.

    python bench/bookkeeping.py --trials 1000            # per-trial parts (the pipeline)
    python bench/bookkeeping.py --trials 1000 --whole    # the old way: whole tables per trial
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import pyarrow as pa

from pipeline.record.tables import StudyTables, TrialRow


def _trial(i: int, neurons: int) -> tuple[TrialRow, list[dict[str, float]], pa.Table]:
    params = {f"p{k}": 0.001 * (i + k) for k in range(36)} | {"layers": ["features.3"], "seed": i}
    metrics = {f"m{k}": 0.5 + 0.001 * k for k in range(30)}
    row = TrialRow(
        trial_id=f"t{i:05d}", status="ok", params=params, metrics=metrics, mlflow_run_id=f"r{i}",
        checkpoint=f"/x/{i}", node_id="n1", start_time=1.7e9 + i, end_time=1.7e9 + i + 1,
    )  # fmt: skip
    history = [{"epoch": 1, "train_loss": 0.5, "val_acc": 0.6, "train_time": 0.1}]
    table = pa.table({
        "layer": ["features.3"] * neurons, "neuron": list(range(neurons)),
        "spread": [0.1] * neurons, "module": [n % 7 for n in range(neurons)],
    })  # fmt: skip
    return row, history, table


def run(trials: int, neurons: int, whole: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-bookkeeping-") as tmp:
        tables = StudyTables(tmp)
        times = []
        for i in range(trials):
            row, history, neuron_table = _trial(i, neurons)
            t0 = time.perf_counter()
            tables.upsert_history(row.trial_id, history)
            tables.set_neurons(row.trial_id, neuron_table)
            tables.upsert_trial(row)
            tables.compact() if whole else tables.write()
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tables.compact()
        compact_s = time.perf_counter() - t0
    tenth = max(1, trials // 10)
    first, last = statistics.mean(times[:tenth]), statistics.mean(times[-tenth:])
    return {
        "trials": trials, "first_10pct_ms": first * 1e3, "last_10pct_ms": last * 1e3,
        "ratio": last / first, "compact_at_end_s": compact_s, "total_s": sum(times),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--neurons", type=int, default=64)
    ap.add_argument("--whole", action="store_true", help="rewrite the whole tables per trial (before issue 12)")
    args = ap.parse_args()
    out = run(args.trials, args.neurons, args.whole)
    print(json.dumps({k: round(v, 3) for k, v in out.items()}))


if __name__ == "__main__":
    main()
