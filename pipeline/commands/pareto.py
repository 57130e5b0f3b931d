"""`syncstudy pareto SPEC|--study NAME`: the trials no other trial beats on every objective,
the one `syncstudy export` takes by default marked."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.commands._study import (
    add_source_argument,
    add_study_arguments,
    clean,
    dumps,
    table,
    trials_from_args,
    typed_param,
)
from pipeline.record.provenance import OTHER_MARK, TAG_COMMIT, off_commit, other_commit_line
from pipeline.record.summary import default_choice, summarize
from pipeline.record.tracking import TrialRecord
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
    chosen = default_choice(records, objectives).trial_id if front else None
    names = ref.searched or []
    search = ref.search or {}

    def params(r: TrialRecord) -> dict[str, Any]:
        # MLflow keeps params as text: back to their type (the spec's, when it is here)
        return {n: clean(typed_param(r.params.get(n), search.get(n))) for n in names}

    # marked against the whole study's most common commit, not the front's
    common, other = off_commit(records)
    if args.json:
        print(dumps([
            {
                "trial_id": r.trial_id, "run_id": r.run_id, "export_choice": r.trial_id == chosen,
                "commit": r.tags.get(TAG_COMMIT), "other_commit": r.trial_id in other,
                "objectives": {m: clean(r.metrics[m]) for m in metrics},
                "params": params(r),
            }
            for r in front
        ]))  # fmt: skip
        return 0
    rows: list[list] = [["", "trial", *(f"{m} ({mode})" for m, mode in objectives), *names]]
    for r in front:
        rows.append(["*" if r.trial_id == chosen else "", r.trial_id + (OTHER_MARK if r.trial_id in other else ""),
                     *(r.metrics[m] for m in metrics),
                     *(r.params.get(n) for n in names)])  # fmt: skip
    print(table(rows))
    print(f"{len(front)} of {summary.finished} finished trials on the front of study {ref.name!r}")
    if chosen is not None:
        print(f"* = trial {chosen}, the one `syncstudy export` takes (--metric or --trial to choose otherwise)")
    marked = sum(1 for r in front if r.trial_id in other)
    if marked:
        print(other_commit_line(common, marked))
    return 0
