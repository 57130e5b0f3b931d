"""The checkpoint read without torch (`syncmodel.checkpoint_archive`): what it returns is what
torch's weights-only load returns, it refuses every file `read_checkpoint` refuses (altered,
truncated, code-carrying), and it refuses more than torch does, never less."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from syncmodel.checkpoint import read_checkpoint, save_checkpoint, with_digest
from syncmodel.checkpoint_archive import FORMAT, TensorBytes, read_checkpoint_archive
from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError
from syncmodel.nets import build_model

META = {"in_channels": 1, "num_classes": 10, "image_size": 8, "layers": ["features.0"], "epoch": 1}


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _same(torch_payload: object, archive_payload: object) -> None:
    if isinstance(torch_payload, torch.Tensor):
        assert isinstance(archive_payload, TensorBytes)
        assert archive_payload.dtype == str(torch_payload.dtype)
        assert archive_payload.shape == tuple(torch_payload.shape)
        assert archive_payload.data == _bytes(torch_payload)
    elif isinstance(torch_payload, dict):
        assert isinstance(archive_payload, dict) and set(torch_payload) == set(archive_payload)
        for key in torch_payload:
            _same(torch_payload[key], archive_payload[key])
    else:
        assert type(torch_payload) is type(archive_payload) and torch_payload == archive_payload


@pytest.mark.parametrize("backbone", ["simple_cnn", "vgg11_bn", "resnet18"])
def test_a_saved_model_reads_back_as_torch_reads_it(tmp_path: Path, backbone: str) -> None:
    config = TrainConfig(dataset="digits", width=8, backbone=backbone)
    torch.manual_seed(0)
    model = build_model(config, 1, 10, 32)  # BatchNorm too: int64 num_batches_tracked
    path = save_checkpoint(tmp_path / "model.pt", model, config, {**META, "image_size": 32})
    _same(read_checkpoint(path), read_checkpoint_archive(path))


def test_views_offsets_and_every_dtype_give_torchs_bytes(tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {
        "offset": base[2:4],  # shares the storage at an offset
        "transposed": base.t(),  # not contiguous: torch saves the whole storage and the stride
        "strided": base[:, ::3],
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        **{str(d): torch.arange(6).to(d) for d in (torch.float16, torch.bfloat16, torch.float64, torch.int8,
                                                  torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool)},
    }  # fmt: skip
    payload = with_digest({"format": FORMAT, "state_dict": state, "config": {"lr": 0.1}, "meta": dict(META)})
    path = tmp_path / "model.pt"
    torch.save(payload, path)
    got = read_checkpoint_archive(path)
    _same(torch.load(path, weights_only=True), got)
    assert got["state_dict"]["transposed"].data == _bytes(base.t())


def test_an_altered_weight_or_config_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", width=8)
    path = save_checkpoint(tmp_path / "model.pt", build_model(config, 1, 10, 8), config, META)
    weight = max(read_checkpoint(path)["state_dict"].values(), key=lambda t: t.numel())
    data = bytearray(path.read_bytes())
    at = bytes(data).find(_bytes(weight)[:32])
    data[at + 5] ^= 0xFF
    altered = tmp_path / "altered.pt"
    altered.write_bytes(bytes(data))
    # zip keeps a CRC per member: either that or the payload's sha256 refuses it
    with pytest.raises(CheckpointError, match=f"{altered}: (contents do not match|not a readable)"):
        read_checkpoint_archive(altered)
    payload = torch.load(path, weights_only=True)
    payload["config"]["lambda_focus"] = 123.0
    torch.save(payload, path)  # a consistent zip; the stored digest is the old one
    with pytest.raises(CheckpointError, match=f"{path}: contents do not match the checkpoint's sha256"):
        read_checkpoint_archive(path)


def test_truncated_empty_and_foreign_files_are_refused(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", width=8)
    path = save_checkpoint(tmp_path / "model.pt", build_model(config, 1, 10, 8), config, META)
    data = path.read_bytes()
    for size in (len(data) - 100, 10, 0):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=f"{path}: not a readable weights-only checkpoint"):
            read_checkpoint_archive(path)
    torch.save({"format": "something-else"}, path)
    with pytest.raises(CheckpointError, match="not a syncstudy checkpoint"):
        read_checkpoint_archive(path)
    torch.save({"format": FORMAT, "state_dict": {}, "config": {}, "meta": {"in_channels": "1"}}, path)
    with pytest.raises(CheckpointError, match="meta lacks|meta 'in_channels'"):
        read_checkpoint_archive(path)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_checkpoint_archive(tmp_path / "absent.pt")


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "state_dict": {}, "config": {}, "meta": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint.*opcode|global"):
        read_checkpoint_archive(evil)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Payload(), protocol=2))
    with pytest.raises(CheckpointError, match="not a readable weights-only checkpoint"):
        read_checkpoint_archive(plain)
    assert not (tmp_path / "pwned").exists()


def test_it_refuses_more_than_torch_never_less(tmp_path: Path) -> None:
    # A state_dict() straight from a module is an OrderedDict with a `_metadata` attribute,
    # which the pickle sets with BUILD: torch's loader allows it, this reader does not
    # (save_checkpoint writes a plain dict, so a syncstudy checkpoint never has one).
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "model.pt"
    torch.save({"format": FORMAT, "state_dict": model.state_dict(), "config": {}, "meta": dict(META)}, path)
    torch.load(path, weights_only=True)
    with pytest.raises(CheckpointError, match="opcode BUILD is not allowed"):
        read_checkpoint_archive(path)


def test_the_reader_does_not_import_torch(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", width=8)
    path = save_checkpoint(tmp_path / "model.pt", build_model(config, 1, 10, 8), config, META)
    code = (
        "import sys; from syncmodel.checkpoint_archive import read_checkpoint_archive as r; "
        f"p = r({str(path)!r}); assert p['meta']['epoch'] == 1; assert 'torch' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
