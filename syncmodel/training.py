"""One training run: a `TrainConfig` in; per-epoch records, final metrics and a checkpoint out.

CPU and CUDA (bf16 autocast + channels_last on CUDA); seeded and deterministic on CPU. A
non-finite loss ends the run with status "diverged" instead of raising.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from syncmodel.checkpoint import check_digest, save_checkpoint, with_digest
from syncmodel.checkpoint_format import WEIGHTS
from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, Split, load_data
from syncmodel.errors import CheckpointError, ConfigError
from syncmodel.files import atomic_write

# on_epoch(record, checkpoint_dir) -> True to stop the run early (e.g. a scheduler said so).
EpochCallback = Callable[[dict[str, float], "Path | None"], "bool | None"]


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged" | "stopped"
    metrics: dict[str, float]  # final: test_acc, val_acc, spread, dead_fraction, neighbours, ...
    history: list[dict[str, float]]  # one record per finished epoch
    checkpoint: Path | None  # the model checkpoint (model.safetensors) of the last epoch
    config: TrainConfig
    model: nn.Module = field(repr=False)
    layers: list[str] = field(default_factory=list)
    error: str | None = None  # why a run diverged


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", f"{name!r} asked for, but no CUDA device is visible")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def current_epsilon(config: TrainConfig, epoch: int) -> float:
    """Linear annealing from `epsilon` to `epsilon_final` over the coupled epochs (0-based epoch)."""
    if config.epsilon_final is None:
        return config.epsilon
    span = max(config.epochs - 1 - config.warmup_epochs, 1)
    t = min(max(epoch - config.warmup_epochs, 0) / span, 1.0)
    return config.epsilon + t * (config.epsilon_final - config.epsilon)


class _Batches:
    """Shuffled mini-batches straight from in-memory tensors (no DataLoader workers needed)."""

    def __init__(self, split: Split, batch_size: int, device: torch.device, seed: int):
        # Small data sets live on the device for the whole run: no per-step host copies.
        self.images = split.images.to(device, non_blocking=True)
        self.labels = split.labels.to(device, non_blocking=True)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def epoch(self):
        """One shuffled pass in `len(self)` batches of near-equal size (they differ by at most 1).

        Never larger than `batch_size`, and never smaller than half of it when the split holds
        a full batch: slicing off `batch_size` at a time left a last batch of the remainder
        (1 image when n = 64k + 1), whose BN update and optimizer step came from a handful of
        images (docs/experiments/bn_drift.py).
        """
        order = torch.randperm(len(self.labels), generator=self.generator).to(self.images.device)
        for idx in torch.tensor_split(order, len(self)):
            yield self.images[idx], self.labels[idx]


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def inspect(
    model: nn.Module,
    split: Split,
    layers: list[str],
    epsilon: float,
    device: torch.device,
    batch_size: int = 256,
) -> dict[str, float]:
    """Accuracy and the cheap diagnostics of the regularised layers on one split.

    spread: mean activation-weighted spread around the focus over live maps (docs/design.md §1.1);
    dead_fraction: neurons never active on the split; neighbours: mean number of other neurons
    within `epsilon` of each neuron's response descriptor over the split (docs/design.md §1.2, §4).
    """
    from syncmodel.focus import spatial_spread
    from syncmodel.sync import descriptors, mean_neighbours

    if len(split) == 0:  # val_fraction 0 (docs/spec.md: valid): nothing to measure
        return dict.fromkeys(("acc", "spread", "dead_fraction", "neighbours"), float("nan"))
    model.eval()
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
        for name in layers
    ]
    correct, spread_sum, spread_n = 0, 0.0, 0
    active: dict[str, torch.Tensor] = {}
    pooled: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    try:
        for start in range(0, len(split), batch_size):
            x = split.images[start : start + batch_size].to(device)
            y = split.labels[start : start + batch_size].to(device)
            with _autocast(device):
                logits = model(_layout(x, device))
            correct += int((logits.argmax(1) == y).sum())
            for name in layers:
                acts = captured[name].float()  # (B, C, H, W)
                spread = spatial_spread(acts)  # (B, C), NaN where the map is dead
                live = torch.isfinite(spread)
                spread_sum += float(spread[live].sum())
                spread_n += int(live.sum())
                fired = (acts.flatten(2).amax(-1) > 0).any(0)  # (C,)
                active[name] = fired | active.get(name, torch.zeros_like(fired))
                pooled[name].append(acts.mean((2, 3)).cpu())  # (B, C)
    finally:
        for h in hooks:
            h.remove()
    n_neurons = sum(int(a.numel()) for a in active.values())
    n_dead = sum(int((~a).sum()) for a in active.values())
    neighbours = []
    for name in layers:
        responses = torch.cat(pooled[name])  # (N, C)
        v = descriptors(responses[:, :, None, None], kind="response")  # (C, N)
        neighbours.append(mean_neighbours(v, epsilon))
    return {
        "acc": correct / max(len(split), 1),
        "spread": spread_sum / spread_n if spread_n else float("nan"),
        "dead_fraction": n_dead / max(n_neurons, 1),
        "neighbours": float(np.mean(neighbours)),
    }


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def bn_sample(n: int, size: int, seed: int) -> torch.Tensor:
    """Indices of the `size` training images (all when n <= size) that BN statistics are
    recomputed over: a fixed draw per seed from its own generator, so recomputing never moves
    the run's other random streams (resume stays exact)."""
    if size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running mean and variance over `images` (N, C, H, W).

    What `torch.optim.swa_utils.update_bn` does, without a DataLoader: reset the running
    statistics, set momentum to None (a cumulative average), run train-mode forwards with the
    weights frozen, then restore each module's momentum and train/eval flag. The N images go in
    ceil(N / batch_size) batches of near-equal size, so each batch's statistics weigh alike;
    autocast and channels_last as in training. Deterministic (no random draw; the nets have no
    dropout). Returns the number of BatchNorm layers updated (0: nothing to do).

    Why (docs/experiments/bn_drift.py): the running averages (momentum 0.1) trail weights that
    move every step, so a model can end with statistics that fit none of its recent weights.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or len(images) == 0:
        return 0
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(bn, bn.momentum) for bn in bns]
    try:
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None
        model.train()
        for chunk in torch.tensor_split(torch.arange(len(images)), math.ceil(len(images) / batch_size)):
            x = images[chunk].to(device)
            with _autocast(device):
                model(_layout(x, device))
    finally:
        for bn, momentum in momenta:
            bn.momentum = momentum
        for m, training in modes:
            m.training = training
    return len(bns)


