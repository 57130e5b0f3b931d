"""Issue 2 evidence: digits, a grid over lambda_focus x coupling_K, several seeds.

Writes a JSON of every run and prints the markdown tables that go into docs/results.md.

    .venv/bin/python docs/experiments/digits_sweep.py --out docs/experiments/digits_sweep.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.training import train

STRENGTHS = (0.0, 0.01, 0.1, 1.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("docs/experiments/digits_sweep.json"))
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--grid-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epsilon", type=float, default=0.5)
    args = p.parse_args()
    torch.set_num_threads(2)
    base = TrainConfig(dataset="digits", epochs=args.epochs, epsilon=args.epsilon, device="cpu")
    data = load_data(base)
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["lambda_focus"], r["coupling_K"], r["seed"]) for r in runs}
    jobs = [(lf, k, s) for lf, k in itertools.product(STRENGTHS, STRENGTHS) for s in args.grid_seeds]
    jobs += [(lf, k, s) for lf, k in [(0.0, 0.0), (0.1, 0.1), (0.1, 0.0), (0.0, 0.1)] for s in args.seeds]
    for lf, k, s in dict.fromkeys(jobs):
        if (lf, k, s) in done:
            continue
        t = time.perf_counter()
        res = train(base.replace(lambda_focus=lf, coupling_K=k, seed=s), data=data)
        row = {"lambda_focus": lf, "coupling_K": k, "seed": s, "status": res.status, **res.metrics}
        runs.append(row)
        args.out.write_text(json.dumps(runs, indent=1))
        print(f"lf={lf:<5} K={k:<5} seed={s} {res.status} acc={row.get('test_acc', float('nan')):.4f} "
              f"spread={row.get('spread', float('nan')):.3f} dead={row.get('dead_fraction', float('nan')):.3f} "
              f"nbrs={row.get('neighbours', float('nan')):.2f} ({time.perf_counter() - t:.0f}s)", flush=True)
    print(tables(runs, args.epsilon))


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def tables(runs: list[dict], epsilon: float) -> str:
    def pick(lf, k):
        return [r for r in runs if r["lambda_focus"] == lf and r["coupling_K"] == k and r["status"] == "ok"]

    out = ["| lambda_focus | coupling_K | seeds | test acc | spread | dead neurons | neighbours within ε |",
           "|---|---|---|---|---|---|---|"]
    for lf, k in itertools.product(STRENGTHS, STRENGTHS):
        rs = pick(lf, k)
        if not rs:
            continue
        out.append(f"| {lf} | {k} | {len(rs)} | {_ms([r['test_acc'] for r in rs])} | {_ms([r['spread'] for r in rs])} "
                   f"| {_ms([r['dead_fraction'] for r in rs])} | {_ms([r['neighbours'] for r in rs])} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
