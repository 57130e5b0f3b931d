"""Compact bundles (syncmodel.data.compact): codes where lossless, float32 where not, and a
trial trains on exactly the same data either way."""

from __future__ import annotations

import numpy as np
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, Split, load_data
from syncmodel.data.compact import BitMasks, CodedImages, pack, unpack
from syncmodel.training import train
from tests.syncmodel.test_data import write_mnist

SPLITS = ("train", "val", "test")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def _assert_round_trip(bundle: DataBundle) -> DataBundle:
    back = unpack(pack(bundle))
    for s in SPLITS:
        a, b = getattr(bundle, s), getattr(back, s)
        assert _same_bits(a.images, b.images), s
        assert torch.equal(a.labels, b.labels), s
    return back


def _bundle(train: torch.Tensor, val: torch.Tensor, test: torch.Tensor) -> DataBundle:
    def split(x: torch.Tensor) -> Split:
        return Split(images=x, labels=torch.arange(len(x)) % 2)

    return DataBundle(
        name="hand", train=split(train), val=split(val), test=split(test), num_classes=2,
        in_channels=int(train.shape[1]), image_size=int(train.shape[-1]), mean=[0.5], std=[0.25],
    )


def test_codes_index_the_sorted_values_of_each_channel():
    # channel 0 holds {0.25, 0.5, 0.75}, channel 1 {2.0, 4.0}: codes are ranks in each channel
    # (repeated 8 times, so that codes + palette are smaller than the float32 images)
    x = torch.tensor([[[[0.75, 0.25]], [[4.0, 2.0]]], [[[0.5, 0.5]], [[2.0, 2.0]]]])  # (2, 2, 1, 2)
    x = x.repeat(8, 1, 1, 1)
    coded = pack(_bundle(x, x, x)).train.images
    assert isinstance(coded, CodedImages) and coded.codes.dtype == torch.uint8
    assert coded.codes[:2].tolist() == [[[[2, 0]], [[1, 0]]], [[[1, 1]], [[0, 0]]]]
    assert coded.counts == [3, 2]


def test_more_than_256_values_use_int16_codes():
    x = (torch.arange(300, dtype=torch.float32) / 7).reshape(3, 1, 10, 10).repeat(4, 1, 1, 1)
    packed = pack(_bundle(x, x[:1], x[:1]))
    assert packed.train.images.codes.dtype == torch.int16
    assert _same_bits(unpack(packed).train.images, x)


def test_continuous_split_stays_float32_while_the_others_pack():
    grid = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 16
    noise = torch.rand(40000, generator=torch.Generator().manual_seed(0)).reshape(25, 1, 40, 40)
    packed = pack(_bundle(grid.repeat(5, 1, 1, 1), grid.repeat(3, 1, 1, 1), noise))  # 40,000 values > 32,768
    assert packed.coded_splits() == ["train", "val"]
    assert packed.test.images is noise


def test_round_trip_keeps_the_sign_of_zero_and_nan():
    x = torch.tensor([0.0, -0.0, float("nan"), 1.0]).reshape(1, 1, 2, 2).repeat(8, 1, 1, 1)
    packed = pack(_bundle(x, x, x))
    assert packed.coded_splits() == list(SPLITS)
    back = unpack(packed).train.images
    assert _same_bits(back, x) and torch.signbit(back.flatten()[1])


def test_part_masks_pack_eight_pixels_a_byte_and_come_back():
    masks = torch.rand(4, 5, 7, 7, generator=torch.Generator().manual_seed(1)) < 0.3  # 245 bits
    split = Split(torch.zeros(4, 1, 7, 7), torch.zeros(4, dtype=torch.long), part_masks=masks)
    bundle = DataBundle("hand", split, split, split, 2, 1, 7)
    packed = pack(bundle)
    assert isinstance(packed.train.part_masks, BitMasks)
    assert packed.train.part_masks.bits.shape == (4, 31)  # ceil(245 / 8)
    assert torch.equal(unpack(packed).train.part_masks, masks)


def test_unpack_passes_a_float_bundle_through():
    bundle = load_data(TrainConfig(n_train=100))
    assert unpack(bundle) is bundle


