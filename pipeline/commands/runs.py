"""`syncstudy runs SPEC|--study NAME`: a study's trials as MLflow holds them, sorted by a metric
(read from the study folder's tables when they hold the finished study: pipeline.record.finished)."""

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
from pipeline.record.provenance import OTHER_MARK, TAG_COMMIT, off_commit, other_commit_line
from pipeline.record.summary import metric_mode, rank
from pipeline.record.tracking import TrialRecord
from syncmodel.errors import SyncStudyError

KNOWN_SHOWN = 12  # metric names listed when --sort names none of them


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    add_source_argument(parser)
    parser.add_argument("--sort", metavar="M", help="metric to sort by (default: the first objective)")
    parser.add_argument("--top", metavar="N", type=int, help="show only the best N")
    parser.add_argument("--json", action="store_true", help="every param and final metric, as JSON")


def check_metric(metric: str, records: list[TrialRecord], objectives: list[tuple[str, str]], study: str) -> None:
    """`--sort M` names an objective or a metric some trial has; else one line naming it and
    the known ones (the objectives first, then the rest by name, at most a dozen)."""
    names = [m for m, _ in objectives]
    known = names + sorted({k for r in records for k in r.metrics} - set(names))
    if metric in known:
        return
    shown = ", ".join(known[:KNOWN_SHOWN]) + (f", ... ({len(known)} in all)" if len(known) > KNOWN_SHOWN else "")
    raise SyncStudyError(f"--sort {metric}: no trial of study {study!r} has this metric (known: {shown or 'none'})")


def run(args: argparse.Namespace) -> int:
    ref, records, _ = trials_from_args(args)
    objectives = ref.objectives or []
    metric = args.sort or (objectives[0][0] if objectives else "test_acc")
    if args.sort is not None:
        check_metric(args.sort, records, objectives, ref.name)
    mode = metric_mode(metric, objectives)
    ranked = rank(records, metric, mode)
    ordered = ranked + [r for r in records if r not in ranked]  # no value: last, in launch order
    if args.top is not None:
        ordered = ordered[: max(args.top, 0)]
    common, other = off_commit(records)
    if args.json:
        print(dumps([
            {
                "trial_id": r.trial_id, "run_id": r.run_id, "status": r.status,
                "commit": r.tags.get(TAG_COMMIT), "other_commit": r.trial_id in other,
                "params": r.params, "metrics": {k: clean(v) for k, v in sorted(r.metrics.items())},
            }
            for r in ordered
        ]))  # fmt: skip
        return 0
    shown = [m for m, _ in objectives]
    if metric not in shown:
        shown.append(metric)
    names = ref.searched or []
    rows: list[list] = [["trial", "status", *shown, *names]]
    for r in ordered:
        rows.append([r.trial_id + (OTHER_MARK if r.trial_id in other else ""), r.status,
                     *(r.metrics.get(m) for m in shown), *(r.params.get(n) for n in names)])  # fmt: skip
    print(table(rows))
    print(f"{len(records)} trials of study {ref.name!r} in {ref.target.experiment!r}, sorted by {metric} ({mode})")
    if other:
        print(other_commit_line(common, len(other)))
    return 0

