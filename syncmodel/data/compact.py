"""A `DataBundle` in compact form for Ray's object store: `pack` and `unpack` (docs/design.md §2).

A bundle's images are float32 after `make_bundle` normalises them, but most data sets hold few
distinct values per channel: CIFAR, MNIST and image folders are 8-bit pictures (256 values),
digits is 17 levels upsampled 2× bilinearly (257 values). Normalisation maps each raw value to
one float32, so each channel of a split is stored as integer codes into a palette of the exact
float32 bit patterns that occur in it — uint8 codes for at most 256 values, int16 for at most
32,768 — and `unpack` looks them up again.

The palette holds normalised values, not raw ones: unpacking is a lookup, so the result is
bit-identical to the bundle that was packed whatever arithmetic a loader used (x / 255 and
x * (1 / 255) differ in the last bit for some x), and nothing is recomputed. `pack` checks
every split bit for bit and keeps a split's images float32 where the codes cannot hold them
(continuous values: shapes' and fake-cifar10's pixel noise) or would not be smaller (a few
images of distinct values): a trial always trains on exactly what `load_data` built.

Part masks (bool, one byte per pixel) are packed 8 pixels per byte; labels and landmarks
travel as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from syncmodel.data import DataBundle, Split

# Code types, narrowest first, with the most palette entries each can index.
CODE_TYPES = ((torch.uint8, 256), (torch.int16, 32768))
# Elements per step when finding a channel's values and coding it: bounds the int64
# temporaries (searchsorted's output, the lookup's index) to ~8 MB each.
CHUNK = 1 << 20
_SPLITS = ("train", "val", "test")


@dataclass
class CodedImages:
    """Images (N, C, H, W) as `palette[c][codes[:, c]]`: codes uint8 or int16, palette
    (C, K) float32, row c's first `counts[c]` entries used (the rest zero)."""

    codes: torch.Tensor
    palette: torch.Tensor
    counts: list[int]

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape


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


def _bits(images: torch.Tensor) -> torch.Tensor:
    # Compare float32 bit patterns, not values: -0.0 and 0.0 are different data, and a NaN
    # equals itself, so a lookup that returns the same bits is the same tensor.
    return images.contiguous().view(torch.int32)


def _values(channel: torch.Tensor, limit: int) -> torch.Tensor | None:
    """Sorted distinct int32 bit patterns of a flat channel, or None beyond `limit` (found
    chunk by chunk: continuous data stops after its first chunk, without sorting it all)."""
    seen = channel[:0]
    for start in range(0, len(channel), CHUNK):
        seen = torch.unique(torch.cat([seen, torch.unique(channel[start : start + CHUNK])]))
        if len(seen) > limit:
            return None
    return seen


def _code(images: torch.Tensor) -> CodedImages | None:
    """Codes for float32 images (N, C, H, W), or None when a channel has too many values."""
    if images.dtype != torch.float32 or images.ndim != 4:
        return None
    bits = _bits(images)
    c = images.shape[1]
    # one channel at a time (each a copy when C > 1): at most 1/C of the images extra at once
    palettes = []
    for ch in range(c):
        values = _values(bits[:, ch].reshape(-1), CODE_TYPES[-1][1])
        if values is None:
            return None
        palettes.append(values)
    counts = [len(p) for p in palettes]
    dtype = next(t for t, most in CODE_TYPES if max(counts, default=0) <= most)
    if images.numel() and _coded_bytes(images.shape, dtype, counts) >= images.numel() * 4:
        return None  # a small split of distinct values: its palette is as large as the images
    palette = torch.zeros(c, max(counts, default=0), dtype=torch.int32)
    codes = torch.empty(images.shape, dtype=dtype)
    for ch, values in enumerate(palettes):
        palette[ch, : len(values)] = values
        flat = bits[:, ch].reshape(-1)
        out = torch.empty(len(flat), dtype=dtype)
        for start in range(0, len(flat), CHUNK):
            out[start : start + CHUNK] = torch.searchsorted(values, flat[start : start + CHUNK])
        codes[:, ch] = out.view(codes[:, ch].shape)
    coded = CodedImages(codes=codes, palette=palette.view(torch.float32), counts=counts)
    # The check the design promises: the lookup gives back every bit, or the split stays float.
    return coded if torch.equal(_bits(_decode(coded)), bits) else None


def _coded_bytes(shape: torch.Size, dtype: torch.dtype, counts: list[int]) -> int:
    return shape.numel() * torch.empty(0, dtype=dtype).element_size() + len(counts) * max(counts) * 4


def _decode(coded: CodedImages) -> torch.Tensor:
    """The float32 images (N, C, H, W) that `coded` stands for."""
    codes, palette = coded.codes, coded.palette
    out = torch.empty(codes.shape, dtype=torch.float32)
    for ch in range(codes.shape[1]):
        src = codes[:, ch].reshape(-1)
        dst = torch.empty(len(src), dtype=torch.float32)
        for start in range(0, len(src), CHUNK):
            # codes are never negative: int16 is used for at most 32,768 values
            dst[start : start + CHUNK] = palette[ch][src[start : start + CHUNK].long()]
        out[:, ch] = dst.view(out[:, ch].shape)
    return out


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
