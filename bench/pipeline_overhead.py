"""What the pipeline costs: the same digits trials through `syncstudy launch` vs `train()` in
a plain loop, and what 2 concurrent trials buy.

The trials are fixed: a grid over lambda_focus × coupling_K (12 points, the digits study's
sample count; --trials 6 for docs/design.md §4's anchor) on the digits study's setup (simple_cnn,
full data, its epochs and its evaluation of every trial; --epochs, --no-evaluate to change
them), so both sides train exactly the same configs, with the same torch threads per trial
(--threads, default 1: the digits study's `resources.cpu`; on a shared 2-core machine 2
threads per trial are slower, not faster). Module pictures are off on both sides.
Every variant runs as a fresh process, timed from outside (interpreter, imports, data, Ray
and MLflow start-up all count, as a user sees them); the variants are interleaved round by
round so that a machine shared with other work drifts on all of them alike. Each side also
reports its trials' summed `train_time` (inside the pipeline it includes each epoch's report
to Tune), so that the fixed cost (wall minus training) can be told from the drift of the
training itself. Target (issue 4): pipeline at concurrency 1 <= 1.15 × the plain loop.

    python bench/pipeline_overhead.py --rounds 3 --json out.json   # the digits study, 12 trials
    python bench/pipeline_overhead.py --epochs 5 --no-evaluate      # shorter trials
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
from pathlib import Path

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = yaml.safe_load((ROOT / "studies" / "digits.yaml").read_text())
MAX_IMAGES = STUDY["evaluation"]["max_images"]
LAMBDAS = [0.01, 0.1, 1.0]
COUPLINGS = [0.01, 0.1, 0.3, 1.0]


def grid(trials: int) -> tuple[list[float], list[float]]:
    """lambda_focus and coupling_K values whose product has `trials` points (6 or 12)."""
    couplings = COUPLINGS if trials == 12 else [0.1, 1.0] if trials == 6 else None
    if couplings is None:
        raise SystemExit("--trials must be 6 or 12")
    return LAMBDAS, couplings


def points(trials: int) -> list[dict[str, float]]:
    lambdas, couplings = grid(trials)
    return [{"lambda_focus": lf, "coupling_K": k} for lf in lambdas for k in couplings]


def spec_text(name: str, *, trials: int, epochs: int, concurrency: int, cpu: float, evaluate: bool) -> str:
    """The digits study with a fixed grid: the pipeline runs exactly `points(trials)`."""
    lambdas, couplings = grid(trials)
    doc = {
        "name": name,
        "train": {**STUDY["train"], "epochs": epochs},
        "search": {
            "lambda_focus": {"choices": lambdas},
            "coupling_K": {"choices": couplings},
            "epsilon": 0.5,
            "lr": 2.0e-3,
        },
        "objectives": [{"metric": "test_acc", "mode": "max"}]
        + ([{"metric": "interpretability", "mode": "max"}] if evaluate else []),
        "sampler": {"name": "grid", "seed": 0},
        "scheduler": "none",
        "samples": trials,
        "concurrency": concurrency,
        "resources": {"cpu": cpu, "gpu": 0},
        "evaluation": {"enabled": evaluate, "max_images": MAX_IMAGES, "pictures": False},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def plain_loop(trials: int, epochs: int, evaluate: bool, threads: int) -> None:
    """The baseline, in this process: one data load, then train() per config."""
    import torch

    from syncmodel.config import TrainConfig
    from syncmodel.data import load_data
    from syncmodel.training import train

    base = STUDY["train"]
    configs = [TrainConfig.from_dict({**base, "epochs": epochs, "epsilon": 0.5, "lr": 2e-3, **p}) for p in points(trials)]
    torch.set_num_threads(threads)
    data = load_data(configs[0])
    for config in configs:
        result = train(config, data=data)
        if evaluate:
            from syncmodel.evaluation import evaluate as run_eval

            run_eval(result.model, data, result.layers, max_images=MAX_IMAGES, epsilon=0.5, seed=config.seed)
        print(
            f"{config.lambda_focus:g} {config.coupling_K:g} test_acc {result.metrics['test_acc']:.4f} "
            f"train_time {result.metrics['train_time']:.3f}",
            flush=True,
        )


def timed(cmd: list[str], storage: Path | None = None) -> tuple[float, float, str]:
    """Wall seconds of `cmd`, its trials' summed train_time (the plain loop's lines, or the
    pipeline's trials.parquet in `storage`), and its `time:` line (the pipeline's phases)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    phases = next((ln for ln in proc.stdout.splitlines() if ln.startswith("time: ")), "")
    if storage is None:
        trained = sum(float(ln.split("train_time ")[1]) for ln in proc.stdout.splitlines() if "train_time " in ln)
    else:
        trained = sum(pq.read_table(storage / "trials.parquet").column("metrics.train_time").to_pylist())
    return took, trained, phases


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12, help="6 or 12")
    p.add_argument("--epochs", type=int, default=STUDY["train"]["epochs"], help="default: the digits study's")
    p.add_argument("--threads", type=int, default=1, help="torch threads per trial, both sides")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument(
        "--evaluate", action=argparse.BooleanOptionalAction, default=STUDY["evaluation"]["enabled"],
        help="evaluate every trial on both sides (default: as the digits study does)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    p.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)  # the baseline's child process
    args = p.parse_args(argv)
    if args.plain:
        plain_loop(args.trials, args.epochs, args.evaluate, args.threads)
        return {}

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    py = sys.executable
    flags = ["--trials", str(args.trials), "--epochs", str(args.epochs), "--threads", str(args.threads)] + (["--evaluate"] if args.evaluate else [])
    times: dict[str, list[float]] = {"plain": [], "pipeline_c1": [], "pipeline_c2": []}
    trained: dict[str, list[float]] = {k: [] for k in times}
    phases: dict[str, list[str]] = {k: [] for k in times}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        for r in range(args.rounds):
            for variant in times:
                storage = None
                if variant == "plain":
                    cmd = [py, __file__, "--plain", *flags]
                else:
                    conc = 2 if variant == "pipeline_c2" else 1
                    cpu = args.threads  # a trial's threads follow resources.cpu
                    spec = Path(tmp) / f"{variant}-{r}.yaml"
                    spec.write_text(spec_text(f"bench-{variant}-{r}", trials=args.trials, epochs=args.epochs, concurrency=conc, cpu=cpu, evaluate=args.evaluate))
                    storage = Path(tmp) / f"{variant}-{r}"
                    cmd = [py, "-m", "pipeline.cli", "launch", str(spec), "--storage", str(storage), "--quiet"]
                took, train_s, line = timed(cmd, storage)
                times[variant].append(took)
                trained[variant].append(train_s)
                phases[variant].append(line)
                print(f"round {r + 1}: {variant:<12} {took:6.1f} s  (train_time {train_s:5.1f} s)  {line}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    # Fixed cost: wall minus the trials' own training, per run (drift of the training speed cancels).
    fixed = {k: statistics.median(t - s for t, s in zip(times[k], trained[k])) for k in times}
    plain_train = statistics.median(trained["plain"])
    figures: dict[str, object] = {
        "machine": f"{cores}-core CPU ({os.uname().machine}), load average {os.getloadavg()[0]:.1f} at the end",
        "trials": args.trials,
        "threads_per_trial": args.threads,
        "epochs": args.epochs,
        "evaluate": args.evaluate,
        "rounds": args.rounds,
        "seconds": times,
        "train_time_s": trained,
        "phases": phases,
        "median_s": med,
        "fixed_s": fixed,
        "ratio_c1": med["pipeline_c1"] / med["plain"],
        "ratio_c1_same_training": (plain_train + fixed["pipeline_c1"]) / (plain_train + fixed["plain"]),
        "ratio_c2": med["pipeline_c2"] / med["plain"],
        "speedup_c2_vs_c1": med["pipeline_c1"] / med["pipeline_c2"],
    }
    print(
        f"plain loop {med['plain']:.1f} s | pipeline c=1 {med['pipeline_c1']:.1f} s "
        f"(x{figures['ratio_c1']:.2f}, target <= 1.15) | pipeline c=2 {med['pipeline_c2']:.1f} s "
        f"(x{figures['ratio_c2']:.2f} of plain; {figures['speedup_c2_vs_c1']:.2f}x faster than c=1)\n"
        f"fixed cost (wall - train_time): plain {fixed['plain']:.1f} s, pipeline c=1 {fixed['pipeline_c1']:.1f} s; "
        f"c=1 ratio at the plain loop's training time: x{figures['ratio_c1_same_training']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
