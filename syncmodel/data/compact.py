"""A `DataBundle` in compact form for Ray's object store: `pack` and `unpack` (docs/design.md §2).

A bundle's images are float32 after `make_bundle` normalises them, but most data sets hold
few distinct values per channel: CIFAR, MNIST, image folders and fake-cifar10 are 8-bit
pictures (256 values), digits is 17 levels upsampled 2x bilinearly (257 values).
Normalisation maps each raw value to one float32, so each channel of a split is stored as
integer codes into a palette of the exact float32 bit patterns that occur in it (uint8 codes
for at most 256 values, int16 for at most 32,768), and `unpack` looks them up again.

The palette holds normalised values, not raw ones: unpacking is a lookup, so the result is
bit-identical to the bundle that was packed whatever arithmetic a loader used (x / 255 and
x * (1 / 255) differ in the last bit for 126 of the 256 bytes), and nothing is recomputed.
`pack` checks every element bit for bit and keeps a split's images float32 where codes cannot
hold them (continuous values: shapes' pixel noise) or would not be smaller (a few images of
distinct values): a trial always trains on exactly what `load_data` built.

Part masks (bool, one byte per pixel) are packed 8 pixels per byte; labels and landmarks
travel as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from syncmodel.data import DataBundle, Split

# Code types, narrowest first, with the most palette entries each can index.
CODE_TYPES = ((np.uint8, 256), (np.int16, 32768))
# Elements per step when coding and decoding: bounds the temporaries to a few MB each.
CHUNK = 1 << 20
# Odd 32-bit multipliers for the hash that finds a value's code (`_HashIndex`); fixed, so that
# packing is deterministic. With <= 256 values one of the first few is injective almost surely.
_MULTIPLIERS = np.random.default_rng(0).integers(1, 2**32, size=64, dtype=np.uint64).astype(np.uint32) | 1
_SPLITS = ("train", "val", "test")


@dataclass
class CodedImages:
    """Images (N, C, H, W) as `palette[c][codes[:, c]]`: codes uint8 or int16, palette
    (C, K) float32, row c's first `counts[c]` entries used (the rest zero)."""

    codes: torch.Tensor
    palette: torch.Tensor
    counts: list[int]


@dataclass
class BitMasks:
    """Bool masks of `shape` (N, ..., H, W), 8 pixels per byte (`numpy.packbits` per image)."""

    bits: torch.Tensor  # (N, ceil(prod(shape[1:]) / 8)) uint8
    shape: tuple[int, ...]


@dataclass
class PackedSplit:
    images: torch.Tensor | CodedImages  # float32 where codes could not hold them, or not smaller
    labels: torch.Tensor
    landmarks: torch.Tensor | None = None
    part_masks: torch.Tensor | BitMasks | None = None

    @property
    def coded(self) -> bool:
        return isinstance(self.images, CodedImages)


@dataclass
class PackedBundle:
    """What `pack` returns: the three splits packed, every other `DataBundle` field as is."""

    train: PackedSplit
    val: PackedSplit
    test: PackedSplit
    meta: dict  # the DataBundle's fields other than the splits (name, num_classes, mean, ...)

    @property
    def name(self) -> str:
        return self.meta["name"]

    def coded_splits(self) -> list[str]:
        """The splits whose images travel as codes (the others stay float32)."""
        return [s for s in _SPLITS if getattr(self, s).coded]


def _bits(images: torch.Tensor) -> np.ndarray:
    # Compare float32 bit patterns, not values: -0.0 and 0.0 are different data, and a NaN
    # equals itself, so a lookup that returns the same bits is the same tensor.
    return images.contiguous().numpy().view(np.int32)