def scheduled_lr(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimisation step `step` (0-based) of `total_steps`.

    constant: `config.lr` throughout.
    cosine: linear warm-up from lr/W to lr over the first W = round(lr_warmup_fraction * total)
        steps, then half a cosine from lr down towards 0 (SGDR's annealing, Loshchilov & Hutter
        2017, without restarts): lr * (1 + cos(pi * (step - W) / (total - W))) / 2.
    onecycle: the learning rate of torch.optim.lr_scheduler.OneCycleLR with its defaults
        (Smith & Topin 2019): cosine rise from lr/25 to lr over the first 30% of the steps,
        cosine fall to lr/25e4 (the optimizer's momentum is not cycled).
    """
    base, total = config.lr, max(total_steps, 1)
    if config.lr_schedule == "constant":
        return base
    if config.lr_schedule == "onecycle":
        # OneCycleLR's phase ends: pct_start * total - 1 and total - 1 (three_phase=False)
        initial, final = base / 25.0, base / 25.0 / 1e4
        peak = float(0.3 * total) - 1
        if step <= peak:
            t, lo, hi = (step / peak if peak > 0 else 1.0), initial, base
        else:
            t, lo, hi = (step - peak) / max(total - 1 - peak, 1e-12), base, final
        return hi + (lo - hi) * (1 + math.cos(math.pi * min(t, 1.0))) / 2
    warm = min(round(config.lr_warmup_fraction * total), total - 1)
    if step < warm:
        return base * (step + 1) / warm
    return base * (1 + math.cos(math.pi * (step - warm) / (total - warm))) / 2


def train(
    config: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    out_dir: str | Path | None = None,
    data: DataBundle | None = None,
    progress: bool = False,
    resume: str | Path | None = None,
) -> TrainResult:
    """Train one model.

    Args:
        config: the resolved config (validated on construction).
        on_epoch: called after every epoch with the epoch record and the checkpoint folder
            written for it (None when no checkpoint was written); returning True stops.
        out_dir: where `checkpoint/model.safetensors` (weights) and `checkpoint/train_state.pt`
            go; None → no files written.
        data: a pre-built bundle (the pipeline builds one per node); None → `load_data`.
        progress: a tqdm bar per epoch.
        resume: a checkpoint folder written by an earlier run of the same config: training
            continues after its epoch with the saved optimizer state.
    """
    from syncmodel.nets import build_model, default_layers
    from syncmodel.regularizer import Regularizer

    seed_everything(config.seed)
    device = resolve_device(config.device)
    data = data if data is not None else load_data(config)
    model = build_model(config, data.in_channels, data.num_classes, data.image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    layers = list(config.layers or default_layers(config.backbone))
    optimizer = _optimizer(config, model)
    batches = _Batches(data.train, config.batch_size, device, seed=config.seed)
    meta = {
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
        "layers": layers,
        "dataset": data.name,
        "class_names": list(data.class_names),
    }
    ckpt_dir = Path(out_dir) / "checkpoint" if out_dir is not None else None
    history: list[dict[str, float]] = []
    start_epoch = 0
    total_steps = config.epochs * len(batches)
    if resume is not None:
        start_epoch, history = _restore(Path(resume), model, optimizer, batches, device, config, len(batches))
    step = start_epoch * len(batches)  # optimisation steps taken: where the schedule stands
    # BN statistics are recomputed over this fixed sample before every evaluation/checkpoint
    bn_images = batches.images[bn_sample(len(batches.images), config.bn_stats_images, config.seed).to(device)]

    status, error, t0 = "ok", None, time.perf_counter()
    checkpoint: Path | None = None
    with Regularizer(model, config, layers) as reg:
        for epoch in range(start_epoch, config.epochs):
            model.train()
            t_epoch = time.perf_counter()
            sums = torch.zeros(5, device=device)  # total, ce, focus, sync, correct
            seen = 0
            steps = batches.epoch()
            if progress:
                from tqdm import tqdm

                steps = tqdm(steps, total=len(batches), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False)
            for x, y in steps:
                with _autocast(device):
                    logits = model(_layout(x, device))
                    total, parts = reg.loss(logits, y, epoch)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                lr = scheduled_lr(config, step, total_steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
                step += 1
                n = y.shape[0]
                seen += n
                # Accumulate on the device; one host sync per epoch, not per step.
                sums += torch.stack(
                    [total.detach().float() * n, *(_scalar(parts[k], device) * n for k in ("ce", "focus", "sync")),
                     (logits.detach().argmax(1) == y).sum().float()]
                )
            totals = (sums / max(seen, 1)).tolist()
            if not all(math.isfinite(v) for v in totals):
                status, error = "diverged", f"non-finite loss in epoch {epoch + 1} (loss parts {totals[:4]})"
                break
            if config.bn_stats_images > 0:
                # the model evaluated and saved is its weights with statistics that fit them
                recompute_bn_stats(model, bn_images, device)
            eps = current_epsilon(config, epoch)
            val = inspect(model, data.val, layers, eps, device)
            record = {
                "epoch": epoch + 1,
                "train_loss": totals[0],
                "ce_loss": totals[1],
                "focus_loss": totals[2],
                "sync_loss": totals[3],
                "train_acc": totals[4],
                "val_acc": val["acc"],
                "spread": val["spread"],
                "neighbours": val["neighbours"],
                "dead_fraction": val["dead_fraction"],
                "epsilon": eps,
                "lr": scheduled_lr(config, step - 1, total_steps),
                "epoch_time": time.perf_counter() - t_epoch,
            }
            if config.epoch_estimate:
                from syncmodel.evaluation import interpretability_estimate

                t_est = time.perf_counter()
                record["interp_estimate"] = interpretability_estimate(
                    model, data.val, layers, epsilon=eps, num_classes=data.num_classes,
                    device=device, seed=config.seed,
                )  # fmt: skip
                record["estimate_time"] = time.perf_counter() - t_est
            history.append(record)
            written = None
            last = epoch + 1 == config.epochs
            if ckpt_dir is not None and ((epoch + 1) % config.checkpoint_every == 0 or last):
                written = _save(
                    ckpt_dir, model, optimizer, batches, config, {**meta, "epoch": epoch + 1}, history, step
                )
                checkpoint = ckpt_dir / WEIGHTS
            if progress:
                print(_progress_line(record, config.epochs), flush=True)
            if on_epoch is not None and on_epoch(record, written):
                status = "stopped"
                break

    metrics: dict[str, float] = {"epochs_run": float(len(history)), "train_time": time.perf_counter() - t0}
    if history:
        last_rec = history[-1]
        metrics.update({k: last_rec[k] for k in ("train_loss", "ce_loss", "focus_loss", "sync_loss", "train_acc", "val_acc")})
        if "interp_estimate" in last_rec:
            metrics["interp_estimate"] = last_rec["interp_estimate"]
        # The result is the last epoch (ASHA and resume rely on it); the best validation epoch
        # (the first, on ties) says how far the end is from it.
        best = max(history, key=lambda r: r["val_acc"])
        metrics.update(best_epoch=float(best["epoch"]), best_val_acc=best["val_acc"])
    if status != "diverged":
        test = inspect(model, data.test, layers, current_epsilon(config, config.epochs - 1), device)
        metrics.update(
            test_acc=test["acc"], spread=test["spread"], dead_fraction=test["dead_fraction"], neighbours=test["neighbours"]
        )
    return TrainResult(status, metrics, history, checkpoint, config, model, layers, error)


def _progress_line(r: dict[str, float], epochs: int) -> str:
    return (
        f"epoch {int(r['epoch'])}/{epochs}  loss {r['train_loss']:.4f} (ce {r['ce_loss']:.4f} "
        f"focus {r['focus_loss']:.4f} sync {r['sync_loss']:.4f})  train {r['train_acc']:.3f}  "
        f"val {r['val_acc']:.3f}  spread {r['spread']:.3f}  nbrs {r['neighbours']:.1f}  {r['epoch_time']:.1f}s"
    )


def _save(
    ckpt_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: _Batches,
    config: TrainConfig,
    meta: dict[str, Any],
    history: list[dict[str, float]],
    step: int,
) -> Path:
    # Training state first, model last: the model's epoch is never ahead of the state's.
    state = {
        "epoch": meta["epoch"],
        # where the learning-rate schedule stands (the optimizer's param groups hold its lr)
        "schedule": {"name": config.lr_schedule, "step": step, "total_steps": config.epochs * len(batches)},
        "optimizer": optimizer.state_dict(),
        "rng": batches.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [dict(r) for r in history],
    }
    atomic_write(ckpt_dir / "train_state.pt", lambda tmp: torch.save(with_digest(state), tmp))
    save_checkpoint(ckpt_dir / WEIGHTS, model, config, meta)
    return ckpt_dir


def _restore(
    ckpt_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: _Batches,
    device: torch.device,
    config: TrainConfig,
    steps_per_epoch: int,
) -> tuple[int, list[dict[str, float]]]:
    from syncmodel.checkpoint import read_checkpoint

    payload = read_checkpoint(ckpt_dir, map_location=device)  # a legacy model.pt too
    state_path = ckpt_dir / "train_state.pt"
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{state_path}: unreadable training state ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or "optimizer" not in state:
        raise CheckpointError(f"{state_path}: not a training state")
    check_digest(state, state_path)
    schedule = state.get("schedule")
    expected = {"name": config.lr_schedule, "step": int(state["epoch"]) * steps_per_epoch,
                "total_steps": config.epochs * steps_per_epoch}
    if schedule is None:
        raise CheckpointError(f"{state_path}: no learning-rate schedule state (written by an older version); start afresh")
    if schedule != expected:
        # another schedule, epoch count or batch count: the run would not continue its own schedule
        raise CheckpointError(f"{state_path}: learning-rate schedule {schedule} does not continue as {expected}")
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    batches.generator.set_state(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"]), [dict(r) for r in state["history"]]


def _scalar(value: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float32, device=device).detach()
