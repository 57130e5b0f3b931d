"""Run a comparison (pipeline.spec.arms): every arm x repeat study in turn, on one Ray, with
one MLflow parent run for the comparison.

Design: each arm x repeat is an ordinary study (`pipeline.study.run_study`, its own folder
`<storage>/<arm>-r<k>`, lock, Tune state, tables and parent run), so resuming, recording and
the read-only commands are a study's. The studies run one after another on the Ray this
call starts (`ray_session` reuses it in each study): a study's trials already fill the pool
(`concurrency`), and one study at a time keeps each searcher's view its own and a killed
driver's work to one study. The order is repeat by repeat, every arm in each: an
interrupted comparison holds whole repeats, which pair across arms.

MLflow: one experiment (the comparison's name) holds all; the comparison's parent run
(tags `syncstudy.study` = the name, `syncstudy.role` = comparison) is the parent of each
study's parent run (`mlflow.parentRunId`), which is the parent of its trials: the UI shows
comparison > study > trial. Each study's parent and trial runs are tagged `syncstudy.arm`
and `syncstudy.repeat` when the study ends. The answer (pipeline.record.compare) is logged
to the comparison's run at the end, and again by `syncstudy compare`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.paths import EXPERIMENT_DIR, storage_of, target_of
from pipeline.record.tables import TRIALS, has_parts, read_trials
from pipeline.record.tracking import (
    TAG_NOTE,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STORAGE,
    TAG_STUDY,
    TERMINAL,
    Tracker,
    _run_filter,
    _tags,
    check_target,
)
from pipeline.safe_files import write_text
from pipeline.spec.arms import SAVED_FILE, ComparisonSpec, saved_form, saved_text
from pipeline.spec.types import StudySpec
from syncmodel.errors import SyncStudyError

ROLE = "comparison"
TAG_COMPARISON = "syncstudy.comparison"
TAG_ARM = "syncstudy.arm"
TAG_REPEAT = "syncstudy.repeat"


@dataclass
class ComparisonOutcome:
    parent_run_id: str
    ran: list[str] = field(default_factory=list)  # studies launched or resumed
    skipped: list[str] = field(default_factory=list)  # finished before this launch
    failed: list[str] = field(default_factory=list)  # studies with no finished trial
    interrupted: bool = False


def _has_tune(spec: StudySpec) -> bool:
    return (storage_of(spec) / EXPERIMENT_DIR / "tuner.pkl").is_file()


def finished(spec: StudySpec) -> bool:
    """Whether a study's compacted tables hold all its planned trials, each ended."""
    from pipeline.study import planned_trials

    storage = storage_of(spec)
    if not (storage / TRIALS).is_file() or has_parts(storage) or not _has_tune(spec):
        return False
    rows = read_trials(storage) or []
    return len(rows) >= planned_trials(spec) and all(r.status in TERMINAL for r in rows)


def check_start(comp: ComparisonSpec, resume: bool) -> None:
    """Refuse a launch over a comparison that already ran (without --resume), a --resume of
    one that never ran, and a --resume whose spec differs from the saved one."""
    storage = Path(comp.storage)
    saved = storage / SAVED_FILE
    begun = [s.name for _, _, s in comp.studies() if _has_tune(s)]
    if not resume and begun:
        raise SyncStudyError(
            f"a comparison already ran in {storage} ({', '.join(begun[:3])}{' ...' if len(begun) > 3 else ''}): "
            "add --resume to continue it, or give another --storage"
        )
    if resume:
        if not saved.is_file() and not begun:
            raise SyncStudyError(f"--resume: no comparison to resume in {storage} (no {saved})")
        if saved.is_file():
            before = yaml.safe_load(saved.read_text())
            now = json.loads(json.dumps(saved_form(comp)))
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                raise SyncStudyError(
                    f"--resume: the spec differs from the one the comparison in {storage} was "
                    f"launched with ({saved}) in: {', '.join(changed)}"
                )


def comparison_tracker(comp: ComparisonSpec) -> Tracker:
    first = comp.arms[next(iter(comp.arms))][0]
    target = target_of(first, storage_of(first))
    check_target(target)
    return Tracker(target, comp.name)


def find_parent(tracker: Tracker, name: str) -> Any | None:
    runs = tracker.client.search_runs([tracker.experiment_id], filter_string=_run_filter(name, ROLE), max_results=10)
    return min(runs, key=lambda r: (r.info.start_time, r.info.run_id)) if runs else None


