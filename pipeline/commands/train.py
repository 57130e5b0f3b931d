"""`syncstudy train`: one config, no Ray, with a progress line per epoch.

Every `TrainConfig` field is a flag (`coupling_K` → `--coupling-k`); `--config FILE` reads a
YAML mapping of fields first, flags override it. `--json` makes the last stdout line a JSON
object (test_acc, focus_loss, sync_loss, status, checkpoint, …).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import typing
from pathlib import Path
from typing import Any

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError, SyncStudyError
from syncmodel.files import ensure_folder, temp_folder


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-").lower()


def _parse_scalar(tp: Any) -> Any:
    """argparse `type=` for a plain annotation; None-able fields also accept 'none'."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    inner = args[0]
    nullable = type(None) in typing.get_args(tp)

    def parse(text: str) -> Any:
        if nullable and text.lower() in ("none", "null"):
            return None
        if inner is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        try:
            return inner(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {inner.__name__}, got {text!r}") from None

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file of TrainConfig fields (flags override it)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="folder for checkpoint/, result.json and history.json; written only when the run "
        "ends (trained in a temporary folder beside it, then renamed). Must not exist or be "
        "empty, unless --force",
    )  # fmt: skip
    parser.add_argument(
        "--force", action="store_true",
        help="replace a non-empty --out (the old contents go only once the new run is complete)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="last stdout line: the result as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training config (TrainConfig fields)")
    for f in dataclasses.fields(TrainConfig):
        tp = hints[f.name]
        default = f.default
        if _is_list(tp):
            group.add_argument(_flag(f.name), dest=f.name, nargs="+", default=None, metavar="NAME",
                               help=f"default: {default}")
        else:
            group.add_argument(_flag(f.name), dest=f.name, type=_parse_scalar(tp), default=None,
                               metavar=_metavar(tp), help=f"default: {default}")


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in typing.get_args(tp))


def _metavar(tp: Any) -> str:
    inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return getattr(inner[0], "__name__", "VALUE").upper()


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    raw: dict[str, Any] = {}
    if args.config is not None:
        raw = _read_yaml(args.config)
    for name in TrainConfig.field_names():
        value = getattr(args, name)
        if value is not None:
            raw[name] = value
    return TrainConfig.from_dict(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SyncStudyError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SyncStudyError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "must be a mapping of TrainConfig fields")
    return raw


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = args.out.resolve() if args.out is not None else None
    work = _work_folder(out, args.force) if out is not None else None
    try:
        return _run(args, config, out, work)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # gone already when the run was published


def _work_folder(out: Path, force: bool) -> Path:
    """A fresh temporary folder beside `out` to train into, so that `out` never holds a mix
    of two runs (a new result.json beside an old model.pt)."""
    if out.exists() and not out.is_dir():
        raise SyncStudyError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SyncStudyError(f"--out {out}: not empty (an earlier run?); pass --force to replace it")
    ensure_folder(out.parent, f"--out {out}")
    try:
        return temp_folder(out.parent, out.name)
    except OSError as exc:
        raise SyncStudyError(f"--out {out}: cannot write in {out.parent} ({exc.strerror or exc})") from None


def _publish(work: Path, out: Path) -> None:
    """Put the finished run at `out`: an old folder is renamed aside first and removed last."""
    old = None
    if out.exists():
        old = temp_folder(out.parent, out.name, suffix=".old")
        os.replace(out, old / "run")
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run(args: argparse.Namespace, config: TrainConfig, out: Path | None, work: Path | None) -> int:
    from syncmodel.training import train

    # With --json, progress goes to stderr so that stdout stays machine-readable.
    stream = sys.stderr if args.json else sys.stdout
    progress = not args.quiet
    if progress:
        print(f"training {config.backbone} on {config.dataset}: {config.epochs} epochs, "
              f"lambda_focus={config.lambda_focus} coupling_K={config.coupling_K} epsilon={config.epsilon} "
              f"seed={config.seed}", file=stream, flush=True)
    saved = sys.stdout
    if args.json:
        sys.stdout = sys.stderr  # the per-epoch lines printed by train()
    try:
        result = train(config, out_dir=work, progress=progress)
    finally:
        sys.stdout = saved
    payload = {
        "status": result.status,
        **{k: _finite(v) for k, v in result.metrics.items()},
        # the path it will have once published
        "checkpoint": str(out / result.checkpoint.relative_to(work)) if result.checkpoint else None,
        "error": result.error,
        "layers": result.layers,
        "config": config.to_dict(),
    }
    payload.setdefault("test_acc", None)
    if out is not None:
        (work / "result.json").write_text(json.dumps(payload, indent=2))
        (work / "history.json").write_text(json.dumps(result.history, indent=2))
        _publish(work, out)
    if args.json:
        print(json.dumps(payload))
    elif progress:
        print(f"status {result.status}  test_acc {payload['test_acc']}  spread {payload.get('spread')}  "
              f"dead {payload.get('dead_fraction')}  neighbours {payload.get('neighbours')}"
              + (f"  checkpoint {payload['checkpoint']}" if payload["checkpoint"] else ""))
    return 0 if result.status == "ok" else 1


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
