"""`syncstudy evaluate CHECKPOINT`: the interpretability report of a trained model.

Measures the test split by default (a report on a finished model; a study's trials measure
the validation split, `evaluation.split`); `--split val` measures what a trial of a study
measured. Writes report.json (its "split" and "images" say what was measured),
neurons.parquet and the module PNGs to --out; `--json` makes the last stdout line the report
as JSON (NaN → null).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from syncmodel.errors import ConfigError, SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="model.safetensors (or an earlier release's model.pt), or the folder that holds it")
    parser.add_argument(
        "--dataset", default=None, help="data set to evaluate on (default: the checkpoint's)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for report.json, neurons.parquet, PNGs"
    )
    parser.add_argument("--json", action="store_true", help="last stdout line: the report as JSON")
    parser.add_argument(
        "--max-images",
        type=int,
        default=2000,
        metavar="N",
        help="first images of the split used (default 2000)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="split to evaluate: test (default: a report on a finished model) or val (what a "
        "study's trial measures, evaluation.split)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="layers to evaluate (default: the checkpoint's regularised layers)",
    )
    parser.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="Sync radius for the modules (default: the one training ended with, annealed if epsilon_final is set)",
    )
    parser.add_argument("--mdl", action="store_true", help="choose the Sync radius by MDL instead")
    parser.add_argument("--no-pictures", action="store_true", help="skip the PNGs")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")  # fmt: skip


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def run(args: argparse.Namespace) -> int:
    from pipeline.evaluation import evaluate_into
    from syncmodel.checkpoint import load_checkpoint
    from syncmodel.config import check_device
    from syncmodel.data import load_data
    from syncmodel.files import ensure_folder
    from syncmodel.nets import default_layers
    from syncmodel.training import resolve_device

    if args.max_images is not None and args.max_images < 2:
        raise SyncStudyError(f"--max-images: must be >= 2, got {args.max_images}")
    path = args.checkpoint
    if not path.exists():
        raise SyncStudyError(f"{path}: checkpoint not found")
    check_device(args.device, "--device")
    try:
        device = resolve_device(args.device)
    except ConfigError as exc:  # named after the config field; here it is the flag
        raise ConfigError("--device", exc.message) from None
    model, config, meta = load_checkpoint(path, map_location=device)
    dataset = args.dataset or config.dataset
    data = load_data(config.replace(dataset=dataset))
    if (data.in_channels, data.num_classes) != (meta.get("in_channels"), meta.get("num_classes")):
        raise SyncStudyError(
            f"--dataset {dataset}: {data.in_channels} channels / {data.num_classes} classes, but "
            f"{path} was trained on {meta.get('in_channels')} / {meta.get('num_classes')}"
        )
    layers = args.layers or meta.get("layers") or config.layers or default_layers(config.backbone)
    out = ensure_folder(args.out.resolve(), f"--out {args.out}")
    # The epsilon the model ended training with (annealed when epsilon_final is set), as in
    # every trial of a study: pipeline.evaluation is the one evaluation both run.
    report, neurons = evaluate_into(
        out, model.to(device), data, list(layers), config,
        split=args.split, max_images=args.max_images, picture_dir=None if args.no_pictures else out,
        epsilon=args.epsilon, mdl=args.mdl,
    )  # fmt: skip
    report = {k: _finite(v) for k, v in report.items()}
    if args.json:
        print(json.dumps(report))
    else:
        keys = ("accuracy", "interpretability", "spread", "selectivity", "modules", "coverage",
                "consistency_ari", "specificity", "location_instability", "detectors")  # fmt: skip
        shown = "  ".join(f"{k} {_fmt(report[k])}" for k in keys if k in report)
        print(f"{args.split} split, {report['images']} images: {shown}")
        print(f"wrote {out}/report.json, neurons.parquet ({neurons.num_rows} neurons) and PNGs",
              file=sys.stdout)  # fmt: skip
    return 0


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
