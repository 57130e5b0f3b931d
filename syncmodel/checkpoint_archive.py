"""A checkpoint file read without torch: the same refusals as `read_checkpoint`, for commands
that only need to check a model.pt and read its config and meta (`syncstudy export` and
`export --verify`), where importing torch would cost more than the rest of the command.

A file `torch.save` writes is a zip archive: `<name>/data.pkl` (the payload, pickled with
tensors as persistent references to storages), `<name>/data/<key>` (each storage's raw
bytes) and `<name>/byteorder`. `read_checkpoint_archive` unpickles data.pkl with an
allow-list narrower than torch's own weights-only loader: plain data (dicts, lists, tuples,
strings, numbers, booleans, None), `collections.OrderedDict`, the storage types and
`torch._utils._rebuild_tensor_v2`, nothing else, and only the pickle opcodes that build those.
Tensors come back as `TensorBytes` (dtype name, shape, C-order bytes), enough to recompute
the payload's sha256 (`payload_digest`), which is checked like `read_checkpoint` checks it:
nothing in the file can run code, and an altered byte is refused.

The payload's format, its digest and its meta fields are defined here once; `syncmodel.checkpoint`
(which writes and loads with torch) uses the same definitions.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncmodel.errors import CheckpointError

FORMAT = "syncstudy-checkpoint/1"
DIGEST = "sha256"  # payload key: payload_digest of everything else in the payload


@dataclass(frozen=True)
class TensorBytes:
    """A tensor as the digest sees it: torch's dtype name ("torch.float32"), its shape, and
    its elements' bytes in C order (little-endian, as torch holds them on this machine)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


def payload_digest(obj: Any, as_tensor: Callable[[Any], TensorBytes | None] | None = None) -> str:
    """sha256 of a nested payload (dicts, lists, tensors, plain values), independent of the
    file's zip layout: tensors by dtype, shape and bytes; dict keys in sorted order.
    `as_tensor` turns a tensor object into `TensorBytes` (None for anything else)."""
    digest = hashlib.sha256()

    def feed(x: Any) -> None:
        t = x if isinstance(x, TensorBytes) else (as_tensor(x) if as_tensor is not None else None)
        if t is not None:
            digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.data)
        elif isinstance(x, dict):
            digest.update(f"D{len(x)}".encode())
            for key in sorted(x, key=str):
                digest.update(json.dumps(str(key)).encode())
                feed(x[key])
        elif isinstance(x, (list, tuple)):
            digest.update(f"L{len(x)}".encode())
            for item in x:
                feed(item)
        else:  # None, bool, int, float, str (repr keeps NaN, inf and int/float apart)
            digest.update(f"V{type(x).__name__}:{x!r}".encode())

    feed(obj)
    return digest.hexdigest()


def contents_digest(payload: dict[str, Any], as_tensor: Callable[[Any], TensorBytes | None] | None = None) -> str:
    """payload_digest of everything in the payload but its stored digest."""
    return payload_digest({k: v for k, v in payload.items() if k != DIGEST}, as_tensor)


def check_digest(payload: dict[str, Any], path: Path, as_tensor: Callable[[Any], TensorBytes | None] | None = None) -> None:
    """Refuse a payload whose contents do not match its stored sha256 (an absent one is
    accepted: checkpoints written before digests existed)."""
    stored = payload.get(DIGEST)
    if stored is None:
        return
    if stored != contents_digest(payload, as_tensor):
        raise CheckpointError(f"{path}: contents do not match the checkpoint's sha256 (altered or corrupted)")