def test_digits_packs_losslessly_as_int16():
    # 17 levels upsampled 2x bilinearly: 257 values (k / 256), one too many for uint8
    bundle = load_data(TrainConfig())
    packed = pack(bundle)
    assert packed.coded_splits() == list(SPLITS)
    assert packed.train.images.codes.dtype == torch.int16
    back = _assert_round_trip(bundle)
    assert (back.mean, back.std, back.class_names) == (bundle.mean, bundle.std, bundle.class_names)


def test_digits_at_native_size_packs_as_uint8():
    bundle = load_data(TrainConfig(image_size=8))
    assert pack(bundle).train.images.codes.dtype == torch.uint8
    _assert_round_trip(bundle)


def test_mnist_packs_losslessly_as_uint8(tmp_path):
    write_mnist(tmp_path)
    bundle = load_data(TrainConfig(dataset="mnist", data_root=str(tmp_path), val_fraction=0.25))
    packed = pack(bundle)
    assert packed.coded_splits() == list(SPLITS)
    assert packed.train.images.codes.dtype == torch.uint8
    _assert_round_trip(bundle)


def test_rgb_image_folder_packs_losslessly_as_uint8(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    bundle = load_data(TrainConfig(dataset="imagefolder", data_root=str(tmp_path), image_size=16))
    packed = pack(bundle)
    assert packed.coded_splits() == list(SPLITS)
    assert packed.train.images.codes.dtype == torch.uint8
    _assert_round_trip(bundle)


def test_shapes_continuous_noise_stays_float32_and_its_masks_pack():
    bundle = load_data(TrainConfig(dataset="shapes", n_train=100, image_size=32))
    packed = pack(bundle)
    assert packed.coded_splits() == []
    back = _assert_round_trip(bundle)
    assert isinstance(packed.test.part_masks, BitMasks)
    assert torch.equal(back.test.part_masks, bundle.test.part_masks)
    assert torch.equal(back.test.landmarks.isnan(), bundle.test.landmarks.isnan())


def test_fake_cifar10_packs_losslessly_as_uint8():
    bundle = load_data(TrainConfig(dataset="fake-cifar10", n_train=500))
    packed = pack(bundle)
    assert packed.coded_splits() == list(SPLITS)
    assert packed.train.images.codes.dtype == torch.uint8
    _assert_round_trip(bundle)


def test_training_on_the_unpacked_bundle_is_identical():
    config = TrainConfig(dataset="digits", n_train=300, epochs=2, width=8, batch_size=64, device="cpu",
                         lambda_focus=0.1, coupling_K=0.1)
    bundle = load_data(config)
    back = unpack(pack(bundle))
    assert back is not bundle and back.train.images.data_ptr() != bundle.train.images.data_ptr()
    a, b = train(config, data=bundle), train(config, data=back)
    assert a.metrics["test_acc"] == b.metrics["test_acc"]
    assert [r["val_acc"] for r in a.history] == [r["val_acc"] for r in b.history]
    wa, wb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_codes_that_would_not_be_smaller_keep_float32():
    # 100 distinct values in 100 pixels: int16 codes (200 B) + palette (400 B) > float32 (400 B)
    x = torch.arange(100, dtype=torch.float32).reshape(1, 1, 10, 10)
    big = torch.zeros(10, 1, 10, 10)
    assert pack(_bundle(big, x, big)).coded_splits() == ["train", "test"]


def test_a_value_missing_from_the_first_block_is_found_by_the_survey(monkeypatch):
    import syncmodel.data.compact as compact

    monkeypatch.setattr(compact, "CHUNK", 16)  # blocks of one 4x4 image
    x = torch.zeros(12, 1, 4, 4)
    x[:6, 0, 0, 0], x[9, 0, 2, 3] = 0.5, 0.75  # 0.75 only in a late block
    packed = pack(_bundle(x, x, x))
    assert packed.train.images.counts == [3]
    assert _same_bits(unpack(packed).train.images, x)


def test_many_values_are_coded_by_binary_search():
    # 5,000 values: more than the hash table's 16 bits can tell apart
    x = (torch.arange(5000, dtype=torch.float32) / 3).repeat(4).reshape(8, 1, 50, 50)
    packed = pack(_bundle(x, x, x))
    assert packed.train.images.codes.dtype == torch.int16 and packed.train.images.counts == [5000]
    assert _same_bits(unpack(packed).train.images, x)
