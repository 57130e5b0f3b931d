"""Bad input to the method's side: config ranges, image folders, checkpoints (issue 14, item 7
and 8). Each is refused by the project's own error naming the field, folder or file, before
anything is trained; a documented-valid value (val_fraction 0) trains."""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import threading
import zlib
from pathlib import Path

import pytest

from syncmodel.checkpoint import read_checkpoint, save_checkpoint
from syncmodel.checkpoint_format import split
from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.errors import CheckpointError, ConfigError, DataError
from syncmodel.files import atomic_write
from syncmodel.nets import build_model


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_outside_numpy_range_is_refused(seed: int) -> None:
    with pytest.raises(ConfigError, match=r"^train\.seed: must be") as exc:
        TrainConfig.from_dict({"seed": seed}, prefix="train.")
    assert exc.value.field == "train.seed"


def test_seed_range_ends_are_accepted() -> None:
    assert TrainConfig(seed=0).seed == 0 and TrainConfig(seed=2**32 - 1).seed == 2**32 - 1


@pytest.mark.parametrize("device", ["tpu", "cuda:", "cuda:x", "CPU", "", "cpu "])
def test_unknown_device_is_refused(device: str) -> None:
    with pytest.raises(ConfigError, match="^device: must be auto, cpu, mps, cuda or cuda:N"):
        TrainConfig(device=device)


@pytest.mark.parametrize("device", ["auto", "cpu", "mps", "cuda", "cuda:0", "cuda:12"])
def test_documented_devices_are_accepted(device: str) -> None:
    assert TrainConfig(device=device).device == device


def test_val_fraction_zero_trains_without_a_validation_split() -> None:
    from syncmodel.training import train

    config = TrainConfig(dataset="digits", epochs=1, n_train=64, width=4, val_fraction=0.0, device="cpu")
    result = train(config)
    assert result.status == "ok"
    assert math.isnan(result.metrics["val_acc"]) and math.isnan(result.history[0]["spread"])
    assert 0.0 <= result.metrics["test_acc"] <= 1.0  # the test split is still measured


# --- image folders ---------------------------------------------------------------------------


def _folder(root: Path, counts: dict[str, int]) -> Path:
    from PIL import Image

    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (6, 6), (40 * i % 256, 0, 200)).save(root / name / f"{i}.png")
    return root


def _load(root: Path, **kw: object):
    return load_data(TrainConfig(dataset="imagefolder", data_root=str(root), image_size=8, **kw))


@pytest.mark.parametrize("n", [2, 3, 4])
def test_tiny_image_folder_is_refused_naming_it(tmp_path: Path, n: int) -> None:
    root = _folder(tmp_path / "imgs", {"a": n - n // 2, "b": n // 2})
    with pytest.raises(DataError, match=f"^imagefolder {root}: .* (holds out none|split empty)"):
        _load(root)


def test_tiny_image_folder_with_val_fraction_zero_needs_only_train_and_test(tmp_path: Path) -> None:
    bundle = _load(_folder(tmp_path, {"a": 5, "b": 5}), val_fraction=0.0)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (8, 0, 2)


def test_one_class_folder_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"only": 20})
    with pytest.raises(DataError, match=f"^imagefolder: {root} has 1 class folder \\(only\\); a classifier needs at least 2"):
        _load(root)


def test_empty_class_folder_is_refused_not_dropped(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": 10, "b": 10})
    (root / "c").mkdir()
    with pytest.raises(DataError, match=f"^imagefolder: class folder {root / 'c'} holds no images"):
        _load(root)


def test_hidden_folders_are_not_classes(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": 10, "b": 10})
    (root / ".ipynb_checkpoints").mkdir()
    assert _load(root).class_names == ["a", "b"]


def _png_bomb(path: Path, side: int = 20000) -> None:
    """A 1-bit grayscale PNG of side² pixels, all zero: ~50 KB on disk, 400 M pixels decoded."""
    comp = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": 10, "b": 10})
    bomb = root / "a" / "zz.png"
    _png_bomb(bomb)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(DataError, match=f"^imagefolder: refusing image {bomb} .*decompression bomb"):
        _load(root)


def test_unreadable_image_is_refused_naming_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": 10, "b": 10})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match=f"^imagefolder: cannot read image {root / 'b' / 'broken.jpg'}"):
        _load(root)


def test_fifo_named_like_an_image_is_skipped_not_read(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": 10, "b": 10})
    fifo = root / "a" / "z.jpg"
    os.mkfifo(fifo)
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(_load(root)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # blocked in open(): give it a writer so that the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the loader blocked reading a FIFO")
    (bundle,) = got
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 20


# --- checkpoints and files -------------------------------------------------------------------

META = {"in_channels": 1, "num_classes": 10, "image_size": 8, "layers": ["features.0"], "epoch": 1}


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("in_channels", "1", "must be int"), ("num_classes", 0, "must be positive"),
     ("image_size", True, "must be int"), ("layers", ["features.0", 3], "must be a list of names")],
)  # fmt: skip
def test_checkpoint_meta_of_wrong_type_is_refused(tmp_path: Path, key: str, value: object, says: str) -> None:
    config = TrainConfig(dataset="digits", width=4)
    path = save_checkpoint(tmp_path, build_model(config, 1, 10, 8), config, {**META, key: value})
    with pytest.raises(CheckpointError, match=f"^{path}: checkpoint meta '{key}' {says}"):
        read_checkpoint(path)


def test_checkpoint_meta_without_shapes_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(dataset="digits", width=4)
    meta = {k: v for k, v in META.items() if k != "image_size"}
    path = save_checkpoint(tmp_path, build_model(config, 1, 10, 8), config, meta)
    with pytest.raises(CheckpointError, match="checkpoint meta lacks 'image_size'"):
        read_checkpoint(path)
    assert json.loads(split(path.read_bytes(), path)[1]["meta"]) == meta  # the file itself parses


def test_atomic_write_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "x.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