def check_payload(payload: Any, path: Path) -> None:
    """The format and the three sections every syncstudy checkpoint has."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not a syncstudy checkpoint (format {found!r})")
    for key in ("state_dict", "config", "meta"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")


# meta key -> (type, required). Its shapes rebuild the model and a data set's sizes are
# compared with them: a wrong type would fail deep inside torch (a string in_channels).
META_FIELDS: dict[str, tuple[type, bool]] = {
    "in_channels": (int, True),
    "num_classes": (int, True),
    "image_size": (int, True),
    "epoch": (int, False),
    "layers": (list, False),
    "class_names": (list, False),
    "dataset": (str, False),
}


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """Refuse a meta whose shape fields are not positive integers or whose names are not
    strings; `CheckpointError` names the file and the field."""
    for key, (tp, required) in META_FIELDS.items():
        if key not in meta:
            if required:
                raise CheckpointError(f"{path}: checkpoint meta lacks {key!r}")
            continue
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, tp):
            raise CheckpointError(
                f"{path}: checkpoint meta {key!r} must be {tp.__name__}, got {str(value)[:60]!r}"
            )
        if tp is int and value < (0 if key == "epoch" else 1):
            raise CheckpointError(f"{path}: checkpoint meta {key!r} must be positive, got {value}")
        if tp is list and not all(isinstance(v, str) for v in value):
            raise CheckpointError(f"{path}: checkpoint meta {key!r} must be a list of names")


# The typed storages torch.save names in a pickle (torch/storage.py): dtype name, item size.
STORAGES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("torch.float32", 4), "DoubleStorage": ("torch.float64", 8),
    "HalfStorage": ("torch.float16", 2), "BFloat16Storage": ("torch.bfloat16", 2),
    "LongStorage": ("torch.int64", 8), "IntStorage": ("torch.int32", 4),
    "ShortStorage": ("torch.int16", 2), "CharStorage": ("torch.int8", 1),
    "ByteStorage": ("torch.uint8", 1), "BoolStorage": ("torch.bool", 1),
}  # fmt: skip

# Opcodes that build plain data, look up an allowed global and call it: no BUILD (setstate on
# an object), INST/OBJ/NEWOBJ (instances of a class), EXT* (the extension registry).
_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
    "FLOAT", "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE",
    "BINUNICODE", "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "PERSID", "BINPERSID",
})  # fmt: skip


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    itemsize: int
    data: bytes


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> TensorBytes:
    """`torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    backward_hooks[, metadata])` → the tensor's bytes, bounds-checked against its storage."""
    import numpy as np

    def ints(x: Any) -> bool:
        return isinstance(x, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in x)

    if not isinstance(storage, _Storage) or not isinstance(offset, int) or not ints(size) or not ints(stride):
        raise pickle.UnpicklingError("a tensor with a malformed storage, offset, size or stride")
    if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise pickle.UnpicklingError("a tensor whose size and stride do not fit together")
    if len(rest) < 2 or not isinstance(rest[0], bool) or not isinstance(rest[1], dict) or rest[1]:
        raise pickle.UnpicklingError("a tensor with backward hooks or a malformed requires_grad")
    if len(rest) > 3 or (len(rest) == 3 and not isinstance(rest[2], dict)):
        raise pickle.UnpicklingError("a tensor with unexpected rebuild arguments")
    numel = 1
    for n in size:
        numel *= n
    items = len(storage.data) // storage.itemsize
    if numel:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= items:
            raise pickle.UnpicklingError("a tensor that reaches past its storage")
        flat = np.frombuffer(storage.data, dtype=np.dtype(f"V{storage.itemsize}"))
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride), writeable=False
        )  # fmt: skip
        data = view.tobytes()  # C order
    else:
        data = b""
    return TensorBytes(storage.dtype, tuple(size), data)


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storage: Callable[[str], bytes]):
        super().__init__(io.BytesIO(data))
        self._storage = storage

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, location, number of elements)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent reference {str(pid)[:80]}")
        _, kind, key, _location, numel = pid
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("a malformed storage reference")
        dtype, itemsize = STORAGES[kind.name]
        data = self._storage(key)
        if len(data) != numel * itemsize:
            raise pickle.UnpicklingError(f"storage {key} holds {len(data)} bytes, not {numel} x {itemsize}")
        return _Storage(dtype, itemsize, data)


def _unpickle(archive: zipfile.ZipFile) -> Any:
    names = archive.namelist()
    pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("no single <name>/data.pkl in the archive")
    prefix = pickles[0][: -len("data.pkl")]
    order = f"{prefix}byteorder"
    if order in names and archive.read(order).strip() != b"little":
        raise ValueError("written on a big-endian machine (not read without torch)")
    data = archive.read(pickles[0])
    for op, _arg, _pos in pickletools.genops(data):
        if op.name not in _OPCODES:
            raise pickle.UnpicklingError(f"pickle opcode {op.name} is not allowed")
    cache: dict[str, bytes] = {}

    def storage(key: str) -> bytes:
        if key not in cache:
            cache[key] = archive.read(f"{prefix}data/{key}")
        return cache[key]

    return _Unpickler(data, storage).load()


def checkpoint_file(path: str | Path) -> Path:
    """The model.pt that `path` names (the file, or a folder holding one); `CheckpointError`
    when there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    return path


def unreadable(path: Path, exc: BaseException) -> CheckpointError:
    """The one-line refusal of a file that does not load: truncated, altered, pickled code..."""
    return CheckpointError(
        f"{path}: not a readable weights-only checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})"
    )


def check_checkpoint(
    payload: Any, path: Path, as_tensor: Callable[[Any], TensorBytes | None] | None = None
) -> dict[str, Any]:
    """A loaded payload, refused (`CheckpointError` naming the file) unless it is a syncstudy
    checkpoint with its sections, its sha256 over the contents and its meta fields intact."""
    check_payload(payload, path)
    check_digest(payload, path, as_tensor)
    check_meta(payload["meta"], path)
    return payload


def read_checkpoint_archive(path: str | Path) -> dict[str, Any]:
    """The payload of the checkpoint at `path` (a model.pt, or a folder holding one) with its
    tensors as `TensorBytes`, checked as `read_checkpoint` checks it: format, sections, sha256
    over the contents, meta fields. `CheckpointError` names the file on any fault."""
    path = checkpoint_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            payload = _unpickle(archive)
    except Exception as exc:  # not a zip, truncated, a refused global or opcode, ...
        raise unreadable(path, exc) from None
    return check_checkpoint(payload, path)
