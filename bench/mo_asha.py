"""What MO-ASHA saves: the same study with `scheduler: none` and with `scheduler: mo_asha`.

For each data set and seed, the study (studies/<dataset>.yaml's training setup and search
space; objectives val_acc × interpretability, both maximised, on both data sets) runs twice
through `syncstudy launch` as a fresh process each: once with every trial to the end, once
with MO-ASHA comparing (val_acc, interp_estimate) at each rung. Reported per run: total
epochs trained (rows of history.parquet: every epoch of every trial, stopped ones included),
wall time of the driver process (Ray start-up included, as a user sees it), and the
hypervolume of the final Pareto front of the finished trials' (val_acc, interpretability)
with the reference point (0, 0) (both objectives lie in [0, 1]; a trial stopped at a rung has
no final score and is not on the front). The sampler is seeded by the seed (the same sampler
and seed on both sides; its later suggestions differ where MO-ASHA stopped trials).

Target (issue 17): the same hypervolume within noise at <= 50% of the epochs.

    python bench/mo_asha.py --json out.json                         # digits and shapes, 3 seeds, the studies' sizes
    python bench/mo_asha.py --datasets digits --samples 8 --epochs 6 --n-train 500   # a small budget

The studies' own sizes (12-16 trials x 8-10 epochs) take hours on a shared 2-core machine;
--samples, --epochs, --n-train and --max-images shrink the budget (the same on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
OBJECTIVES = [{"metric": "val_acc", "mode": "max"}, {"metric": "interpretability", "mode": "max"}]
REFERENCE = (0.0, 0.0)


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float] = REFERENCE) -> float:
    """Area dominated by `points` (both coordinates maximised) and bounded below by
    `reference`: the 2-D hypervolume indicator (Zitzler & Thiele 1998). Points not strictly
    better than the reference in both coordinates add nothing; dominated points add nothing."""
    pts = sorted((p for p in points if p[0] > reference[0] and p[1] > reference[1]), reverse=True)
    area, best_y = 0.0, reference[1]
    for x, y in pts:  # x descending: each point adds the strip above the best y so far
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


def study_spec(dataset: str, scheduler: object, seed: int, args: argparse.Namespace, storage: Path) -> dict:
    doc = yaml.safe_load((ROOT / "studies" / f"{dataset}.yaml").read_text())
    doc.pop("smoke", None)
    doc["name"] = f"moasha-{dataset}"
    doc["objectives"] = OBJECTIVES
    doc["scheduler"] = scheduler
    doc["sampler"] = {**doc["sampler"], "seed": seed}
    if doc["sampler"].get("name") == "nsga2" and args.samples:
        doc["sampler"]["population_size"] = max(2, min(doc["sampler"].get("population_size", 4), args.samples // 2))
    if doc["sampler"].get("name") == "tpe" and args.samples:
        doc["sampler"]["n_startup_trials"] = min(doc["sampler"].get("n_startup_trials", 6), max(1, args.samples // 2))
    for key, value in (("epochs", args.epochs), ("n_train", args.n_train)):
        if value is not None:
            doc["train"][key] = value
    doc["train"]["seed"] = seed
    if args.samples:
        doc["samples"] = args.samples
    doc["concurrency"] = args.concurrency
    if args.gpu:  # trials packed on one GPU (a GPU machine: the 64-px shapes studies in minutes)
        doc["resources"] = {**doc.get("resources", {}), "gpu": args.gpu}
        doc["train"]["device"] = "cuda"
    doc["evaluation"] = {**doc.get("evaluation", {}), "pictures": False}
    if args.max_images:
        doc["evaluation"]["max_images"] = args.max_images
    doc["storage"] = str(storage)
    doc["retries"] = 0
    return doc


STARTUP_TIMEOUT = "timed out during startup"  # Ray's local start (30 s, fixed) on a loaded machine


def run_one(dataset: str, name: str, scheduler: object, seed: int, args: argparse.Namespace) -> dict:
    for _attempt in range(5):
        try:
            return _run_once(dataset, name, scheduler, seed, args)
        except RuntimeError as exc:  # a Ray that did not start is retried; nothing ran
            if STARTUP_TIMEOUT not in str(exc):
                raise
            print(f"{dataset} {name} seed {seed}: Ray did not start in time, again", flush=True)
            time.sleep(10)
    return _run_once(dataset, name, scheduler, seed, args)


def _run_once(dataset: str, name: str, scheduler: object, seed: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-moasha-") as tmp:
        storage = Path(tmp) / "study"
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(yaml.safe_dump(study_spec(dataset, scheduler, seed, args, storage), sort_keys=False))
        # the raylet waits this long for its agents' port files (Ray's default fails on a
        # loaded 2-core machine)
        env = {"RAY_agent_register_timeout_ms": "120000", **os.environ, "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "launch", str(spec), "--quiet"],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{dataset} {name} seed {seed}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        rows = pq.read_table(storage / "trials.parquet").to_pylist()
        history = pq.read_table(storage / "history.parquet").to_pylist()
    done = [r for r in rows if r["status"] == "ok"]
    points = [(r["metrics.val_acc"], r["metrics.interpretability"]) for r in done]
    return {
        "dataset": dataset, "scheduler": name, "seed": seed, "wall_s": wall, "gpu": args.gpu,
        "concurrency": args.concurrency,
        "epochs": len(history), "trials": len(rows), "finished": len(done),
        "stopped": sum(r["status"] == "stopped" for r in rows),
        "hypervolume": hypervolume_2d(points), "points": points,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "shapes"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--samples", type=int, default=None, help="trials per study (default: the study's)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the study's)")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--max-images", type=int, default=None, help="evaluation images (default: the study's)")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--gpu", type=float, default=0.0, help="GPU share per trial (default 0: the studies' CPU trials)")
    ap.add_argument("--grace-period", type=int, default=1)
    ap.add_argument("--reduction-factor", type=float, default=2.0)
    ap.add_argument("--json", type=Path, default=None, help="append every run here (resumable)")
    args = ap.parse_args()
    mo = {"name": "mo_asha", "grace_period": args.grace_period, "reduction_factor": args.reduction_factor,
          "objectives": ["val_acc", "interp_estimate"]}  # fmt: skip
    runs = json.loads(args.json.read_text()) if args.json and args.json.exists() else []
    for dataset in args.datasets:
        for seed in args.seeds:
            for name, scheduler in (("none", "none"), ("mo_asha", mo)):  # interleaved: drift hits both
                if any(r["dataset"] == dataset and r["seed"] == seed and r["scheduler"] == name for r in runs):
                    continue
                r = run_one(dataset, name, scheduler, seed, args)
                runs.append(r)
                if args.json:
                    args.json.write_text(json.dumps(runs, indent=1))
                print(f"{dataset} seed {seed} {name:8s}: {r['epochs']:4d} epochs  {r['wall_s']:7.1f} s  "
                      f"HV {r['hypervolume']:.4f}  ({r['finished']} finished, {r['stopped']} stopped)", flush=True)  # fmt: skip
    print(f"\nsettings: {vars(args)}; hypervolume of (val_acc, interpretability), reference point {REFERENCE}\n")
    print("| data | scheduler | epochs (mean) | wall s (mean) | hypervolume mean ± sd | runs |")
    print("|---|---|---|---|---|---|")
    for dataset in args.datasets:
        for name in ("none", "mo_asha"):
            rs = [r for r in runs if r["dataset"] == dataset and r["scheduler"] == name]
            if not rs:
                continue
            hv = [r["hypervolume"] for r in rs]
            sd = statistics.stdev(hv) if len(hv) > 1 else float("nan")
            print(f"| {dataset} | {name} | {statistics.mean(r['epochs'] for r in rs):.1f} | "
                  f"{statistics.mean(r['wall_s'] for r in rs):.0f} | {statistics.mean(hv):.4f} ± {sd:.4f} | {len(rs)} |")  # fmt: skip


if __name__ == "__main__":
    main()
