"""`syncstudy export --study NAME --out DIR`: the best (or a named) trial → a portable folder.
`syncstudy export --verify DIR`: check such a folder (manifest, sha256s, weights-only load)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands._study import add_study_arguments
from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--out", metavar="DIR", help="folder to create (must not exist, or be empty)")
    parser.add_argument("--metric", metavar="M", help="pick the best trial by M (default: the first objective)")
    parser.add_argument("--trial", metavar="ID", help="export this trial instead of the best")
    parser.add_argument("--register", metavar="NAME", help="also register it in MLflow's model registry")
    parser.add_argument(
        "--verify", metavar="DIR", type=Path,
        help="only check an exported folder: SHA256SUMS, every file's sha256, model.pt weights-only",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pipeline.export import verify

    if args.verify is not None:
        n = verify(args.verify)
        print(f"{args.verify}: {n} files match SHA256SUMS; model.pt is a weights-only checkpoint")
        return 0
    if not args.out:
        raise SyncStudyError("--out DIR is required (or --verify DIR to check an export)")
    from pipeline.commands._study import open_from_args
    from pipeline.export import choose, export_trial, metric_mode

    ref, tracker = open_from_args(args)
    objectives = ref.objectives or []
    metric = args.metric or (objectives[0][0] if objectives else "test_acc")
    mode = metric_mode(metric, objectives)
    record = choose(tracker.trials(), trial=args.trial, metric=metric, mode=mode)
    chosen_by = f"trial {record.trial_id} as asked" if args.trial else f"best {metric} ({mode})"
    out = export_trial(tracker, record, args.out, objectives=objectives, chosen_by=chosen_by)
    verify(out)
    print(f"exported trial {record.trial_id} ({chosen_by}) of study {ref.name!r} to {out}")
    if args.register:
        version = tracker.register(record.run_id, args.register)
        print(f"registered as model {args.register!r} version {version} in {ref.target.uri}")
    return 0
