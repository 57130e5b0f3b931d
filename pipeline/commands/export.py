"""`syncstudy export --study NAME --out DIR`: the best (or a named) trial → a portable folder."""

from __future__ import annotations

import argparse

from pipeline.commands._study import add_study_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to create (must not exist, or be empty)")
    parser.add_argument("--metric", metavar="M", help="pick the best trial by M (default: the first objective)")
    parser.add_argument("--trial", metavar="ID", help="export this trial instead of the best")
    parser.add_argument("--register", metavar="NAME", help="also register it in MLflow's model registry")


def run(args: argparse.Namespace) -> int:
    from pipeline.commands._study import open_from_args
    from pipeline.export import choose, export_trial, metric_mode

    ref, tracker = open_from_args(args)
    objectives = ref.objectives or []
    metric = args.metric or (objectives[0][0] if objectives else "test_acc")
    mode = metric_mode(metric, objectives)
    record = choose(tracker.trials(), trial=args.trial, metric=metric, mode=mode)
    chosen_by = f"trial {record.trial_id} as asked" if args.trial else f"best {metric} ({mode})"
    out = export_trial(tracker, record, args.out, objectives=objectives, chosen_by=chosen_by)
    print(f"exported trial {record.trial_id} ({chosen_by}) of study {ref.name!r} to {out}")
    if args.register:
        version = tracker.register(record.run_id, args.register)
        print(f"registered as model {args.register!r} version {version} in {ref.target.uri}")
    return 0
