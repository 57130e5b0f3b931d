"""Checkpoint integrity: weights-only loads, a sha256 over the contents, and clear refusals
of truncated, altered or code-carrying files (`CheckpointError` naming the file)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from syncmodel.checkpoint import DIGEST, read_checkpoint, save_checkpoint
from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError
from syncmodel.nets import build_model

META = {"in_channels": 1, "num_classes": 10, "image_size": 8, "layers": ["features.0"], "epoch": 1}


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    config = TrainConfig(dataset="digits", width=8)
    torch.manual_seed(0)
    model = build_model(config, 1, 10, 8)
    return save_checkpoint(tmp_path / "model.pt", model, config, META)


def _tensor_offset(path: Path, tensor: torch.Tensor) -> int:
    data = path.read_bytes()
    at = data.find(tensor.contiguous().numpy().tobytes()[:32])
    assert at > 0
    return at


def test_an_altered_weight_is_refused_though_torch_loads_it(ckpt: Path) -> None:
    state = read_checkpoint(ckpt)["state_dict"]
    weight = max(state.values(), key=lambda t: t.numel())  # the largest: its bytes are unique
    data = bytearray(ckpt.read_bytes())
    data[_tensor_offset(ckpt, weight) + 5] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    torch.load(ckpt, weights_only=True)  # torch itself does not notice
    with pytest.raises(CheckpointError, match=f"{ckpt}: contents do not match the checkpoint's sha256"):
        read_checkpoint(ckpt)


def test_an_altered_config_is_refused(ckpt: Path) -> None:
    payload = torch.load(ckpt, weights_only=True)
    payload["config"]["lambda_focus"] = 123.0
    torch.save(payload, ckpt)  # the stored digest is the old one
    with pytest.raises(CheckpointError, match="sha256"):
        read_checkpoint(ckpt)


def test_truncated_and_empty_files_are_refused(ckpt: Path) -> None:
    data = ckpt.read_bytes()
    for size in (len(data) - 100, 10, 0):
        ckpt.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=f"{ckpt}: not a readable weights-only checkpoint"):
            read_checkpoint(ckpt)


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "syncstudy-checkpoint/1", "state_dict": {}, "config": {}, "meta": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint"):
        read_checkpoint(evil)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(CheckpointError):
        read_checkpoint(plain)
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_without_a_digest_still_loads(ckpt: Path) -> None:
    payload = torch.load(ckpt, weights_only=True)
    del payload[DIGEST]
    torch.save(payload, ckpt)  # written before digests existed
    assert read_checkpoint(ckpt)["meta"]["epoch"] == 1


def test_an_altered_training_state_is_refused_on_resume(tmp_path: Path) -> None:
    from syncmodel.data import load_data
    from syncmodel.training import train

    config = TrainConfig(dataset="digits", n_train=120, epochs=2, width=8, device="cpu")
    data = load_data(config)
    train(config, data=data, out_dir=tmp_path, on_epoch=lambda rec, ck: True)  # stop after epoch 1
    state = tmp_path / "checkpoint" / "train_state.pt"
    payload = torch.load(state, weights_only=True)
    payload["epoch"] = 0
    torch.save(payload, state)
    with pytest.raises(CheckpointError, match="train_state.pt: contents do not match"):
        train(config, data=data, resume=tmp_path / "checkpoint")
