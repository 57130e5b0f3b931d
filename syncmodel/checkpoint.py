"""Checkpoints with torch: `save_checkpoint` writes a model.safetensors (its format, digest
and checks are in `syncmodel.checkpoint_format`, which reads it without torch), and
`load_checkpoint` rebuilds the model from one.

Nothing read here can run code: safetensors holds only tensors, and a legacy model.pt
(written by releases before safetensors) is read by `torch.load(..., weights_only=True)`.
Writes go to a temporary name and are renamed into place (`atomic_write`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from syncmodel.checkpoint_format import (
    DIGEST,
    FORMAT,
    WEIGHTS,
    TensorBytes,
    check_meta,
    check_payload,
    locate,
    parse_checkpoint,
    split,
    unreadable,
    weights_digest,
)
from syncmodel.checkpoint_format import (
    check_digest as _check_digest,
)
from syncmodel.checkpoint_format import (
    contents_digest as _contents_digest,
)
from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError, SyncStudyError
from syncmodel.files import atomic_write


def checkpoint_bytes(state: dict[str, torch.Tensor], config: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """A model.safetensors's bytes: `state` (CPU, contiguous, no shared storage: clone, since
    safetensors refuses tensors that share memory) with config, meta and digest as metadata."""
    import safetensors.torch

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    config_json, meta_json = json.dumps(config), json.dumps(meta)  # in order: the model card lists it
    # the digest covers the tensor index and bytes, which the metadata does not move: serialise
    # once without it to read them, then with it (checked below, should the library change)
    index, _, body = split(safetensors.torch.save(tensors), Path(WEIGHTS))
    digest = weights_digest(config_json, meta_json, index, body)
    data = safetensors.torch.save(tensors, metadata={"format": FORMAT, "config": config_json, "meta": meta_json, DIGEST: digest})
    if split(data, Path(WEIGHTS))[::2] != (index, body):  # the digest would refuse every such file
        raise RuntimeError("safetensors laid the tensors out differently with metadata; the digest needs them fixed")
    return data


def save_checkpoint(
    path: str | Path, model: nn.Module, config: TrainConfig, meta: dict[str, Any]
) -> Path:
    """Write model weights (on CPU), the resolved config and `meta` (shapes, layers, epoch) to
    `path` (a model.safetensors, or a folder to hold one); returns the file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / WEIGHTS
    data = checkpoint_bytes(model.state_dict(), config.to_dict(), dict(meta))
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def convert_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write the checkpoint `src` (a legacy model.pt, or any checkpoint) as a model.safetensors
    at `dst` (a file or folder), after every check `read_checkpoint` makes; returns the file."""
    payload = read_checkpoint(src)
    dst = Path(dst)
    if dst.suffix != ".safetensors":
        dst = dst / WEIGHTS
    data = checkpoint_bytes(payload["state_dict"], payload["config"], payload["meta"])
    return atomic_write(dst, lambda tmp: Path(tmp).write_bytes(data))


def _tensor_bytes(x: Any) -> TensorBytes | None:
    if not isinstance(x, torch.Tensor):
        return None
    t = x.detach().to("cpu").contiguous().reshape(-1)
    return TensorBytes(str(x.dtype), tuple(x.shape), t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def with_digest(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` plus the sha256 of its contents (train_state.pt: torch checks neither tensor
    bytes nor strings on load)."""
    return {**payload, DIGEST: _contents_digest(payload, _tensor_bytes)}


def check_digest(payload: dict[str, Any], path: Path) -> None:
    """Refuse a payload whose contents do not match its stored sha256 (an absent one is
    accepted: files written before digests existed)."""
    _check_digest(payload, path, _tensor_bytes)


def _read_legacy(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, altered bytes, pickled code, ...
        raise unreadable(path, exc) from None
    check_payload(payload, path)
    check_digest(payload, path)
    check_meta(payload["meta"], path)
    return payload


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checked payload {"state_dict", "config", "meta"} of a model.safetensors, or of a
    legacy model.pt (`path`: the file or its folder); `CheckpointError` names the file on any fault."""
    import safetensors.torch

    file, legacy = locate(path)
    if legacy:
        return _read_legacy(file, map_location)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({exc.strerror or exc})") from None
    # checked and loaded from the same bytes: nothing can change between the two
    checked = parse_checkpoint(data, file)
    try:
        state = safetensors.torch.load(data)
    except Exception as exc:  # the library's own refusals (SafetensorError)
        raise unreadable(file, exc) from None
    if torch.device(map_location) != torch.device("cpu"):
        state = {k: v.to(map_location) for k, v in state.items()}
    return {"format": FORMAT, "state_dict": state, "config": checked["config"], "meta": checked["meta"]}


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
