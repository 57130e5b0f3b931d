"""`syncstudy pareto SPEC|--study NAME`: the trials no other trial beats on every objective."""

from __future__ import annotations

import argparse

from pipeline.commands._study import (
    add_source_argument,
    add_study_arguments,
    clean,
    dumps,
    table,
    trials_from_args,
)
from pipeline.record.summary import summarize
from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    add_source_argument(parser)
    parser.add_argument("--json", action="store_true", help="the front as JSON")


def run(args: argparse.Namespace) -> int:
    ref, records, _ = trials_from_args(args)
    objectives = ref.objectives or []
    if not objectives:
        raise SyncStudyError(f"study {ref.name!r}: no objectives recorded")
    metrics = [m for m, _ in objectives]
    # finished trials (status ok, every objective finite), the front best first
    summary = summarize(records, objectives)
    by_id = {r.trial_id: r for r in records}
    front = [by_id[t] for t in summary.front]
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
    print(f"{len(front)} of {summary.finished} finished trials on the front of study {ref.name!r}")
    return 0
