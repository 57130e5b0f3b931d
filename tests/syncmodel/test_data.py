"""Data sets by name: split sizes and seeds, shapes' ground truth, offline errors.

Never touches the network: torchvision sets are pointed at empty or hand-made folders.
"""

from __future__ import annotations

import gzip
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.data.shapes import CLASS_PARTS, JITTER, LAYOUTS, draw_shapes, generate
from syncmodel.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def shapes_test():
    return generate(400, 32, stream=2)


def test_digits_split_sizes_and_shape():
    b = load_data(TrainConfig())
    assert (b.in_channels, b.image_size, b.num_classes) == (1, 16, 10)
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert len(b.test) == 359 and len(b.val) == 144
    assert b.train.images.shape[1:] == (1, 16, 16) and b.train.images.dtype == torch.float32


def test_digits_is_deterministic_for_a_seed():
    a, b = load_data(TrainConfig(seed=3)), load_data(TrainConfig(seed=3))
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)


def test_digits_test_split_does_not_depend_on_seed():
    a, b = load_data(TrainConfig(seed=0)), load_data(TrainConfig(seed=1))
    assert torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.val.labels, b.val.labels)  # the seed still moves val


def test_digits_n_train_caps_train_only():
    full, capped = load_data(TrainConfig()), load_data(TrainConfig(n_train=100))
    assert len(capped.train) == 100 and len(capped.val) == len(full.val)


def test_digits_train_is_normalised():
    b = load_data(TrainConfig(image_size=12))
    assert b.image_size == 12
    assert abs(float(b.train.images.mean())) < 1e-4 and abs(float(b.train.images.std()) - 1) < 1e-3


def test_shapes_landmark_lies_in_its_part_mask(shapes_test):
    rc = shapes_test.landmarks.round().long()  # (N, P, 2)
    present = ~torch.isnan(shapes_test.landmarks[..., 0])  # (N, P)
    n, p = present.nonzero(as_tuple=True)
    assert shapes_test.part_masks[n, p, rc[n, p, 0], rc[n, p, 1]].all()


def test_shapes_absent_parts_are_nan_with_empty_masks(shapes_test):
    absent = torch.isnan(shapes_test.landmarks).all(-1)  # (N, P)
    assert not shapes_test.part_masks[absent].any()
    assert (shapes_test.part_masks.flatten(2).any(-1) == ~absent).all()


def test_shapes_parts_are_the_class_parts(shapes_test):
    present = shapes_test.part_masks.flatten(2).any(-1)  # (N, P)
    expected = torch.zeros_like(present)
    for i, y in enumerate(shapes_test.labels.tolist()):
        expected[i, list(CLASS_PARTS[y])] = True
    assert torch.equal(present, expected)


def test_shapes_parts_do_not_overlap(shapes_test):
    assert shapes_test.part_masks.sum(1).max() <= 1


def test_shapes_part_pixels_brighter_than_background(shapes_test):
    imgs = shapes_test.images[:, 0]  # (N, H, W)
    ink = shapes_test.part_masks.any(1)  # (N, H, W)
    assert float(imgs[ink].mean()) > float(imgs[~ink].mean()) + 0.3


def test_shapes_data_is_the_same_for_every_training_seed():
    a = load_data(TrainConfig(dataset="shapes", n_train=200, seed=0))
    b = load_data(TrainConfig(dataset="shapes", n_train=200, seed=5))
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.train.labels, b.train.labels)
    assert (len(a.train), len(a.val), len(a.test)) == (200, 22, 1000)
    assert a.part_names == ["disk", "square", "triangle", "bar", "cross"]


def test_shapes_smaller_n_is_a_prefix():
    assert torch.equal(generate(1500, 32, 0).images, generate(2100, 32, 0).images[:1500])


