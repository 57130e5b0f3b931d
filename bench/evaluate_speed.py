"""Benchmark: full `syncmodel.evaluate` of 2,000 images × 256 neurons (target <= 30 s, 2 cores).

Random-init simple_cnn, width 128 (block3: 256 neurons on 8×8 maps), on 2,000 generated
`shapes` images (32×32, landmarks and part masks: every metric runs). Prints wall and CPU
seconds as one JSON line; the model's forward pass is about two thirds of it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument(
        "--width", type=int, default=128, help="simple_cnn width; block3 has 2×width neurons"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pictures", action="store_true", help="also time writing the PNGs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from syncmodel.config import TrainConfig
    from syncmodel.data.shapes import generate
    from syncmodel.evaluation import evaluate
    from syncmodel.nets import build_model

    torch.manual_seed(0)
    split = generate(args.images, 32, stream=2)
    model = build_model(TrainConfig(dataset="shapes", width=args.width), 1, 4, 32)
    evaluate(model, split, ["block3"], max_images=64)  # warm-up: lazy imports, kernels
    timings = {}
    start, cpu = time.perf_counter(), time.process_time()
    report, table = evaluate(model, split, ["block3"], max_images=args.images)
    timings["evaluate_s"] = round(time.perf_counter() - start, 2)
    # CPU seconds of this process (all threads): wall time on an idle machine is about this
    # divided by the threads; wall time alone swings with whatever else the machine runs
    timings["evaluate_cpu_s"] = round(time.process_time() - cpu, 2)
    if args.pictures:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            evaluate(model, split, ["block3"], max_images=args.images, picture_dir=tmp)
            timings["evaluate_with_pictures_s"] = round(time.perf_counter() - start, 2)
    print(json.dumps({
        "images": report["images"], "neurons": report["neurons"], "threads": args.threads,
        "modules": report["modules"], "sync_steps": report["sync_steps"], **timings,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
