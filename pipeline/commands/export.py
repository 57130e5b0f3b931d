"""`syncstudy export --study NAME --out DIR`: the best (or a named) trial → a portable folder.
`syncstudy export --verify DIR`: check such a folder (manifest, sha256s, the checkpoint's own digest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commands._study import add_source_argument, add_study_arguments
from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_study_arguments(parser)
    add_source_argument(parser)
    parser.add_argument("--out", metavar="DIR", help="folder to create (must not exist, or be empty)")
    parser.add_argument("--metric", metavar="M", help="pick the best trial by M (default: the first objective)")
    parser.add_argument("--trial", metavar="ID", help="export this trial instead of the best")
    parser.add_argument("--register", metavar="NAME", help="also register it in MLflow's model registry")
    parser.add_argument(
        "--alias", default="champion", metavar="A",
        help="with --register: the alias that points at the new version (default: champion)",
    )  # fmt: skip
    parser.add_argument(
        "--verify", metavar="DIR", type=Path,
        help="only check an exported folder: SHA256SUMS, every file's sha256, model.safetensors intact",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from pipeline.export import verify

    if args.verify is not None:
        n = verify(args.verify)
        print(f"{args.verify}: {n} files match SHA256SUMS; the checkpoint matches its own sha256")
        return 0
    if not args.out:
        raise SyncStudyError("--out DIR is required (or --verify DIR to check an export)")
    from pipeline.commands._study import open_study, table, trials_from_args
    from pipeline.export import TrialFolder, export_trial
    from pipeline.record.summary import (
        FRONT_TOLERANCE,
        choose,
        choose_on_front,
        default_choice,
        metric_mode,
    )
    from pipeline.record.tracking import Tracker, finite
    from pipeline.trial_files import TrialFiles

    if args.register:
        args.mlflow = True  # registering writes to the store: its runs, not the tables, decide
    ref, records, tracker = trials_from_args(args)
    if tracker is None:  # from the tables: their digest against its copy in the tracking store
        from pipeline.record.finished import check_parent_digest

        check_parent_digest(ref.storage, ref.target, ref.name)
    objectives = ref.objectives or []
    metric = args.metric or (objectives[0][0] if objectives else "test_acc")
    mode = metric_mode(metric, objectives)
    if args.trial is None and args.metric is None and len(objectives) >= 2:
        record, front = choose_on_front(records, objectives)
        (first, _), (second, _) = objectives[0], objectives[1]
        chosen_by = (
            f"the best {second} on the Pareto front within {FRONT_TOLERANCE:g} of the best {first}"
        )
        rows: list[list] = [["", "trial", *(m for m, _ in objectives)]]
        rows += [["*" if r is record else "", r.trial_id, *(r.metrics[m] for m, _ in objectives)] for r in front]
        print(f"Pareto front ({len(front)} trials; * = exported: {chosen_by}; --metric or --trial to choose otherwise):")
        print(table(rows))
    elif args.trial is None and args.metric is None:
        record = default_choice(records, objectives)  # what `syncstudy pareto` marks
        chosen_by = f"best {metric} ({mode})"
    else:
        record = choose(records, trial=args.trial, metric=metric, mode=mode)
        chosen_by = f"trial {record.trial_id} as asked" if args.trial else f"best {metric} ({mode})"
    if args.register and tracker is not None and tracker.moved_artifacts(record.run_id) is not None:
        # MLflow puts a logged model's files under the experiment's recorded artifact folder:
        # a moved folder's store not relocated (pipeline.commands._study.relocate) names the old one
        raise SyncStudyError(
            f"--register: study {ref.name!r} was moved and its MLflow store still names the folder "
            f"it was written in ({ref.unrelocated or 'not relocated'}), so registering would write "
            "there; run again once the folder is writable and no driver holds it (export without "
            "--register works)"
        )
    source: Tracker | TrialFolder | None = tracker
    if source is None:  # read from the tables: the files from the trial's folder, if it has them all
        source = TrialFolder.of(ref.name, record.checkpoint, ref.storage, ref.launched_in or ref.storage)
    if source is None:  # a trial without its final checkpoint here (stopped, failed): its run has them
        source = tracker = open_study(ref)
    out = export_trial(source, record, args.out, objectives=objectives, chosen_by=chosen_by)
    verify(out)
    print(f"exported trial {record.trial_id} ({chosen_by}) of study {ref.name!r} to {out}")
    if args.register:
        from pipeline.record.mlflow_model import log_registered_model
        from pipeline.redact import redact

        assert tracker is not None  # --register reads MLflow (above)
        # The registered form is the run's logged model `registered_model`: MLflow's pytorch
        # format ("pt2", no pickled code), logged on the trial's first registration and reused
        # by later ones; mlflow.pytorch.load_model and mlflow.pyfunc.load_model read it.
        model_uri = log_registered_model(tracker.client, record.run_id, out / TrialFiles.MODEL)
        shown = ", ".join(f"{m} {record.metrics[m]:.4g}" for m, _ in objectives if finite(record.metrics.get(m)))
        description = f"study {ref.name!r}, trial {record.trial_id} ({chosen_by}){': ' + shown if shown else ''}"
        version = tracker.register(
            record.run_id, args.register, model_uri, description=description, alias=args.alias
        )
        print(
            f"registered as model {args.register!r} version {version} (alias @{args.alias}) in "
            f"{redact(ref.target.uri)}: mlflow.pytorch.load_model(\"models:/{args.register}@{args.alias}\")"
        )
    return 0
