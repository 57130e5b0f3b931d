"""`syncstudy validate SPEC [--smoke] [--json]`: check a study spec without starting anything.

Prints a short summary (or the resolved spec as JSON) and exits 0; a bad spec raises
`SpecError`, which `pipeline.cli.main` prints as one line and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.redact import redact
from pipeline.spec import (
    StudySpec,
    check_fits_local,
    describe,
    grid_size,
    load_spec,
    spec_to_dict,
)
from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, help="study spec (YAML), e.g. studies/digits.yaml")
    parser.add_argument("--smoke", action="store_true", help="validate and show the smoke form")
    parser.add_argument("--json", action="store_true", help="print the resolved spec as JSON")


def run(args: argparse.Namespace) -> int:
    from pipeline.spec.arms import is_comparison

    if is_comparison(args.spec):  # an `arms:` spec: every arm x repeat study checked
        from pipeline.commands.compare import validate_comparison

        return validate_comparison(args)
    from pipeline.spec.sections import selection_note

    spec = load_spec(args.spec, smoke=args.smoke)
    for note in (spec.tracking.note, selection_note(spec)):
        if note:
            print(f"warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(spec_to_dict(spec), indent=2))
    else:
        print(summary(spec, args.spec))
    return 0


def summary(spec: StudySpec, path: Path) -> str:
    t = spec.train
    width = max(len(n) for n in spec.search)
    dims = [f"{name:<{width}}  {describe(p)}" for name, p in spec.search.items()]
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives)
    sampler = spec.sampler.name + "".join(
        f", {k} {v}"
        for k, v in (("seed", spec.sampler.seed), ("startup", spec.sampler.n_startup_trials),
                     ("population", spec.sampler.population_size))
        if v is not None
    )
    if spec.sampler.name == "grid":
        sampler += f", {grid_size(spec)} grid points"
    s = spec.scheduler
    if s.name == "none":
        scheduler = "none"
    elif s.name == "mo_asha":
        signals = ", ".join(f"{m} ({mode})" for m, mode in s.objectives)
        scheduler = f"mo_asha on {signals}, grace {s.grace_period}, reduction {s.reduction_factor:g}"
    else:
        scheduler = f"asha on {s.metric} ({s.mode}), grace {s.grace_period}, reduction {s.reduction_factor:g}"
    r = spec.resources
    tracking = redact(spec.tracking.uri_source or spec.tracking.uri) or (
        f"sqlite:///{spec.storage}/mlflow.db (default)"
    )
    try:
        check_fits_local(spec)
        fits = "yes"
    except SyncStudyError as exc:
        fits = f"no ({getattr(exc, 'message', exc)})"
    lines = [
        f"study      {spec.name}" + (" (smoke form)" if spec.smoke else ""),
        f"train      {t.dataset} / {t.backbone}, {t.epochs} epochs, batch {t.batch_size}"
        + (f", n_train {t.n_train}" if t.n_train else ""),
        "search     " + ("\n           ".join(dims)),
        f"objectives {objectives}",
        f"sampler    {sampler}",
        f"scheduler  {scheduler}",
        f"trials     {spec.samples}, {spec.concurrency} at a time, {spec.retries} retries each",
        f"resources  {r.cpu:g} cpu + {r.gpu:g} gpu per trial; fits this machine: {fits}",
        f"evaluation {evaluation_line(spec)}",
        f"storage    {spec.storage}",
        f"tracking   {tracking}, experiment {spec.tracking.experiment or spec.name}",
        f"ok: {path} is valid",
    ]
    return "\n".join(lines)


def evaluation_line(spec: StudySpec) -> str:
    """What each trial's evaluation measures: its split and how many of its images."""
    from pipeline.spec.static import split_sizes

    e = spec.evaluation
    if not e.enabled:
        return "off"
    sizes = split_sizes(spec.train)
    if sizes is None:  # an image folder: known once loaded
        return f"{e.split} split, its first {e.max_images} images at most"
    n = getattr(sizes, e.split)
    return f"{e.split} split, {min(n, e.max_images)} of its {n} images (max_images {e.max_images})"