def test_shapes_10k_generation_time(capsys):
    start = time.perf_counter()
    split = generate(10_000, 64, stream=0)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\nshapes: 10,000 64x64 images in {elapsed:.2f} s")  # reported, not asserted
    assert len(split) == 10_000


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_part_offsets_keep_the_class_layout_within_the_jitter(size):
    d = draw_shapes(300, size, np.random.default_rng(0))
    layout = np.asarray(LAYOUTS)[d["labels"]] * d["spacing"][:, None, None]  # (n, 3, 2) in pixels
    got = d["centres"] - d["centres"][:, :1]  # offsets from the first part
    want = layout - layout[:, :1]
    # each centre moves by at most JITTER per coordinate, so a difference by at most twice that
    assert np.abs(got - want).max() <= 2 * JITTER * size / 32 + 1e-9
    assert np.abs(got - want).max() > 0.5 * JITTER * size / 32  # the jitter is there


def test_shapes_every_part_is_in_at_least_two_classes():
    counts = np.bincount(np.concatenate(CLASS_PARTS), minlength=5)
    assert (counts >= 2).all()
    assert len({frozenset(p) for p in CLASS_PARTS}) == len(CLASS_PARTS)  # part sets differ


def test_shapes_is_deterministic_by_seed():
    a = draw_shapes(50, 64, np.random.default_rng(3), hard=True)
    b = draw_shapes(50, 64, np.random.default_rng(3), hard=True)
    assert all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    assert torch.equal(generate(100, 64, 2, hard=True).images, generate(100, 64, 2, hard=True).images)


def test_shapes_hard_hides_parts_and_adds_an_unannotated_distractor():
    plain, hard = generate(400, 64, 2), generate(400, 64, 2, hard=True)
    present = hard.part_masks.flatten(2).any(-1)  # (N, P)
    assert present.sum(1).min() == 2 and present.sum(1).max() == 3
    for i, y in enumerate(hard.labels.tolist()):  # annotated parts are the object's own
        assert set(torch.nonzero(present[i]).flatten().tolist()) <= set(CLASS_PARTS[y])
    # the distractor's ink lies outside every annotated part (brighter than background there)
    outside = ~hard.part_masks.any(1)
    assert (hard.images[:, 0] * outside).flatten(1).amax(1).mean() > (plain.images[:, 0] * ~plain.part_masks.any(1)).flatten(1).amax(1).mean()


def test_shapes_too_small_image_size_names_field():
    with pytest.raises(ConfigError) as err:
        load_data(TrainConfig(dataset="shapes", image_size=16))
    assert err.value.field == "image_size"


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"])
def test_missing_data_root_names_the_folder(tmp_path, name):
    root = tmp_path / "nothing here"
    with pytest.raises(DataError) as err:
        load_data(TrainConfig(dataset=name, data_root=str(root)))
    assert str(root.resolve()) in str(err.value) and name in str(err.value)


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    # MNIST idx format: big-endian magic, dims, then uint8 data
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
    with gzip.open(f"{path}.gz", "wb") as f:  # torchvision checks for the archives too
        f.write(path.read_bytes())


def write_mnist(root: Path) -> None:
    """A 50-image MNIST (40 train, 10 test; random pixels, labels 0-9) in torchvision's layout."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 2049)


def test_mnist_loads_from_local_idx_files(tmp_path):
    write_mnist(tmp_path)
    b = load_data(TrainConfig(dataset="mnist", data_root=str(tmp_path), val_fraction=0.25))
    assert (len(b.train), len(b.val), len(b.test)) == (30, 10, 10)
    assert b.train.images.shape[1:] == (1, 28, 28) and b.num_classes == 10


def test_imagefolder_with_class_folders_only(tmp_path):
    from PIL import Image

    for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.new("RGB", (20, 20), colour).save(tmp_path / c / f"{i}.png")
    b = load_data(TrainConfig(dataset="imagefolder", data_root=str(tmp_path), image_size=16))
    assert b.class_names == ["blue", "red"] and len(b.test) == 4
    assert b.train.images.shape[1:] == (3, 16, 16) and len(b.train) + len(b.val) == 16


def test_fake_cifar10_has_cifar_shape():
    b = load_data(TrainConfig(dataset="fake-cifar10", n_train=100))
    assert b.train.images.shape == (100, 3, 32, 32) and b.num_classes == 10
    assert set(b.train.labels.tolist()) == set(range(10))
