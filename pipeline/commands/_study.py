"""Arguments and helpers shared by the commands that read a launched study from MLflow."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", nargs="?", help="the study's spec YAML")
    parser.add_argument("--study", metavar="NAME", help="a study launched from this folder (runs/NAME)")
    parser.add_argument("--smoke", action="store_true", help="the spec's smoke form")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (overrides the spec)")


def open_from_args(args: argparse.Namespace):  # noqa: ANN201 - (StudyRef, Tracker)
    from pipeline.runner import locate_study, open_study

    ref = locate_study(args.spec, args.study, args.tracking_uri, smoke=getattr(args, "smoke", False))
    return ref, open_study(ref)


def clean(v: Any) -> Any:
    """JSON-safe: non-finite floats → null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)


def fmt(v: Any) -> str:
    if isinstance(v, str):  # MLflow params are text: show numbers as numbers
        try:
            v = int(v) if v.lstrip("-").isdigit() else float(v)
        except ValueError:
            return v
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def table(rows: list[list[Any]]) -> str:
    widths = [max(len(fmt(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(fmt(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
