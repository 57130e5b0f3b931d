"""`syncstudy compare SPEC|--study NAME [--json]`: the answer of a comparison (an `arms:`
spec): per arm the Pareto front on the validation split and its hypervolume against the
spec's reference point, the front's test metrics, the paired difference of hypervolume
between every two arms over the repeats with its 95% interval and verdict, and the params'
importances; logged to the comparison's parent run (`--no-log`: printed only).

Also what `syncstudy launch` runs for a comparison spec (`launch_comparison`), and what
`syncstudy validate` prints for one (`validate_comparison`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.spec.arms import SAVED_FILE, ComparisonSpec, load_comparison
from pipeline.spec.sections import NAME_RE
from syncmodel.errors import SyncStudyError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC", nargs="?", help="the comparison's spec YAML (with arms:)")
    parser.add_argument("--study", metavar="NAME", help="a comparison launched from this folder (runs/NAME)")
    parser.add_argument("--smoke", action="store_true", help="the spec's smoke form")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (overrides the spec)")
    parser.add_argument("--storage", metavar="DIR", help="the comparison's folder (overrides the spec's, as launch --storage)")
    parser.add_argument("--json", action="store_true", help="the answer as JSON")
    parser.add_argument("--no-log", action="store_true", help="do not log the answer to the comparison's parent run")


def locate(args: argparse.Namespace) -> ComparisonSpec:
    overrides = {"tracking.uri": args.tracking_uri, "storage": args.storage}
    if args.spec:
        return load_comparison(args.spec, smoke=args.smoke, overrides=overrides, writable=False)
    if args.study:
        if not NAME_RE.fullmatch(args.study):
            raise SyncStudyError(f"--study {args.study!r}: not a comparison name (a-z 0-9 _ -, first a letter or digit)")
        saved = Path("runs") / args.study / SAVED_FILE
        if not saved.is_file():
            raise SyncStudyError(f"--study {args.study}: no {saved} here; run from the folder it was launched in, or give its spec")
        return load_comparison(saved, overrides=overrides, writable=False)
    raise SyncStudyError("name the comparison: a SPEC file or --study NAME")


def run(args: argparse.Namespace) -> int:
    from pipeline.record.compare import compare, report, to_dict

    comp = locate(args)
    if not any(Path(s.storage or "").is_dir() for _, _, s in comp.studies()):
        raise SyncStudyError(f"comparison {comp.name!r}: none of its studies ran in {comp.storage} (launch it first)")
    result = compare(comp)
    if not args.no_log:
        _log(comp, result)
    if args.json:
        print(json.dumps(to_dict(result), indent=2, allow_nan=False))
    else:
        print("\n".join(report(result)))
    return 0


def _log(comp: ComparisonSpec, result: object) -> None:
    from pipeline.comparison import comparison_tracker, find_parent, log_result

    tracker = comparison_tracker(comp)
    parent = find_parent(tracker, comp.name)
    if parent is None:
        print(f"warning: no parent run of comparison {comp.name!r} in its tracking store: not logged", file=sys.stderr)
        return
    log_result(tracker, parent.info.run_id, result)


def launch_comparison(args: argparse.Namespace) -> int:
    """`syncstudy launch` of a comparison spec: every arm x repeat study, then the answer."""
    from pipeline.commands.launch import LOG_FILE, route_library_logs
    from pipeline.comparison import comparison_tracker, log_result, run_comparison
    from pipeline.record.compare import compare, report
    from pipeline.safe_files import refuse_link

    comp = load_comparison(
        args.spec, smoke=args.smoke,
        overrides={"storage": args.storage, "tracking.uri": args.tracking_uri, "name": args.name},
    )  # fmt: skip
    log = Path(comp.storage) / LOG_FILE
    refuse_link(log)
    route_library_logs(log, args.verbose)
    verb = "resuming" if args.resume else "launching"
    print(
        f"{verb} comparison {comp.name!r}{' (smoke form)' if comp.smoke else ''}: arms "
        f"{', '.join(comp.arms)} x {comp.repeats} repeats x {comp.samples} trials",
        flush=True,
    )
    outcome = run_comparison(comp, resume=args.resume, address=args.address, quiet=args.quiet)
    result = compare(comp)
    log_result(comparison_tracker(comp), outcome.parent_run_id, result)
    print("\n".join(report(result)))
    if outcome.interrupted:
        print("interrupted: `syncstudy launch SPEC --resume` continues the comparison")
        return 130
    if outcome.failed:
        print(f"no trial finished in: {', '.join(outcome.failed)}")
        return 1
    return 0


def validate_comparison(args: argparse.Namespace) -> int:
    """`syncstudy validate` of a comparison spec: every arm x repeat study checked."""
    from pipeline.commands.validate import evaluation_line
    from pipeline.spec import describe
    from pipeline.spec.sections import selection_note

    comp = load_comparison(args.spec, smoke=args.smoke)
    notes = {note for _, _, s in comp.studies() if (note := selection_note(s))}
    for note in sorted(notes):  # the arms' objectives are the comparison's: one line, not one per study
        print(f"warning: {note}", file=sys.stderr)
    if args.json:
        from pipeline.spec.load import spec_to_dict

        studies = {s.name: spec_to_dict(s) for _, _, s in comp.studies()}
        print(json.dumps({"comparison": comp.name, "repeats": comp.repeats, "reference": comp.reference,
                          "equivalence_margin": {"hypervolume": comp.margin}, "studies": studies}, indent=2))  # fmt: skip
        return 0
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in comp.objectives)
    lines = [
        f"comparison {comp.name}" + (" (smoke form)" if comp.smoke else ""),
        f"arms       {len(comp.arms)} x {comp.repeats} repeats x {comp.samples} trials = "
        f"{len(comp.arms) * comp.repeats * comp.samples} trials",
    ]
    for arm, specs in comp.arms.items():
        fields = ", ".join(f"{k} {v}" for k, v in comp.arm_fields[arm].items()) or "(the common train)"
        lines.append(f"  {arm}: {fields}")
        for name, p in specs[0].search.items():
            lines.append(f"    {name:<16} {describe(p)}")
    lines += [
        f"objectives {objectives}",
        "reference  " + ", ".join(f"{m} {v:g}" for m, v in comp.reference.items()),
        f"margin     hypervolume ±{comp.margin:g} (TOST)",
        "evaluation " + "; ".join(sorted({evaluation_line(s) for _, _, s in comp.studies()})),
        f"storage    {comp.storage}",
        f"studies    {len(comp.studies())} checked, one per arm and repeat",
        f"ok: {args.spec} is valid",
    ]
    print("\n".join(lines))
    return 0
