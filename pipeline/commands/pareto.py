"""`syncstudy pareto SPEC|--study NAME`: the trials no other trial beats on every objective."""

from __future__ import annotations

import argparse

from pipeline.commands._study import add_study_arguments, clean, dumps, open_from_args, table
from pipeline.record.summary import pareto_front


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    parser.add_argument("--json", action="store_true", help="the front as JSON")


def run(args: argparse.Namespace) -> int:
    from pipeline.export import finite
    from syncmodel.errors import SyncStudyError

    ref, tracker = open_from_args(args)
    objectives = ref.objectives or []
    if not objectives:
        raise SyncStudyError(f"study {ref.name!r}: no objectives recorded")
    metrics = [m for m, _ in objectives]
    modes = [mode for _, mode in objectives]
    records = [
        r for r in tracker.trials() if r.status == "ok" and all(finite(r.metrics.get(m)) for m in metrics)
    ]
    front_ids = set(pareto_front([(r.trial_id, [r.metrics[m] for m in metrics]) for r in records], modes))
    front = sorted(
        (r for r in records if r.trial_id in front_ids),
        key=lambda r: -r.metrics[metrics[0]] if modes[0] == "max" else r.metrics[metrics[0]],
    )
    names = ref.searched or []
    if args.json:
        print(dumps([
            {
                "trial_id": r.trial_id, "run_id": r.run_id,
                "objectives": {m: clean(r.metrics[m]) for m in metrics},
                "params": {n: r.params.get(n) for n in names},
            }
            for r in front
        ]))  # fmt: skip
        return 0
    rows: list[list] = [["trial", *(f"{m} ({mode})" for m, mode in objectives), *names]]
    for r in front:
        rows.append([r.trial_id, *(r.metrics[m] for m in metrics), *(r.params.get(n) for n in names)])
    print(table(rows))
    print(f"{len(front)} of {len(records)} finished trials on the front of study {ref.name!r}")
    return 0
