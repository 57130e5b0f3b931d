"""Issue 17 evidence: how closely the per-epoch `interp_estimate` tracks the final score.

Trains a spread of digits configs (focus strength, coupling, focus kind: the axes of
studies/digits.yaml; simple_cnn, batch 64, lr 2e-3, `--epochs` epochs) with
`TrainConfig.epoch_estimate` on, then scores each model as a study trial is scored
(`syncmodel.evaluation.evaluate` on the first 500 test images, at the last epoch's epsilon,
seeded by the config's seed: pipeline.evaluation.evaluate_into with studies/digits.yaml's
max_images). Reports Spearman's rank correlation between the estimate after each epoch (what
MO-ASHA compares at a rung at that epoch) and the final `interpretability`, and the estimate's
cost as a share of the epoch's wall time.

Writes every run to a JSON (resumable: finished runs are skipped) and prints a markdown table.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python docs/experiments/estimate_rank.py
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from scipy import stats

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.evaluation import evaluate
from syncmodel.training import current_epsilon, train

BASE = dict(dataset="digits", backbone="simple_cnn", batch_size=64, lr=2e-3, device="cpu", epoch_estimate=True)
# (lambda_focus, coupling_K, epsilon, focus_kind): plain, weak to strong focus, weak to strong
# coupling, the four focus kinds of the digits study
CONFIGS = [
    (0.0, 0.0, 0.5, "spread"),
    (0.01, 0.01, 0.5, "spread"),
    (0.1, 0.1, 0.5, "spread"),
    (1.0, 0.01, 0.5, "spread"),
    (0.01, 1.0, 0.3, "spread"),
    (0.1, 0.1, 0.5, "outside"),
    (0.1, 0.1, 0.7, "gate"),
    (0.3, 0.03, 0.5, "icnn"),
    (0.03, 0.3, 0.6, "outside"),
    (0.5, 0.5, 0.4, "gate"),
]
EVAL_IMAGES = 500  # studies/digits.yaml evaluation.max_images


def run(cfg: TrainConfig) -> dict:
    result = train(cfg)
    data = load_data(cfg)
    report, _ = evaluate(
        result.model, data, result.layers, max_images=EVAL_IMAGES,
        epsilon=current_epsilon(cfg, cfg.epochs - 1), seed=cfg.seed,
    )  # fmt: skip
    return {
        "status": result.status,
        "estimates": [r["interp_estimate"] for r in result.history],
        "estimate_share": [r["estimate_time"] / r["epoch_time"] for r in result.history],
        "val_acc": [r["val_acc"] for r in result.history],
        "interpretability": report["interpretability"],
        "accuracy": report["accuracy"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("estimate_rank.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    for lf, k, eps, kind in CONFIGS:
        key = f"lf={lf} K={k} eps={eps} {kind} epochs={args.epochs} seed={args.seed}"
        if key in runs:
            continue
        cfg = TrainConfig(**BASE, lambda_focus=lf, coupling_K=k, epsilon=eps, focus_kind=kind,
                          epochs=args.epochs, seed=args.seed)  # fmt: skip
        runs[key] = run(cfg)
        args.out.write_text(json.dumps(runs, indent=1))
        r = runs[key]
        print(f"{key}: estimate {r['estimates'][-1]:.4f}  final {r['interpretability']:.4f}", flush=True)
    ok = [r for k, r in runs.items() if f"epochs={args.epochs} seed={args.seed}" in k and r["status"] == "ok"]
    final = [r["interpretability"] for r in ok]
    print(f"\n{len(ok)} configs, digits, {args.epochs} epochs, seed {args.seed}\n")
    print("| estimate after epoch | Spearman rho vs final interpretability | p |")
    print("|---|---|---|")
    for e in range(args.epochs):
        rho, p = stats.spearmanr([r["estimates"][e] for r in ok], final)
        print(f"| {e + 1} | {rho:.3f} | {p:.3g} |")
    shares = [s for r in ok for s in r["estimate_share"]]
    print(f"\nestimate cost: median {statistics.median(shares):.1%} of the epoch wall time "
          f"(max {max(shares):.1%}, {len(shares)} epochs)")  # fmt: skip


if __name__ == "__main__":
    main()
