"""Weights-only checkpoints: a state dict plus the plain-data config and shape metadata.

Everything saved is tensors and primitives, so `torch.load(..., weights_only=True)` reads it:
a checkpoint can never run code. Writes go to a temporary name and are renamed into place.
Each payload carries the sha256 of its contents (`checkpoint_archive.payload_digest`, with
torch tensors seen through `_tensor_bytes`): torch checks neither
tensor bytes nor strings on load, so an altered file would otherwise load with wrong weights.
The format, the digest and the meta checks live in `syncmodel.checkpoint_archive`, which also
reads a checkpoint without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from syncmodel import checkpoint_archive as archive
from syncmodel.checkpoint_archive import (
    DIGEST,
    FORMAT,
    TensorBytes,
    check_checkpoint,
    checkpoint_file,
    unreadable,
)
from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError, SyncStudyError
from syncmodel.files import atomic_write


def save_checkpoint(
    path: str | Path, model: nn.Module, config: TrainConfig, meta: dict[str, Any]
) -> Path:
    """Write model weights (on CPU), the resolved config and `meta` (shapes, layers, epoch)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "state_dict": state, "config": config.to_dict(), "meta": dict(meta)}
    return atomic_write(path, lambda tmp: torch.save(with_digest(payload), tmp))


def _tensor_bytes(x: Any) -> TensorBytes | None:
    if not isinstance(x, torch.Tensor):
        return None
    t = x.detach().to("cpu").contiguous().reshape(-1)
    return TensorBytes(str(x.dtype), tuple(x.shape), t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def with_digest(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, DIGEST: archive.contents_digest(payload, _tensor_bytes)}


def check_digest(payload: dict[str, Any], path: Path) -> None:
    """Refuse a payload whose contents do not match its stored sha256 (an absent one is
    accepted: checkpoints written before digests existed)."""
    archive.check_digest(payload, path, _tensor_bytes)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check the payload (weights_only); `CheckpointError` names the file on any fault."""
    path = checkpoint_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, altered bytes, pickled code, ...
        raise unreadable(path, exc) from None
    return check_checkpoint(payload, path, _tensor_bytes)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """Rebuild the model from a checkpoint: returns (model in eval mode, config, meta)."""
    from syncmodel.nets import build_model

    payload = read_checkpoint(path, map_location)
    try:
        config = TrainConfig.from_dict(payload["config"])
    except SyncStudyError as exc:
        raise CheckpointError(f"{path}: stored config is invalid ({exc})") from None
    meta = payload["meta"]
    try:
        model = build_model(config, meta["in_channels"], meta["num_classes"], meta["image_size"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored config ({str(exc)[:200]})") from None
    model.eval()
    return model, config, meta
