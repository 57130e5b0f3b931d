"""Checkpoints: a model.safetensors round-trips the model exactly, its digest refuses an altered
byte anywhere (weights, index, config, meta), it is checked without torch, and a model.pt of
an earlier release still loads (weights-only) or converts; refusals name the file."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch

from syncmodel.checkpoint import (
    convert_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    with_digest,
)
from syncmodel.checkpoint_format import DIGEST, LEGACY_FORMAT, WEIGHTS, read_checkpoint_file
from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError
from syncmodel.nets import build_model

META = {"in_channels": 1, "num_classes": 10, "image_size": 8, "layers": ["features.0"], "epoch": 1}
ROOT = Path(__file__).resolve().parents[2]


def _model(config: TrainConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(config, 1, 10, 8)
    # running statistics away from their (0, 1) init, so a buffer left out would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(7)
    return model.eval()


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    config = TrainConfig(dataset="digits", width=8)
    return save_checkpoint(tmp_path, _model(config), config, META)


def _rewrite_header(path: Path, change: callable) -> None:  # type: ignore[valid-type]
    """Rewrite the file's JSON header through `change(header)`, keeping its data bytes."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = change(json.loads(data[8 : 8 + n]))
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


def test_a_model_round_trips_exactly(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", width=8)
    model = _model(config)
    path = save_checkpoint(tmp_path, model, config, META)
    assert path == tmp_path / WEIGHTS and sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS]
    loaded, config2, meta = load_checkpoint(path)
    assert config2 == config and meta == META
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and any("num_batches_tracked" in k for k in before)
    for k in before:
        assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))  # same weights, same kernels: the same bits


def test_the_file_holds_only_tensors_and_strings(ckpt: Path) -> None:
    with safetensors.safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
        assert set(meta) == {"format", "config", "meta", DIGEST}
        assert json.loads(meta["meta"]) == META
        assert all(f.get_tensor(k).is_contiguous() for k in f.keys())


def test_an_altered_weight_is_refused_though_safetensors_loads_it(ckpt: Path) -> None:
    data = bytearray(ckpt.read_bytes())
    data[-5] ^= 0xFF  # a byte of the last tensor's data
    ckpt.write_bytes(bytes(data))
    safetensors.torch.load_file(ckpt)  # the format itself does not notice
    for read in (read_checkpoint, read_checkpoint_file):
        with pytest.raises(CheckpointError, match=f"^{ckpt}: contents do not match the checkpoint's sha256"):
            read(ckpt)


def _swap_two_tensors(header: dict) -> dict:
    # two tensors of one dtype and shape: safetensors would load them swapped without a word
    same = [(a, b) for a in header for b in header if a < b and a != "__metadata__" != b
            and (header[a]["dtype"], header[a]["shape"]) == (header[b]["dtype"], header[b]["shape"])]
    a, b = same[0]
    header[a], header[b] = header[b], header[a]
    return header


def _alter_config(header: dict) -> dict:
    config = json.loads(header["__metadata__"]["config"])
    config["lambda_focus"] = 123.0
    header["__metadata__"]["config"] = json.dumps(config)
    return header


@pytest.mark.parametrize("change", [_swap_two_tensors, _alter_config])
def test_an_altered_header_is_refused(ckpt: Path, change: callable) -> None:  # type: ignore[valid-type]
    _rewrite_header(ckpt, change)
    for read in (read_checkpoint, read_checkpoint_file):
        with pytest.raises(CheckpointError, match="sha256"):
            read(ckpt)


def test_truncated_empty_and_foreign_files_are_refused(ckpt: Path) -> None:
    data = ckpt.read_bytes()
    for size in (len(data) - 100, 100, 10, 0):
        ckpt.write_bytes(data[:size])
        for read in (read_checkpoint, read_checkpoint_file):
            with pytest.raises(CheckpointError, match=f"^{ckpt}: not a readable weights-only checkpoint"):
                read(ckpt)
    safetensors.torch.save_file({"w": torch.zeros(2)}, ckpt)  # a safetensors file, not ours
    for read in (read_checkpoint, read_checkpoint_file):
        with pytest.raises(CheckpointError, match=f"^{ckpt}: not a syncstudy checkpoint"):
            read(ckpt)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint(ckpt.parent / "absent")


def test_it_is_checked_without_torch(ckpt: Path) -> None:
    code = (
        "import sys; from syncmodel.checkpoint_format import read_checkpoint_file as r; "
        f"p = r({str(ckpt)!r}); assert p['meta']['epoch'] == 1 and p['config']['width'] == 8; "
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------ model.pt of earlier releases
def _legacy(path: Path, model: torch.nn.Module, config: TrainConfig) -> Path:
    """What save_checkpoint wrote before safetensors: torch.save of a digested payload."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    torch.save(with_digest({"format": LEGACY_FORMAT, "state_dict": state, "config": config.to_dict(), "meta": META}), path)
    return path


def test_a_legacy_model_pt_loads_and_converts_exactly(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", width=8)
    model = _model(config)
    (tmp_path / "old").mkdir()
    old = _legacy(tmp_path / "old" / "model.pt", model, config)
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x)
        for path in (old, old.parent):  # the file, or the folder holding it
            assert torch.equal(load_checkpoint(path)[0](x), want)
        new = convert_checkpoint(old, tmp_path / "new")
        assert new == tmp_path / "new" / WEIGHTS and read_checkpoint_file(new)["meta"] == META
        assert torch.equal(load_checkpoint(new)[0](x), want)
    # the torch-free reader names what reads it instead
    with pytest.raises(CheckpointError, match="model.pt checkpoint of an earlier release; .*load_checkpoint"):
        read_checkpoint_file(old.parent)


def test_a_legacy_model_pt_is_still_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrainConfig(dataset="digits", width=8)
    old = _legacy(tmp_path / "model.pt", _model(config), config)
    payload = torch.load(old, weights_only=True)
    payload["config"]["lambda_focus"] = 123.0
    torch.save(payload, old)  # the stored digest is the old one
    with pytest.raises(CheckpointError, match=f"^{old}: contents do not match"):
        read_checkpoint(old)
    del payload[DIGEST]
    torch.save(payload, old)  # written before digests existed: accepted
    assert read_checkpoint(old)["config"]["lambda_focus"] == 123.0

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("touch pwned",))

    monkeypatch.chdir(tmp_path)
    torch.save({"format": LEGACY_FORMAT, "state_dict": {}, "config": {}, "meta": Payload()}, old)
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint"):
        read_checkpoint(old)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps(Payload(), protocol=2))
    with pytest.raises(CheckpointError):
        read_checkpoint(tmp_path / "plain.pkl")
    assert not (tmp_path / "pwned").exists()


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