def comparison_parent(tracker: Tracker, comp: ComparisonSpec) -> str:
    """The comparison's parent run (found by its tags, else created). One of the same name
    from another storage folder in the same store is refused, as a study's is."""
    run = find_parent(tracker, comp.name)
    if run is not None:
        other = run.data.tags.get(TAG_STORAGE)
        if other and other != comp.storage:
            raise SyncStudyError(
                f"comparison {comp.name!r} already exists in this tracking store (experiment "
                f"{tracker.target.experiment!r}) from the folder {other}; give this one another "
                "name (launch --name NEW), or --resume that one in its own folder"
            )
        if run.info.status != "RUNNING":
            tracker.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    tags = {
        TAG_STUDY: comp.name, TAG_ROLE: ROLE, TAG_STORAGE: comp.storage, TAG_NOTE: comp.description,
        "syncstudy.arms": json.dumps(list(comp.arms)),
        "syncstudy.objectives": json.dumps([{"metric": o.metric, "mode": o.mode} for o in comp.objectives]),
    }  # fmt: skip
    run = tracker.client.create_run(tracker.experiment_id, run_name=comp.name, tags=tags)
    params = {
        "arms": ",".join(comp.arms), "repeats": comp.repeats, "samples_per_arm": comp.samples,
        "reference": json.dumps(comp.reference), "equivalence_margin.hypervolume": comp.margin, "smoke": comp.smoke,
    }  # fmt: skip
    for arm, fields in comp.arm_fields.items():
        params[f"arm.{arm}"] = json.dumps(fields, sort_keys=True)[:500]
    from mlflow.entities import Param

    tracker.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def tag_study(tracker: Tracker, parent_id: str, spec: StudySpec, arm: str, repeat: int) -> None:
    """Put a study's parent run under the comparison's and tag it and its trials with the
    arm and repeat (idempotent: a resumed comparison tags again)."""
    study = Tracker(tracker.target, spec.name)
    tags = {TAG_COMPARISON: tracker.study, TAG_ARM: arm, TAG_REPEAT: str(repeat)}
    own = study.parent()
    if own is not None:
        study.client.log_batch(own.info.run_id, tags=_tags({**tags, TAG_PARENT: parent_id}))
    for record in study.trials():
        if any(record.tags.get(k) != v for k, v in tags.items()):
            study.client.log_batch(record.run_id, tags=_tags(tags))


def run_comparison(
    comp: ComparisonSpec,
    *,
    resume: bool = False,
    address: str | None = None,
    quiet: bool = False,
    out: Callable[[str], None] = print,
) -> ComparisonOutcome:
    """Run (or resume) every arm x repeat study of `comp`; studies already finished are
    skipped. Logs the answer to the comparison's parent run at the end."""
    from pipeline import ray_join
    from pipeline.ray_local import actors_in_prestarted_workers, preload_modules, ray_session
    from pipeline.study import print_summary, run_study

    check_start(comp, resume)
    tracker = comparison_tracker(comp)
    address = ray_join.join_address(address)
    if address is not None:
        ray_join.preflight(address)
    parent = comparison_parent(tracker, comp)
    storage = Path(comp.storage)
    storage.mkdir(parents=True, exist_ok=True)
    if not (storage / SAVED_FILE).is_file():
        write_text(storage / SAVED_FILE, saved_text(comp))
    outcome = ComparisonOutcome(parent)
    evaluate = any(s.evaluation.enabled for _, _, s in comp.studies())
    with ray_session(address, None, preload_modules(evaluate)) as local:
        if local:
            actors_in_prestarted_workers()
        total = len(comp.studies())
        for i, (arm, k, spec) in enumerate(comp.studies(), 1):
            if finished(spec):
                outcome.skipped.append(spec.name)
                out(f"[{i}/{total}] {spec.name}: finished before, skipped")
                tag_study(tracker, parent, spec, arm, k)
                continue
            again = _has_tune(spec)
            out(f"[{i}/{total}] {'resuming' if again else 'launching'} {spec.name} (arm {arm}, repeat {k})")
            result = run_study(spec, resume=again, address=address, quiet=quiet)
            if not quiet:
                print_summary(spec, result, out)
            outcome.ran.append(spec.name)
            tag_study(tracker, parent, spec, arm, k)
            if result.ok == 0:
                outcome.failed.append(spec.name)
            if result.unfinished:
                outcome.interrupted = True
                break
    if not outcome.interrupted:
        tracker.client.set_terminated(parent, status="FINISHED")
    return outcome


def log_result(tracker: Tracker, parent_id: str, result: Any) -> None:
    """Write the answer to the comparison's parent run (values overwritten at step 0):
    metrics `hypervolume_mean/<arm>`; artifacts `comparison.json` (everything),
    `pairs.json` (the pair table, MLflow's table view), `importances.json` and `fronts.png`."""
    from mlflow.entities import Metric

    from pipeline.record.compare import fronts_png, to_dict
    from pipeline.record.tracking import _now_ms

    data = to_dict(result)
    ts = _now_ms()
    metrics = [
        Metric(f"hypervolume_mean/{arm}", float(body["hypervolume_mean"]), ts, 0)
        for arm, body in data["arms"].items()
        if body["hypervolume_mean"] is not None
    ]
    tags = {f"syncstudy.verdict.{p['a']}_vs_{p['b']}": p["verdict"] for p in data["pairs"]}
    tracker.client.log_batch(parent_id, metrics=metrics, tags=_tags(tags))
    tracker.client.log_dict(parent_id, data, "comparison.json")
    tracker.client.log_dict(parent_id, {arm: body["importances"] for arm, body in data["arms"].items()}, "importances.json")
    columns = ["a", "b", "n", "mean", "low", "high", "p", "p_holm", "p_tost", "p_tost_holm", "verdict"]
    tracker.client.log_table(parent_id, data={c: [p[c] for p in data["pairs"]] for c in columns}, artifact_file="pairs.json")
    with tempfile.TemporaryDirectory() as tmp:
        png = fronts_png(result, Path(tmp) / "fronts.png")
        if png is not None:
            tracker.client.log_artifact(parent_id, str(png))
