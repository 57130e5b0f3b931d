"""`syncstudy launch SPEC`: run a study (local Ray started here, or `--address` of a cluster).

A progress line per ended trial, a summary table at the end. Exit 0 when at least one trial
finished (status ok), 1 when none did, 2 on a user error (nothing started), 130 when it was
interrupted (Ctrl-C: Tune saves the study; `--resume` continues it).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", help="study spec YAML (studies/*.yaml)")
    parser.add_argument("--smoke", action="store_true", help="the spec's smoke form (CI-sized)")
    parser.add_argument("--resume", action="store_true", help="continue the study whose driver died")
    parser.add_argument("--address", metavar="ADDR", help="Ray cluster to join: HOST:PORT or auto (default: $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (overrides the spec)")
    parser.add_argument("--storage", metavar="DIR", help="study folder (overrides the spec; default runs/NAME)")
    parser.add_argument(
        "--name", metavar="NEW",
        help="the study's name (overrides the spec's): a distinct study where another of the spec's name already records into the tracking store",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the summary")


def run(args: argparse.Namespace) -> int:
    from pipeline.redact import redact
    from pipeline.spec import load_spec
    from pipeline.study import print_summary, run_study

    spec = load_spec(
        args.spec,
        smoke=args.smoke,
        overrides={"storage": args.storage, "tracking.uri": args.tracking_uri, "name": args.name},
    )
    verb = "resuming" if args.resume else "launching"
    print(
        f"{verb} study {spec.name!r}{' (smoke form)' if spec.smoke else ''}: {spec.samples} trials, "
        f"{spec.concurrency} at a time, sampler {spec.sampler.name}, scheduler {spec.scheduler.name}",
        flush=True,
    )
    outcome = run_study(spec, resume=args.resume, address=args.address, quiet=args.quiet)
    outcome.target = type(outcome.target)(
        redact(outcome.target.uri) or "", outcome.target.experiment, outcome.target.artifact_location
    )
    print_summary(spec, outcome)
    if outcome.unfinished:
        return 130
    return 0 if outcome.ok > 0 else 1
