"""Issue 15 probe: why do BatchNorm running statistics drift at the end of training?

Trains plain `simple_cnn` models (Adam 2e-3, batch 64, constant learning rate: the loop the
project had before issue 15) with the old batching, whose last batch of an epoch holds the
remainder `n_train % batch_size` (1 image here when n_train = 64 k + 1), and measures after
every epoch the validation accuracy of the same weights under four sets of BN statistics:

- `running`: the running averages as training left them (what the old code evaluated);
- `before_last`: the running averages as they were before the epoch's last (short) batch
  updated them (weights as after the epoch): the share of the last short batch;
- `recomputed`: re-estimated over up to 2048 training images with the weights frozen
  (`syncmodel.training.recompute_bn_stats`): the statistics the weights deserve;
- `ema_frozen`: the running averages continued (momentum 0.1) over one more pass of batches
  of 64 with the weights frozen: the averaging itself, without weights that move under it;
- `batch`: each evaluation batch normalised with its own statistics (train-mode BN).

`running` vs `before_last` is what the short batch costs; `before_last` vs `recomputed` is
the momentum lag (running averages of a moving target, momentum 0.1); `ema_frozen` near
`recomputed` says the lag comes from the weights moving, not from averaging 64-image batches. It also checks the
other two suspects directly: that the regulariser's forward hooks and `inspect` (evaluation)
leave every BN buffer bit-identical.

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python docs/experiments/bn_drift.py
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch
from torch import nn

from syncmodel.config import TrainConfig
from syncmodel.data import Split, load_data
from syncmodel.nets import build_model, default_layers
from syncmodel.regularizer import Regularizer
from syncmodel.training import inspect, recompute_bn_stats, seed_everything

DEVICE = torch.device("cpu")


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def _acc(model: nn.Module, split: Split, layers: list[str]) -> float:
    return inspect(model, split, layers, 0.5, DEVICE)["acc"]


@torch.no_grad()
def _acc_batch_stats(model: nn.Module, split: Split, batch_size: int = 256) -> float:
    """Accuracy with train-mode BN (each batch's own statistics); running buffers restored."""
    saved = _bn_buffers(model)
    model.train()
    correct = 0
    for s in range(0, len(split), batch_size):
        correct += int((model(split.images[s : s + batch_size]).argmax(1) == split.labels[s : s + batch_size]).sum())
    model.load_state_dict({**model.state_dict(), **saved})
    model.eval()
    return correct / len(split)


@torch.no_grad()
def _ema_frozen(model: nn.Module, split: Split, batch_size: int, seed: int) -> nn.Module:
    other = copy.deepcopy(model)
    other.train()
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    for s in range(0, len(split) - batch_size + 1, batch_size):
        other(split.images[order[s : s + batch_size]])
    return other.eval()


def _with_buffers(model: nn.Module, buffers: dict[str, torch.Tensor]) -> nn.Module:
    other = copy.deepcopy(model)
    other.load_state_dict({**other.state_dict(), **buffers})
    return other


def _drift(a: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    """Mean over BN channels of |mean_a - mean_ref| / sqrt(var_ref): the shift in std units."""
    shifts = []
    for key in ref:
        if key.endswith("running_mean"):
            var = ref[key.replace("running_mean", "running_var")]
            shifts.append(((a[key] - ref[key]).abs() / var.clamp_min(1e-5).sqrt()).flatten())
    return float(torch.cat(shifts).mean())


def probe(config: TrainConfig, check_hooks: bool) -> dict:
    data = load_data(config)
    seed_everything(config.seed)
    model = build_model(config, data.in_channels, data.num_classes, data.image_size)
    layers = default_layers(config.backbone)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    n, bs = len(data.train), config.batch_size
    out = {"dataset": config.dataset, "n_train": n, "last_batch": n % bs or bs, "seed": config.seed, "epochs": []}
    with Regularizer(model, config, layers) as reg:
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(n, generator=gen)
            starts = list(range(0, n, bs))
            before_last: dict[str, torch.Tensor] = {}
            for start in starts:
                if start == starts[-1]:
                    before_last = _bn_buffers(model)
                idx = order[start : start + bs]
                total, _ = reg.loss(model(data.train.images[idx]), data.train.labels[idx], epoch)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
            running = _bn_buffers(model)
            if check_hooks and epoch == 0:
                # hooks: one train-mode forward with the regulariser's hooks and one without
                bare = copy.deepcopy(model)
                for m in bare.modules():
                    m._forward_hooks.clear()
                with torch.no_grad():
                    model(data.train.images[:64])
                    bare(data.train.images[:64])
                hooked = _bn_buffers(model)
                out["hooks_change_bn"] = any(not torch.equal(hooked[k], v) for k, v in _bn_buffers(bare).items())
                model.load_state_dict({**model.state_dict(), **running})
                # evaluation: inspect() must leave the buffers untouched
                inspect(model, data.val, layers, 0.5, DEVICE)
                out["inspect_changes_bn"] = any(not torch.equal(running[k], v) for k, v in _bn_buffers(model).items())
            recomputed_model = copy.deepcopy(model)
            recompute_bn_stats(recomputed_model, data.train.images[:2048], DEVICE)
            recomputed = _bn_buffers(recomputed_model)
            row = {
                "epoch": epoch + 1,
                "running": _acc(model, data.val, layers),
                "before_last": _acc(_with_buffers(model, before_last), data.val, layers),
                "recomputed": _acc(recomputed_model, data.val, layers),
                "ema_frozen": _acc(_ema_frozen(model, data.train, bs, seed=epoch), data.val, layers),
                "batch": _acc_batch_stats(copy.deepcopy(model), data.val),
                "drift_running": _drift(running, recomputed),
                "drift_before_last": _drift(before_last, recomputed),
            }
            out["epochs"].append(row)
            print(
                f"{config.dataset} n={n} last={out['last_batch']} seed={config.seed} ep {epoch + 1}: "
                f"val running {row['running']:.3f} before_last {row['before_last']:.3f} "
                f"recomputed {row['recomputed']:.3f} ema_frozen {row['ema_frozen']:.3f} batch {row['batch']:.3f} | drift (std units) "
                f"running {row['drift_running']:.3f} before_last {row['drift_before_last']:.3f}",
                flush=True,
            )
        out["test_running"] = _acc(model, data.test, layers)
        out["test_recomputed"] = _acc(recomputed_model, data.test, layers)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("docs/experiments/bn_drift.json"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    torch.set_num_threads(1)
    settings = [
        # shapes as the user ran it; n_train 1985 = 31 * 64 + 1: a last batch of 1 image
        dict(dataset="shapes", n_train=1985, epochs=8),
        dict(dataset="shapes", n_train=2048, epochs=8),  # no short batch at all
        dict(dataset="digits", epochs=10),  # 1294 train images: a last batch of 14
    ]
    runs = json.loads(args.out.read_text()) if args.out.exists() else []  # resumable
    done = {(r["dataset"], r["n_train"], r["seed"]) for r in runs}
    for s in settings:
        for seed in args.seeds:
            cfg = TrainConfig(**s, batch_size=64, lr=2e-3, lr_schedule="constant", bn_stats_images=0, seed=seed,
                              device="cpu")
            if (cfg.dataset, len(load_data(cfg).train), seed) in done:
                continue
            runs.append(probe(cfg, check_hooks=not runs))
            args.out.write_text(json.dumps(runs, indent=1))
    print("\n| data | n_train | last batch | seed | final val: running | before last batch | recomputed "
          "| EMA, frozen weights | batch stats | test: running | recomputed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        e = r["epochs"][-1]
        print(f"| {r['dataset']} | {r['n_train']} | {r['last_batch']} | {r['seed']} | {e['running']:.3f} | "
              f"{e['before_last']:.3f} | {e['recomputed']:.3f} | {e['ema_frozen']:.3f} | {e['batch']:.3f} | {r['test_running']:.3f} | "
              f"{r['test_recomputed']:.3f} |")
    print(f"\nregulariser hooks change BN buffers: {runs[0]['hooks_change_bn']}; "
          f"inspect() changes BN buffers: {runs[0]['inspect_changes_bn']}")


if __name__ == "__main__":
    main()
