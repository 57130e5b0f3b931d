"""Issue 3 evidence: plain / focus / sync / both / part-tied focus on shapes and digits, evaluated.

Resumable: one JSON line per finished run is appended to --out; runs already there are skipped.
`--table` prints the markdown tables of docs/results.md from that file.

    .venv/bin/python docs/experiments/interpretability.py --dataset shapes --seeds 0 1 2
    .venv/bin/python docs/experiments/interpretability.py --dataset digits --seeds 0 1 2
    .venv/bin/python docs/experiments/interpretability.py --table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.evaluation import evaluate
from syncmodel.training import train

OUT = Path("docs/experiments/interpretability.jsonl")
EPOCHS = {"shapes": 10, "digits": 15}
CLASS = {"focus_kind": "class_spread"}
# condition -> TrainConfig overrides. The first six are the table; the rest are diagnostics.
CONDITIONS: dict[str, dict] = {
    "plain": {},
    "focus": {"lambda_focus": 0.1},
    "sync": {"coupling_K": 0.1},
    "both": {"lambda_focus": 0.1, "coupling_K": 0.1},
    "class": {"lambda_focus": 0.1, **CLASS},
    "class+sync": {"lambda_focus": 0.1, "coupling_K": 0.1, **CLASS},
    # strength
    "focus1": {"lambda_focus": 1.0},
    "sync1": {"coupling_K": 1.0},
    "class1": {"lambda_focus": 1.0, **CLASS},
    "class0.01": {"lambda_focus": 0.01, **CLASS},
    # which term of class_spread does the work
    "class-nooff": {"lambda_focus": 0.1, "focus_offclass": 0.0, **CLASS},
    "offclass-only": {"lambda_focus": 0.1, "focus_offclass": 10.0, **CLASS},
    # layer
    "focus-b2": {"lambda_focus": 0.1, "layers": ["block2"]},
    "class-b2": {"lambda_focus": 0.1, "layers": ["block2"], **CLASS},
    # descriptor
    "sync-w": {"coupling_K": 0.1, "descriptor": "weight"},
}
MAIN = ["plain", "focus", "sync", "both", "class", "class+sync"]
REPORT_KEYS = (
    "accuracy", "spread", "location_instability", "location_instability_min", "detectors",
    "unique_parts", "detector_iou", "selectivity", "mis", "modules", "coverage",
    "consistency_ari", "consistency_nmi", "specificity", "class_purity", "within_corr",
    "between_corr", "ablation_own_drop", "ablation_other_drop", "interpretability", "dead_fraction",
)  # fmt: skip


def claim(out: Path, key: tuple) -> bool:
    """Whether this process may run `key`: not done in `out`, not claimed by a live process.

    Several processes can share one --out (2 cores: 2 processes of 1 thread each)."""
    if key in {(r["dataset"], r["condition"], r["seed"], r["epochs"]) for r in read(out)}:
        return False
    claims = out.parent / (out.name + ".claims")
    claims.mkdir(exist_ok=True)
    path = claims / "_".join(map(str, key)).replace("/", "-")
    if path.exists():
        try:
            os.kill(int(path.read_text()), 0)
            return False  # a live process runs it
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # its process died: take it over
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def release(out: Path, key: tuple) -> None:
    claims = out.parent / (out.name + ".claims")
    (claims / "_".join(map(str, key)).replace("/", "-")).unlink(missing_ok=True)


def run(
    dataset: str, conditions: list[str], seeds: list[int], epochs: int | None, out: Path
) -> None:
    epochs = epochs or EPOCHS[dataset]
    base = TrainConfig(dataset=dataset, epochs=epochs, device="cpu")
    data = None
    for seed in seeds:
        for cond in conditions:
            if not claim(out, (dataset, cond, seed, epochs)):
                continue
            data = data or load_data(base)
            cfg = TrainConfig.from_dict({**base.to_dict(), **CONDITIONS[cond], "seed": seed})
            t = time.perf_counter()
            res = train(cfg, data=data)
            t_train = time.perf_counter() - t
            row = {"dataset": dataset, "condition": cond, "seed": seed, "epochs": epochs,
                   "status": res.status, "train_seconds": t_train, "overrides": CONDITIONS[cond],
                   "layers": res.layers, "test_acc": res.metrics.get("test_acc")}  # fmt: skip
            if res.status != "diverged":
                # evaluate the regularised layer(s); the last conv stage for the rest
                report, _ = evaluate(res.model, data, layers=res.layers, seed=seed)
                row.update({k: report.get(k) for k in REPORT_KEYS})
                if res.layers != ["block3"]:  # also the last stage, to compare like with like
                    last, _ = evaluate(res.model, data, layers=["block3"], seed=seed)
                    row["block3"] = {k: last.get(k) for k in REPORT_KEYS}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            release(out, (dataset, cond, seed, epochs))
            print(f"{dataset} {cond:<14} seed={seed} {res.status} acc={row.get('accuracy') or 0:.3f} "
                  f"LI={row.get('location_instability') or math.nan:.4f} "
                  f"LImin={row.get('location_instability_min') or math.nan:.4f} "
                  f"spread={row.get('spread') or math.nan:.3f} modules={row.get('modules')} "
                  f"({t_train:.0f}s)", flush=True)  # fmt: skip


def read(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


COLUMNS = {
    "shapes": [("accuracy", "acc", 3), ("spread", "spread", 3), ("location_instability", "LI mean", 4),
               ("location_instability_min", "LI min", 4), ("detectors", "detectors", 1),
               ("unique_parts", "parts", 1), ("selectivity", "selectivity", 3), ("modules", "modules", 1),
               ("consistency_ari", "ARI", 2), ("consistency_nmi", "NMI", 2), ("specificity", "specificity", 2),
               ("class_purity", "purity", 2), ("interpretability", "score", 3)],
    "digits": [("accuracy", "acc", 3), ("spread", "spread", 3), ("selectivity", "selectivity", 3),
               ("mis", "MIS", 3), ("modules", "modules", 1), ("consistency_ari", "ARI", 2),
               ("consistency_nmi", "NMI", 2), ("specificity", "specificity", 2), ("class_purity", "purity", 2),
               ("interpretability", "score", 3)],
}  # fmt: skip


def table(rows: list[dict], dataset: str, conditions: list[str]) -> str:
    cols = COLUMNS[dataset]
    out = [
        "| condition | seeds | " + " | ".join(c[1] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for cond in conditions:
        rs = [
            r
            for r in rows
            if r["dataset"] == dataset and r["condition"] == cond and r["status"] != "diverged"
        ]
        if rs:
            cells = [_ms([r.get(k) for r in rs], d) for k, _, d in cols]
            out.append(f"| {cond} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", choices=sorted(EPOCHS))
    p.add_argument("--conditions", nargs="+", default=MAIN, choices=list(CONDITIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true")
    args = p.parse_args()
    if args.dataset:
        torch.set_num_threads(args.threads)
        run(args.dataset, args.conditions, args.seeds, args.epochs, args.out)
    if args.table or not args.dataset:
        rows = read(args.out)
        for ds in ("shapes", "digits"):
            print(
                f"\n{ds}\n"
                + table(
                    rows,
                    ds,
                    [
                        c
                        for c in CONDITIONS
                        if any(r["condition"] == c and r["dataset"] == ds for r in rows)
                    ],
                )
            )


if __name__ == "__main__":
    main()