def _unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct elements of `a`, flattened. By sorting: numpy 2.4's np.unique hashes,
    which takes seconds on a million distinct values (the first block of continuous data)."""
    s = np.sort(a, axis=None)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s


def _rows(channel: np.ndarray) -> int:
    """Images per block of a channel (N, H, W): about CHUNK elements."""
    return max(1, CHUNK // max(1, int(np.prod(channel.shape[1:]))))


def _values(channel: np.ndarray, limit: int) -> np.ndarray | None:
    """Sorted distinct int32 bit patterns of a channel (N, H, W), or None beyond `limit`
    (found block by block: continuous data stops after its first block)."""
    seen = np.empty(0, dtype=np.int32)
    rows = _rows(channel)
    for start in range(0, len(channel), rows):
        seen = _unique(np.concatenate([seen, channel[start : start + rows].ravel()]))
        if len(seen) > limit:
            return None
    return seen


class _HashIndex:
    """value bits -> code, for sorted distinct `values`: a table of 2^16 codes indexed by the
    top 16 bits of `bits * multiplier` (mod 2^32), with a multiplier that is injective on
    `values` (else a binary search). A value outside `values` gets some code: callers check."""

    def __init__(self, values: np.ndarray, dtype: type) -> None:
        self.values, self.dtype = values, dtype
        self.multiplier: np.uint32 | None = None
        u = values.view(np.uint32)
        for m in _MULTIPLIERS if len(values) <= 4096 else ():  # 16 bits hold no more
            h = (u * m) >> 16
            if len(_unique(h)) == len(values):
                self.multiplier = m
                self.table = np.zeros(1 << 16, dtype=dtype)
                self.table[h] = np.arange(len(values), dtype=dtype)
                break

    def __call__(self, bits: np.ndarray) -> np.ndarray:
        if self.multiplier is None:
            return np.searchsorted(self.values, bits).astype(self.dtype)
        return self.table[(bits.view(np.uint32) * self.multiplier) >> 16]


def _code_channel(channel: np.ndarray, out: np.ndarray) -> np.ndarray | None:
    """Codes of a channel (N, H, W) of int32 bits written into `out` (N, H, W); returns the
    palette (sorted bits), or None when the channel has more than 32,768 values."""
    limit, rows = CODE_TYPES[-1][1], _rows(channel)
    # The palette of the first block serves (8-bit images show all their values there); a value
    # it lacks shows up in the check below, and then the whole channel is surveyed.
    for survey in (False, True):
        values = _values(channel, limit) if survey else _unique(channel[:rows])
        if values is None or len(values) > limit:
            return None
        index = _HashIndex(values, next(t for t, most in CODE_TYPES if len(values) <= most))
        for start in range(0, len(channel), rows):
            block = channel[start : start + rows]
            codes = index(block)
            if not np.array_equal(values[codes], block):  # every element checked, bit for bit
                break
            out[start : start + rows] = codes
        else:
            return values
    return None  # not reached: a surveyed palette holds every value


def _code(images: torch.Tensor) -> CodedImages | None:
    """Codes for float32 images (N, C, H, W), or None when a channel has too many values or
    the codes would not be smaller than the images."""
    if images.dtype != torch.float32 or images.ndim != 4:
        return None
    bits = _bits(images)
    c = images.shape[1]
    codes = np.empty(images.shape, dtype=CODE_TYPES[-1][0])  # narrowed below where it can be
    palettes = []
    for ch in range(c):
        values = _code_channel(bits[:, ch], codes[:, ch])
        if values is None:
            return None
        palettes.append(values)
    counts = [len(p) for p in palettes]
    dtype = next(t for t, most in CODE_TYPES if max(counts, default=0) <= most)
    size = codes.size * np.dtype(dtype).itemsize + c * max(counts, default=0) * 4
    if images.numel() and size >= images.numel() * 4:
        return None  # a small split of distinct values: its palette is as large as the images
    palette = np.zeros((c, max(counts, default=0)), dtype=np.int32)
    for ch, values in enumerate(palettes):
        palette[ch, : len(values)] = values
    return CodedImages(
        codes=torch.from_numpy(codes.astype(dtype, copy=False)),
        palette=torch.from_numpy(palette.view(np.float32)),
        counts=counts,
    )


def _decode(coded: CodedImages) -> torch.Tensor:
    """The float32 images (N, C, H, W) that `coded` stands for."""
    codes, palette = coded.codes.numpy(), coded.palette.numpy()
    out = np.empty(codes.shape, dtype=np.float32)
    rows = _rows(codes[:, 0]) if codes.ndim == 4 and codes.shape[1] else 1
    for ch in range(codes.shape[1]):
        for start in range(0, len(codes), rows):
            # codes are never negative: int16 is used for at most 32,768 values
            out[start : start + rows, ch] = palette[ch][codes[start : start + rows, ch]]
    return torch.from_numpy(out)


def _pack_masks(masks: torch.Tensor) -> BitMasks | torch.Tensor:
    if masks.dtype != torch.bool:
        return masks
    flat = masks.reshape(len(masks), -1).numpy()
    return BitMasks(bits=torch.from_numpy(np.packbits(flat, axis=1)), shape=tuple(masks.shape))


def _unpack_masks(masks: BitMasks | torch.Tensor) -> torch.Tensor:
    if not isinstance(masks, BitMasks):
        return masks
    n_bits = int(np.prod(masks.shape[1:], dtype=np.int64))
    flat = np.unpackbits(masks.bits.numpy(), axis=1, count=n_bits).astype(bool)
    return torch.from_numpy(flat).reshape(masks.shape)


def pack_split(split: Split) -> PackedSplit:
    """One split in compact form; images as codes only where that is lossless."""
    coded = _code(split.images)
    masks = None if split.part_masks is None else _pack_masks(split.part_masks)
    if isinstance(masks, BitMasks) and not torch.equal(_unpack_masks(masks), split.part_masks):
        masks = split.part_masks  # never expected (packbits is exact); checked all the same
    return PackedSplit(
        images=coded if coded is not None else split.images,
        labels=split.labels,
        landmarks=split.landmarks,
        part_masks=masks,
    )


def unpack_split(packed: PackedSplit) -> Split:
    images = _decode(packed.images) if isinstance(packed.images, CodedImages) else packed.images
    masks = None if packed.part_masks is None else _unpack_masks(packed.part_masks)
    return Split(images=images, labels=packed.labels, landmarks=packed.landmarks, part_masks=masks)


def pack(bundle: DataBundle) -> PackedBundle:
    """`bundle` in compact form (module docstring); `unpack` gives back a bundle equal to it bit
    for bit. Splits whose images the codes cannot hold keep float32 images."""
    meta = {f.name: getattr(bundle, f.name) for f in fields(bundle) if f.name not in _SPLITS}
    return PackedBundle(*(pack_split(getattr(bundle, s)) for s in _SPLITS), meta=meta)


def unpack(packed: PackedBundle | DataBundle) -> DataBundle:
    """The `DataBundle` that was packed, on the CPU (a `DataBundle` passes through).

    On the CPU because training and evaluation take CPU bundles: training moves the train
    split to its device once per trial and val/test batch by batch, and evaluation draws
    pictures from the images with numpy.
    """
    if isinstance(packed, DataBundle):
        return packed
    splits = {s: unpack_split(getattr(packed, s)) for s in _SPLITS}
    return DataBundle(**splits, **packed.meta)
