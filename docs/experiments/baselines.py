"""Issue 11: the comparison — plain, ICNN, focus (spread) and the part-tying focus kinds, each
with and without the coupling, on the rigid-part shapes and on digits; 5 seeds; mean and 95%
t-interval of every report key of `syncmodel.evaluate`.

Resumable: one JSON line per finished run is appended to --out; runs already there are skipped
(several processes may share one --out: each claims a run before training it). The tables go
to --table-out (markdown) and stdout.

    PYTHONPATH=. .venv/bin/python docs/experiments/baselines.py                 # the whole thing
    PYTHONPATH=. .venv/bin/python docs/experiments/baselines.py --quick         # 1 seed, 1 epoch, small
    PYTHONPATH=. .venv/bin/python docs/experiments/baselines.py --table         # tables only
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
from scipy import stats

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.evaluation import evaluate
from syncmodel.training import train

HERE = Path(__file__).parent
OUT = HERE / "baselines.jsonl"
TABLE = HERE / "baselines.md"
EPOCHS = {"shapes": 10, "shapes-hard": 10, "digits": 15}
DATASETS = ["shapes", "digits"]
SEEDS = [0, 1, 2, 3, 4]
COUPLING = {"coupling_K": 0.1}
# condition -> TrainConfig overrides; each focus condition also runs with the coupling ("+sync").
FOCUS = {
    "plain": {},
    "icnn": {"lambda_focus": 0.1, "focus_kind": "icnn"},
    "spread": {"lambda_focus": 0.1, "focus_kind": "spread"},
    "gate": {"lambda_focus": 0.1, "focus_kind": "gate"},  # part-tying reading (a)
    "outside": {"lambda_focus": 0.1, "focus_kind": "outside"},  # part-tying reading (b)
}
CONDITIONS = {**FOCUS, **{f"{k}+sync": {**v, **COUPLING} for k, v in FOCUS.items()}}
QUICK = {"epochs": 1, "n_train": 400, "max_images": 300}


def _key(row: dict) -> tuple:
    return (row["dataset"], row["condition"], row["seed"], row["epochs"])


def read(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def claim(out: Path, key: tuple) -> bool:
    """Whether this process may run `key`: not done in `out`, not claimed by a live process."""
    if key in {_key(r) for r in read(out)}:
        return False
    claims = out.parent / (out.name + ".claims")
    claims.mkdir(parents=True, exist_ok=True)
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
    (out.parent / (out.name + ".claims") / "_".join(map(str, key)).replace("/", "-")).unlink(missing_ok=True)


def _plain(value: object) -> object:
    """JSON-able report values: numbers (NaN → None), strings, bools."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def run(dataset: str, conditions: list[str], seeds: list[int], epochs: int, out: Path,
        n_train: int | None, max_images: int) -> None:  # fmt: skip
    base = TrainConfig(dataset=dataset, epochs=epochs, device="cpu", n_train=n_train)
    data = None
    for seed in seeds:
        for cond in conditions:
            key = (dataset, cond, seed, epochs)
            if not claim(out, key):
                continue
            try:
                data = data or load_data(base)
                cfg = TrainConfig.from_dict({**base.to_dict(), **CONDITIONS[cond], "seed": seed})
                t = time.perf_counter()
                res = train(cfg, data=data)
                row = {"dataset": dataset, "condition": cond, "seed": seed, "epochs": epochs,
                       "n_train": n_train, "status": res.status, "train_seconds": time.perf_counter() - t,
                       "overrides": CONDITIONS[cond], "layers": res.layers,
                       "test_acc": res.metrics.get("test_acc")}  # fmt: skip
                if res.status != "diverged":
                    report, _ = evaluate(res.model, data, layers=res.layers, seed=seed, max_images=max_images)
                    row["report"] = {k: _plain(v) for k, v in report.items()}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            finally:
                release(out, key)
            acc = row.get("report", {}).get("accuracy")
            print(f"{dataset} {cond:<14} seed={seed} {res.status} acc={acc} ({row['train_seconds']:.0f}s)", flush=True)


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (NaN half-width for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.975, len(values) - 1)) * sem


def _cell(values: list) -> str:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v is not None and math.isfinite(v)]  # fmt: skip
    if not nums:
        return "–"
    mean, half = interval(nums)
    digits = 4 if abs(mean) < 0.1 else 3
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def tables(rows: list[dict]) -> str:
    """One markdown table per (dataset, epochs): conditions as rows, every numeric report key
    as a column (mean ± 95% t half-width over seeds); diverged runs counted apart."""
    parts = []
    for dataset, epochs in sorted({(r["dataset"], r["epochs"]) for r in rows}):
        rs = [r for r in rows if r["dataset"] == dataset and r["epochs"] == epochs]
        keys = sorted({k for r in rs for k, v in r.get("report", {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})  # fmt: skip
        head = ["condition", "seeds", "diverged", *keys]
        lines = [f"### {dataset}, {epochs} epochs", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]  # fmt: skip
        for cond in CONDITIONS:
            cr = [r for r in rs if r["condition"] == cond]
            if not cr:
                continue
            ok = [r for r in cr if r["status"] != "diverged"]
            cells = [_cell([r["report"].get(k) for r in ok]) for k in keys]
            lines.append(f"| {cond} | {len(ok)} | {len(cr) - len(ok)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=sorted(EPOCHS))
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    p.add_argument("--epochs", type=int, default=None, help="default: per data set (EPOCHS)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--table-out", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 400 images: checks it runs")
    p.add_argument("--table", action="store_true", help="only write the tables from --out")
    args = p.parse_args()
    suffix = "_quick" if args.quick else ""
    out = args.out or OUT.with_name(f"baselines{suffix}.jsonl")
    table_out = args.table_out or TABLE.with_name(f"baselines{suffix}.md")
    if not args.table:
        torch.set_num_threads(args.threads)
        seeds = args.seeds[:1] if args.quick else args.seeds
        for dataset in args.datasets:
            epochs = QUICK["epochs"] if args.quick else (args.epochs or EPOCHS[dataset])
            run(dataset, args.conditions, seeds, epochs, out,
                QUICK["n_train"] if args.quick else None, QUICK["max_images"] if args.quick else 2000)  # fmt: skip
    text = tables(read(out))
    table_out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
