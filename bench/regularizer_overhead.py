"""Training-step cost of the focus + sync regulariser against the plain step.

Same model weights, same batch, plain and regularised steps alternated in one process; the
median over rounds of each is reported with their ratio. Targets (issue 2): <= 1.25x on CPU
(simple_cnn, digits), <= 1.10x on GPU (CIFAR resnet18, batch 256, bf16, channels_last).

    python bench/regularizer_overhead.py                       # CPU, simple_cnn on digits
    python bench/regularizer_overhead.py --gpu                 # CUDA, resnet18 on fake-cifar10
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.nets import build_model, default_layers
from syncmodel.regularizer import Regularizer
from syncmodel.training import _autocast, _layout, resolve_device


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="CIFAR resnet18, batch 256, bf16 on CUDA")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=20, help="steps per round and variant")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lambda-focus", type=float, default=0.1)
    p.add_argument("--coupling-k", type=float, default=0.1)
    p.add_argument("--layers", nargs="+", default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.gpu:
        config = TrainConfig(dataset="fake-cifar10", backbone="resnet18", n_train=2048, device="cuda",
                             batch_size=args.batch_size or 256, lambda_focus=args.lambda_focus,
                             coupling_K=args.coupling_k, layers=args.layers)
        torch.backends.cudnn.benchmark = True
    else:
        config = TrainConfig(dataset="digits", backbone="simple_cnn", device="cpu",
                             batch_size=args.batch_size or 64, lambda_focus=args.lambda_focus,
                             coupling_K=args.coupling_k, layers=args.layers)
    device = resolve_device(config.device)
    data = load_data(config)
    torch.manual_seed(0)
    plain = build_model(config, data.in_channels, data.num_classes, data.image_size).to(device)
    if device.type == "cuda":
        plain = plain.to(memory_format=torch.channels_last)
    regd = copy.deepcopy(plain)
    layers = config.layers or default_layers(config.backbone)
    reg = Regularizer(regd, config, layers)
    opt_p = torch.optim.Adam(plain.parameters(), lr=config.lr)
    opt_r = torch.optim.Adam(regd.parameters(), lr=config.lr)
    x = _layout(data.train.images[: config.batch_size].to(device), device)
    y = data.train.labels[: config.batch_size].to(device)

    def plain_step() -> None:
        with _autocast(device):
            loss = F.cross_entropy(plain(x).float(), y)
        opt_p.zero_grad(set_to_none=True)
        loss.backward()
        opt_p.step()

    def reg_step() -> None:
        with _autocast(device):
            loss, _ = reg.loss(regd(x), y, epoch=config.warmup_epochs)
        opt_r.zero_grad(set_to_none=True)
        loss.backward()
        opt_r.step()

    def timed(step) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / args.steps

    plain.train()
    regd.train()
    for step in (plain_step, reg_step):  # warm-up: allocator, cudnn autotuning, lazy init
        timed(step)
    t_plain, t_reg = [], []
    for _ in range(args.rounds):
        t_plain.append(timed(plain_step))
        t_reg.append(timed(reg_step))
    reg.remove()
    m_plain, m_reg = statistics.median(t_plain), statistics.median(t_reg)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    out = {
        "device": name,
        "backbone": config.backbone,
        "layers": ",".join(layers),
        "batch_size": config.batch_size,
        "plain_ms": 1e3 * m_plain,
        "regularised_ms": 1e3 * m_reg,
        "ratio": m_reg / m_plain,
        "images_per_s_plain": config.batch_size / m_plain,
    }
    print(f"{name}: {config.backbone} [{out['layers']}] batch {config.batch_size}: plain {out['plain_ms']:.2f} ms, "
          f"focus+sync {out['regularised_ms']:.2f} ms, ratio {out['ratio']:.3f}x "
          f"(median of {args.rounds} rounds x {args.steps} steps)")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
