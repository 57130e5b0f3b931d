"""Object-store size of a study's data bundle: float32 `DataBundle` vs `syncmodel.data.compact`'s
packed form, with the time to pack (once per study, in the loading task) and to unpack (once
per worker process).

Sizes are what Ray stores for the object (`SerializationContext.serialize(obj).total_bytes`, as
`ray.put` would; no Ray started) and the pickle (protocol 5) beside it. Cases, at the sizes the
studies use:

- digits: studies/digits.yaml (default config: 16 px, all 1,797 images);
- shapes: studies/shapes.yaml (n_train 2000, 64 px, part masks and landmarks);
- fake-cifar10: n_train 50,000 (CIFAR-10's train size), generated 8-bit pixels;
- cifar10-shaped: CIFAR-10's sizes (50,000 train images of 3x32x32 uint8, 10,000 test) read
  through the CIFAR loader's own code (`_to_tensors`, `_finish`) from random uint8 pixels, as no
  CIFAR-10 is on this machine. Sizes depend on the shapes and dtypes only (nothing is
  compressed), so they are CIFAR-10's.

    python bench/bundle_size.py                      # all cases, one JSON object per line
    python bench/bundle_size.py --cases digits shapes
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from types import SimpleNamespace

import numpy as np
import torch

from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, load_data
from syncmodel.data.compact import CodedImages, pack, unpack


def _cifar_shaped() -> DataBundle:
    from syncmodel.data.torchvision_sets import _finish, _to_tensors

    rng = np.random.default_rng(0)

    def fake(n: int) -> SimpleNamespace:  # what torchvision's CIFAR10 holds: .data (N, 32, 32, 3) uint8
        return SimpleNamespace(data=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                               targets=list(np.arange(n) % 10))

    config = TrainConfig(dataset="cifar10")
    names = [f"class{i}" for i in range(10)]
    return _finish("cifar10", config, _to_tensors(fake(50000)), _to_tensors(fake(10000)), names)


CASES = {
    "digits": lambda: load_data(TrainConfig(dataset="digits")),
    "shapes": lambda: load_data(TrainConfig(dataset="shapes", n_train=2000)),
    "fake-cifar10": lambda: load_data(TrainConfig(dataset="fake-cifar10", n_train=50000)),
    "cifar10-shaped": _cifar_shaped,
}


def _sizes(obj: object) -> dict[str, int]:
    from ray._private.worker import global_worker

    return {
        "ray_bytes": int(global_worker.get_serialization_context().serialize(obj).total_bytes),
        "pickle_bytes": len(pickle.dumps(obj, protocol=5)),
    }


def measure(name: str) -> dict[str, object]:
    bundle = CASES[name]()
    t0 = time.perf_counter()
    packed = pack(bundle)
    t1 = time.perf_counter()
    back = unpack(packed)
    t2 = time.perf_counter()
    for s in ("train", "val", "test"):  # the bench measures the real thing or nothing
        a, b = getattr(bundle, s).images, getattr(back, s).images
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), s
    codes = {
        s: (str(img.codes.dtype).removeprefix("torch.") if isinstance(img, CodedImages) else "float32")
        for s in ("train", "val", "test")
        for img in [getattr(packed, s).images]
    }
    sizes = {"float": _sizes(bundle), "packed": _sizes(packed)}
    return {
        "case": name,
        "images": {s: list(getattr(bundle, s).images.shape) for s in ("train", "val", "test")},
        "codes": codes,
        "float_mb": round(sizes["float"]["ray_bytes"] / 1e6, 2),
        "packed_mb": round(sizes["packed"]["ray_bytes"] / 1e6, 2),
        "ratio": round(sizes["float"]["ray_bytes"] / sizes["packed"]["ray_bytes"], 2),
        "bytes": sizes,
        "pack_s": round(t1 - t0, 2),
        "unpack_s": round(t2 - t1, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    args = parser.parse_args()
    for name in args.cases:
        print(json.dumps(measure(name)), flush=True)


if __name__ == "__main__":
    main()
