"""The checkpoint file and its checks, without torch.

A checkpoint is one `model.safetensors`: the state dict (parameters and BatchNorm buffers, on
CPU, each contiguous) in the safetensors format (an 8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the raw bytes), so reading it
can never run code. The header's `__metadata__` (string to string) holds the rest as JSON:

- `format`: FORMAT;
- `config`: the resolved TrainConfig (JSON);
- `meta`: shapes, layers, class names, epoch (JSON);
- `sha256`: `contents_digest` over the three above, the tensor index and the tensor bytes,
  so an altered byte anywhere but the header's padding is refused (neither safetensors nor
  torch checks the bytes of a tensor).

One file, so `atomic_write` keeps a checkpoint whole, and a trial's folder, an MLflow run and
an export each hold one file. `read_checkpoint_file` checks it without torch (for `export`
and `export --verify`, where importing torch would cost more than the rest of the command);
`syncmodel.checkpoint` writes it and loads its tensors with torch.

Checkpoints of earlier releases (`model.pt`: torch's zip of a weights-only pickle, LEGACY_FORMAT)
are still loaded by `syncmodel.checkpoint.read_checkpoint` through torch; `payload_digest` and
`check_payload` below are what that needs (payload_digest also guards train_state.pt).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncmodel.errors import CheckpointError

FORMAT = "syncstudy-checkpoint/2"
LEGACY_FORMAT = "syncstudy-checkpoint/1"
DIGEST = "sha256"  # payload/metadata key: the digest of everything else
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "model.pt"
# safetensors dtype names -> bytes per element (the ones a state dict of these nets holds and
# their kin; the library refuses the file itself if a name is unknown to it)
DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip


@dataclass(frozen=True)
class TensorBytes:
    """A tensor as the digest sees it: a dtype name, its shape, and its elements' bytes in C
    order (little-endian)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes


def payload_digest(obj: Any, as_tensor: Callable[[Any], TensorBytes | None] | None = None) -> str:
    """sha256 of a nested payload (dicts, lists, tensors, plain values): tensors by dtype,
    shape and bytes; dict keys in sorted order. `as_tensor` turns a tensor object into
    `TensorBytes` (None for anything else)."""
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
    accepted: model.pt checkpoints written before digests existed)."""
    stored = payload.get(DIGEST)
    if stored is None:
        return
    if stored != contents_digest(payload, as_tensor):
        raise CheckpointError(f"{path}: contents do not match the checkpoint's sha256 (altered or corrupted)")


def check_payload(payload: Any, path: Path) -> None:
    """A legacy model.pt payload: its format and the three sections it has."""
    if not isinstance(payload, dict) or payload.get("format") != LEGACY_FORMAT:
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


def locate(path: str | Path) -> tuple[Path, bool]:
    """(the checkpoint file `path` names, whether it is a legacy model.pt): the file itself, or
    in a folder its model.safetensors, else its model.pt. `CheckpointError` when there is none."""
    path = Path(path)
    if path.is_dir():
        for name in (WEIGHTS, LEGACY_WEIGHTS):
            if (path / name).is_file():
                return path / name, name == LEGACY_WEIGHTS
        raise CheckpointError(f"{path / WEIGHTS}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    # earlier releases accepted a model.pt under any name: anything not .safetensors is one
    return path, path.suffix != ".safetensors"


def unreadable(path: Path, exc: BaseException) -> CheckpointError:
    """The one-line refusal of a file that does not load: truncated, altered, pickled code..."""
    return CheckpointError(
        f"{path}: not a readable weights-only checkpoint ({exc.__class__.__name__}: {str(exc)[:200]})"
    )


def split(data: bytes, path: Path) -> tuple[dict[str, Any], dict[str, str], bytes]:
    """A safetensors file's (tensor index, `__metadata__`, data section), with the index
    checked against the data section: every dtype known, each byte range the size its shape
    and dtype give, the ranges tiling the section. `CheckpointError` names the file."""
    try:
        if len(data) < 8:
            raise ValueError("shorter than the 8-byte header length")
        n = int.from_bytes(data[:8], "little")
        if 8 + n > len(data):
            raise ValueError(f"header of {n} bytes runs past the end of the file")
        header = json.loads(data[8 : 8 + n])
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("__metadata__ is not a map of strings")
        body = data[8 + n :]
        ranges = []
        for name, entry in header.items():
            shape, offsets = entry.get("shape"), entry.get("data_offsets")
            if entry.get("dtype") not in DTYPE_SIZES or not isinstance(shape, list) or not isinstance(offsets, list):
                raise ValueError(f"tensor {name!r} has a malformed entry")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (*shape, *offsets)):
                raise ValueError(f"tensor {name!r} has a malformed shape or byte range")
            numel = 1
            for v in shape:
                numel *= v
            if len(offsets) != 2 or offsets[1] - offsets[0] != numel * DTYPE_SIZES[entry["dtype"]]:
                raise ValueError(f"tensor {name!r}: its byte range does not fit its shape")
            ranges.append(tuple(offsets))
        end = 0
        for start, stop in sorted(ranges):
            if start != end:
                raise ValueError("tensor byte ranges overlap or leave gaps")
            end = stop
        if end != len(body):
            raise ValueError(f"tensors cover {end} of the {len(body)} data bytes")
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise unreadable(path, exc) from None
    return header, meta, body


def weights_digest(config_json: str, meta_json: str, index: dict[str, Any], body: bytes) -> str:
    """The digest a checkpoint's metadata stores: format, config, meta, the tensor index
    (names, dtypes, shapes, byte ranges) and the tensor bytes."""
    digest = hashlib.sha256()
    index_json = json.dumps(index, sort_keys=True, separators=(",", ":"))
    for part in (FORMAT, config_json, meta_json, index_json):
        digest.update(f"{len(part)}:".encode())  # length-prefixed: no part can run into the next
        digest.update(part.encode())
    digest.update(body)
    return digest.hexdigest()


def parse_checkpoint(data: bytes, path: Path) -> dict[str, Any]:
    """The checked contents of a model.safetensors's bytes: {"format", "config", "meta",
    "tensors" (name -> {"dtype", "shape", "data_offsets"}), "body" (the data section)}.
    Refused (`CheckpointError` naming the file): not a safetensors file, another format, a
    digest that does not match, a malformed config or meta."""
    index, meta, body = split(data, path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a syncstudy checkpoint (format {meta.get('format')!r})")
    for key in ("config", "meta", DIGEST):
        if key not in meta:
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    if meta[DIGEST] != weights_digest(meta["config"], meta["meta"], index, body):
        raise CheckpointError(f"{path}: contents do not match the checkpoint's sha256 (altered or corrupted)")
    sections = {}
    for key in ("config", "meta"):
        try:
            sections[key] = json.loads(meta[key])
        except ValueError as exc:
            raise CheckpointError(f"{path}: checkpoint {key} is not JSON ({exc})") from None
        if not isinstance(sections[key], dict):
            raise CheckpointError(f"{path}: checkpoint lacks {key!r}")
    check_meta(sections["meta"], path)
    return {"format": FORMAT, **sections, "tensors": index, "body": body}


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """`parse_checkpoint` of the model.safetensors `path` names (the file, or a folder holding
    it), without torch. A legacy model.pt is refused with the way to read it."""
    file, legacy = locate(path)
    if legacy:
        raise CheckpointError(
            f"{file}: a model.pt checkpoint of an earlier release; syncmodel.checkpoint.load_checkpoint "
            "(with torch) still reads it"
        )
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{file}: cannot read ({exc.strerror or exc})") from None
    return parse_checkpoint(data, file)
