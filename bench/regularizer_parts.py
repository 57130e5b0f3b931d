"""Where the regulariser's step overhead goes on the CPU (docs/benchmarks.md, regulariser).

Four training steps on simple_cnn / digits (batch 64, regularisers on block3), alternated in
one process, median of rounds, as ratios to the plain step:
  plain       cross-entropy only
  detached    + the regulariser's loss computed on detached maps (its forward, no backward)
  extra_grad  + a trivial loss on the same maps (the cost of any gradient into them)
  regularised + the focus + coupling loss (what training runs)
then the single ops that dominate what is left, on block3's maps: argmax, amax, and the
focus marginals' matmul forward and backward.

    python bench/regularizer_parts.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.focus import _marginal_matrix
from syncmodel.nets import build_model
from syncmodel.regularizer import Regularizer

VARIANTS = ("plain", "detached", "extra_grad", "regularised")


def _op_us(fn: Callable[[], object], n: int = 300) -> float:
    for _ in range(20):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps", type=int, default=5, help="steps per round and variant")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = TrainConfig(dataset="digits", backbone="simple_cnn", device="cpu", batch_size=64,
                         lambda_focus=0.1, coupling_K=0.1)  # fmt: skip
    data = load_data(config)
    torch.manual_seed(0)
    base = build_model(config, data.in_channels, data.num_classes, data.image_size)
    x, y = data.train.images[:64], data.train.labels[:64]

    def make(variant: str) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        reg = Regularizer(model, config, ["block3"])

        def step() -> None:
            logits = model(x)
            if variant == "plain":
                loss = F.cross_entropy(logits, y)
            elif variant == "detached":
                reg.activations["block3"] = reg.activations["block3"].detach()
                loss = reg.loss(logits, y, 0)[0]
            elif variant == "extra_grad":
                loss = F.cross_entropy(logits, y) + 1e-3 * reg.activations["block3"].square().mean()
            else:
                loss = reg.loss(logits, y, 0)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    steps = {v: make(v) for v in VARIANTS}
    for v in VARIANTS:
        for _ in range(10):
            steps[v]()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for v in VARIANTS:
            t = time.perf_counter()
            for _ in range(args.steps):
                steps[v]()
            times[v].append((time.perf_counter() - t) / args.steps)
    plain = statistics.median(times["plain"])
    out: dict[str, float] = {"plain_ms": plain * 1e3}
    for v in VARIANTS[1:]:
        out[f"{v}_ratio"] = statistics.median(times[v]) / plain

    with torch.no_grad():  # block3's post-ReLU maps, (64, 64, 8, 8)
        maps = base.block3(base.pool2(base.block2(base.pool1(base.block1(x)))))
    b, c, h, w = maps.shape
    flat = maps.reshape(b * c, h * w)
    m = _marginal_matrix(h, w, maps.device, maps.dtype)
    g = torch.rand(b * c, m.shape[1])
    out.update({
        "argmax_us": _op_us(lambda: maps.flatten(2).argmax(-1)),
        "amax_us": _op_us(lambda: maps.flatten(2).amax(-1)),
        "marginals_matmul_us": _op_us(lambda: flat @ m),
        "marginals_matmul_backward_us": _op_us(lambda: g @ m.t()),
        "marginals_by_reductions_us": _op_us(
            lambda: torch.cat([maps.sum(3), maps.sum(2), maps.sum((2, 3)).unsqueeze(-1)], -1)
        ),
    })  # fmt: skip
    print(f"CPU ({args.threads} threads), simple_cnn [block3] batch 64, maps {tuple(maps.shape)}: "
          + ", ".join(f"{k} {v:.3f}" if k.endswith("ratio") else f"{k} {v:.1f}" for k, v in out.items()))  # fmt: skip
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
