"""The coupling loss at a wide layer: `sync_loss` forward and backward on C = 512 filters with
D = 256 descriptor dimensions (a batch of 256 maps of 2 x 2), the size of a ResNet-18's last
stage, on CPU. The first call (torch's lazy set-up), then the median and range of `--repeat` more. (It used to be
a timed test, < 2 s; a timed test fails on a loaded shared machine, so it is a benchmark.)

    python bench/sync_loss_scale.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from syncmodel.sync import sync_loss

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(args.batch, args.channels, 2, 2, generator=gen).requires_grad_()
    times = []
    for _ in range(args.repeat + 1):
        acts.grad = None
        t0 = time.perf_counter()
        sync_loss(acts, 0.9).backward()
        times.append(time.perf_counter() - t0)
    first, times = times[0], times[1:]  # the first call pays torch's lazy set-up
    print(json.dumps({
        "channels": args.channels, "batch": args.batch, "threads": args.threads,
        "first_call_s": round(first, 4), "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
        "max_s": round(max(times), 4), "loadavg": os.getloadavg(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
