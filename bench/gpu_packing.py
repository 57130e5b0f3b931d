"""GPU packing: aggregate training images/s of one trial on a whole GPU vs four trials at
0.25 GPU each, plus the regulariser's overhead ratio on the same card. Needs one CUDA GPU.

The trials are the CIFAR ResNet-18 study's (studies/cifar10-resnet18.yaml: its model, batch
size, regularised layers and optimiser) at smoke size on generated 32x32 data (fake-cifar10),
run by Ray Tune with fractional GPUs, as `syncstudy launch` does. Target (issue 5): packed >=
2x the single-trial figure. Meant to finish in well under 5 minutes on an H100/H200:

    python bench/gpu_packing.py                   # both phases + overhead, JSON to stdout
    python bench/gpu_packing.py --out packing.json --skip-overhead

Aggregate images/s per phase = images trained in steady epochs (epoch >= 2: no cuDNN
autotuning, no lazy CUDA set-up) / the span from the first such epoch's start to the last
one's end, over all trials of the phase; when trials overlap this is the sum of their rates,
when they serialise it is not. The end-to-end figure (all epochs / Tuner.fit wall time,
start-up included) is reported next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "cifar10-resnet18.yaml"


def trial_config(args: argparse.Namespace) -> dict[str, Any]:
    """The study's fixed training config at smoke size, on generated data, on CUDA; the
    searched params at fixed mid-range values so every trial does the same work."""
    from pipeline.spec import load_spec

    spec = load_spec(STUDY)
    config = spec.train.replace(
        dataset="fake-cifar10", download=False, data_root=None, n_train=args.n_train,
        val_fraction=0.02, epochs=args.epochs, num_workers=0, device=args.device,
        batch_size=args.batch_size or spec.train.batch_size, checkpoint_every=args.epochs,
        lambda_focus=0.1, coupling_K=0.1, epsilon=0.5, warmup_epochs=0, lr=1e-3,
    )  # fmt: skip
    return config.to_dict()


def packing_trainable(params: dict[str, Any]) -> None:
    """One trial: train, and report each epoch's wall-clock interval and image count."""
    import torch
    from ray import tune

    from syncmodel.config import TrainConfig
    from syncmodel.data import load_data
    from syncmodel.training import train

    config = TrainConfig.from_dict({**params["config"], "seed": int(params["trial"])})
    data = load_data(config)
    n_images = len(data.train.labels)
    epochs: list[dict[str, float]] = []

    def on_epoch(record: dict[str, float], _ckpt: Any) -> bool:
        end = time.time()
        epochs.append({"epoch": record["epoch"], "start": end - record["epoch_time"], "end": end, "images": n_images})
        return False

    t0 = time.time()
    result = train(config, on_epoch=on_epoch, data=data)
    tune.report(
        {
            "status": result.status,
            "epochs": json.dumps(epochs),
            "trial_start": t0,
            "device": torch.cuda.get_device_name(0) if config.device != "cpu" else "CPU (logical GPU)",
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }
    )


def run_phase(n_trials: int, gpu: float, config: dict[str, Any], storage: str) -> dict[str, Any]:
    from ray import tune

    trainable = tune.with_resources(packing_trainable, {"cpu": 1, "gpu": gpu})
    tuner = tune.Tuner(
        trainable,
        param_space={"config": config, "trial": tune.grid_search(list(range(n_trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=n_trials),
        run_config=tune.RunConfig(storage_path=storage, name=f"packing-{n_trials}x{gpu:g}", verbose=0),
    )
    t0 = time.time()
    grid = tuner.fit()
    wall = time.time() - t0
    rows = [r.metrics for r in grid if r.metrics]
    if len(rows) != n_trials or any(r.get("status") != "ok" for r in rows):
        errors = [str(r.error) for r in grid if r.error]
        raise SystemExit(f"phase {n_trials}x{gpu:g}: trials failed: {errors or rows}")
    intervals = [e for r in rows for e in json.loads(r["epochs"])]
    steady = [e for e in intervals if e["epoch"] >= 2] or intervals
    span = max(e["end"] for e in steady) - min(e["start"] for e in steady)
    return {
        "trials": n_trials,
        "gpu_per_trial": gpu,
        "device": rows[0]["device"],
        "steady_images_per_s": sum(e["images"] for e in steady) / span,
        "end_to_end_images_per_s": sum(e["images"] for e in intervals) / wall,
        "fit_wall_s": wall,
        "per_trial_images_per_s": [
            sum(e["images"] for e in json.loads(r["epochs"]) if e["epoch"] >= 2)
            / max(sum(e["end"] - e["start"] for e in json.loads(r["epochs"]) if e["epoch"] >= 2), 1e-9)
            for r in rows
        ],
    }


def overhead_ratio() -> dict[str, Any]:
    """bench/regularizer_overhead.py --gpu in its own process (a clean CUDA context)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "regularizer_overhead.py"), "--gpu"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=16384, help="generated training images per trial")
    p.add_argument("--epochs", type=int, default=4, help="epochs per trial (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the study's")
    p.add_argument("--packed", type=int, default=4, help="trials sharing the GPU in phase 2")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument(
        "--device", default="cuda", choices=("cuda", "cpu"),
        help="cpu: a dry run of the script's plumbing on a logical GPU (no figures worth keeping)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    import ray
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_packing needs a CUDA GPU (none visible)")
    config = trial_config(args)
    ray.init(num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-packing-") as storage:
            single = run_phase(1, 1.0, config, storage)
            packed = run_phase(args.packed, 1.0 / args.packed, config, storage)
    finally:
        ray.shutdown()
    out: dict[str, Any] = {
        "device": single["device"],
        "model": f"{config['backbone']} [{','.join(config['layers'] or [])}], batch {config['batch_size']}, bf16",
        "single": single,
        "packed": packed,
        "packing_gain_steady": packed["steady_images_per_s"] / single["steady_images_per_s"],
        "packing_gain_end_to_end": packed["end_to_end_images_per_s"] / single["end_to_end_images_per_s"],
    }
    if not args.skip_overhead and args.device == "cuda":
        out["regulariser_overhead"] = overhead_ratio()
    print(
        f"{out['device']}: 1 trial x 1 GPU {single['steady_images_per_s']:,.0f} img/s; "
        f"{args.packed} x {1 / args.packed:g} GPU {packed['steady_images_per_s']:,.0f} img/s together "
        f"(x{out['packing_gain_steady']:.2f}; end to end x{out['packing_gain_end_to_end']:.2f})"
        + (f"; regulariser x{out['regulariser_overhead'].get('ratio', float('nan')):.3f}" if "regulariser_overhead" in out else "")
    )
    print(json.dumps(out))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
