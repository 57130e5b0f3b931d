"""Weights-only checkpoints: a state dict plus the plain-data config and shape metadata.

Everything saved is tensors and primitives, so `torch.load(..., weights_only=True)` reads it:
a checkpoint can never run code. Writes go to a temporary name and are renamed into place.
Each payload carries the sha256 of its contents (`payload_digest`): torch checks neither
tensor bytes nor strings on load, so an altered file would otherwise load with wrong weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError, SyncStudyError
from syncmodel.files import atomic_write

FORMAT = "syncstudy-checkpoint/1"
DIGEST = "sha256"  # payload key: payload_digest of everything else in the payload


def save_checkpoint(
    path: str | Path, model: nn.Module, config: TrainConfig, meta: dict[str, Any]
) -> Path:
    """Write model weights (on CPU), the resolved config and `meta` (shapes, layers, epoch)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "state_dict": state, "config": config.to_dict(), "meta": dict(meta)}
    return atomic_write(path, lambda tmp: torch.save(with_digest(payload), tmp))


def payload_digest(obj: Any) -> str:
    """sha256 of a nested payload (dicts, lists, tensors, plain values), independent of the
    file's zip layout: tensors by dtype, shape and bytes; dict keys in sorted order."""
    digest = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, dict):
            digest.update(f"D{len(x)}".encode())
            for key in sorted(x, key=str):
                digest.update(json.dumps(str(key)).encode())
                feed(x[key])
        elif isinstance(x, (list, tuple)):
            digest.update(f"L{len(x)}".encode())
            for item in x:
                feed(item)
        else:  # None, bool, int, float, str (repr keeps NaN, inf and int/float apart)
            digest.update(f"V{type(x).__name__}:{x!r}".encode())

    feed(obj)
    return digest.hexdigest()


def _contents_digest(payload: dict[str, Any]) -> str:
    """payload_digest of everything in the payload but its stored digest."""
    return payload_digest({k: v for k, v in payload.items() if k != DIGEST})


def with_digest(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, DIGEST: _contents_digest(payload)}


def check_digest(payload: dict[str, Any], path: Path) -> None:
    """Refuse a payload whose contents do not match its stored sha256 (an absent one is
    accepted: checkpoints written before digests existed)."""
    stored = payload.get(DIGEST)
    if stored is None:
        return
    if stored != _contents_digest(payload):
        raise CheckpointError(f"{path}: contents do not match the checkpoint's sha256 (altered or corrupted)")


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check the payload (weights_only); `CheckpointError` names the file on any fault."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, altered bytes, pickled code, ...
        raise CheckpointError(f"{path}: not a readable weights-only checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a syncstudy checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})")
    for key in ("state_dict", "config", "meta"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    check_digest(payload, path)
    check_meta(payload["meta"], path)
    return payload


# meta key -> (type, required). Its shapes rebuild the model and a data set's sizes are
# compared with them: a wrong type would fail deep inside torch (a string in_channels).
_META_FIELDS: dict[str, tuple[type, bool]] = {
    "in_channels": (int, True),
    "num_classes": (int, True),
    "image_size": (int, True),
    "epoch": (int, False),
    "layers": (list, False),
    "class_names": (list, False),
    "dataset": (str, False),
}


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """Refuse a meta whose shape fields are not positive integers or whose names are not
    strings; `CheckpointError` names the file and the field."""
    for key, (tp, required) in _META_FIELDS.items():
        if key not in meta:
            if required:
                raise CheckpointError(f"{path}: checkpoint meta lacks {key!r}")
            continue
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, tp):
            raise CheckpointError(
                f"{path}: checkpoint meta {key!r} must be {tp.__name__}, got {str(value)[:60]!r}"
            )
        if tp is int and value < (0 if key == "epoch" else 1):
            raise CheckpointError(f"{path}: checkpoint meta {key!r} must be positive, got {value}")
        if tp is list and not all(isinstance(v, str) for v in value):
            raise CheckpointError(f"{path}: checkpoint meta {key!r} must be a list of names")


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


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
