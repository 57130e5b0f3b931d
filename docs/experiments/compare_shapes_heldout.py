"""Issue 25: the comparison's fronts re-measured on test images that selected nothing.

A trial's evaluation (pipeline.evaluation) measured the first `evaluation.max_images` images of
the test split, and two of compare-shapes' three objectives come from it: each front was chosen
on those images, so the values the search saw are optimistic. `remeasure` reloads every member
of every arm x repeat front (the fronts of pipeline.record.compare) from its checkpoint in the
study folder, rebuilds its data from its own config and evaluates it as its trial did (its
layers, trained epsilon and seed): on the selection images, which must give back what the trial
recorded; on the rest of the test split, which no trial saw; and on blocks of that rest of the
selection's size. `heldout_answer` and `block_answer` turn those records into per-repeat
hypervolumes and the pair table as `syncstudy compare` does. compare_shapes.py --collect and
--fill call them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from syncmodel.errors import SyncStudyError

FILE = "heldout.jsonl"
# Re-measured per member: the objectives the evaluation computes, issue 24's other primaries,
# and the evaluation's accuracy (on the same images).
KEYS = ("location_instability", "interpretability", "class_purity", "consistency_ari_corrected", "accuracy")
# A report.json that names no "split" comes from a trial whose evaluation measured the test
# split (pipeline.evaluation wrote no split before it could measure another).
SPLIT_BEFORE = "test"
# Held-out blocks of the selection's size, measured besides the whole held-out part: location
# instability falls as the images grow in number (its top-K images per filter are chosen among
# more), so only a block of the same size shows what the selection itself did to the values;
# two blocks show how much blocks differ by chance.
BLOCKS = 2


@dataclass(frozen=True)
class Member:
    """One trial of one arm x repeat study's front."""

    arm: str
    repeat: int
    spec: Any  # the study's StudySpec
    row: Any  # its TrialRow
    storage: Path  # the study folder, where it is now


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return v


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- collect


def front_members(comp: Any, result: Any) -> list[Member]:
    """Every member of every arm x repeat front, in the answer's order (arm, repeat, best first)."""
    from pipeline.paths import storage_of

    specs = {(arm, k): spec for arm, k, spec in comp.studies()}
    return [
        Member(arm, r.repeat, specs[arm, r.repeat], row, storage_of(specs[arm, r.repeat]))
        for arm, repeats in result.repeats.items() for r in repeats for row in r.front
    ]  # fmt: skip


def launched_in(storage: Path) -> Path:
    """The folder the study was launched in (its study.yaml says; the recorded checkpoint paths
    start there), or `storage` when the folder has no study.yaml."""
    from pipeline.paths import SPEC_FILE, storage_of
    from pipeline.spec import load_spec

    saved = storage / SPEC_FILE
    if saved.is_symlink():
        raise SyncStudyError(f"{saved}: a symbolic link, not followed")
    if not saved.is_file():
        return storage
    return storage_of(load_spec(saved, check_data=False, writable=False))


def checkpoint_folder(m: Member) -> Path:
    """The member's final checkpoint folder in its study folder (a folder that was moved reads
    the recorded path from where it is now); no symbolic link is followed on the way."""
    from pipeline.trial_files import TrialFiles

    row, storage = m.row, m.storage
    if not row.checkpoint:
        raise SyncStudyError(f"{storage}: trial {row.trial_id} has no checkpoint recorded")
    recorded = Path(row.checkpoint)
    if recorded.is_relative_to(storage):
        relative = recorded.relative_to(storage)
    else:
        first = launched_in(storage)
        if not recorded.is_relative_to(first):
            raise SyncStudyError(f"{storage}: trial {row.trial_id}'s checkpoint {recorded} lies outside the study folder")
        relative = recorded.relative_to(first)
    if ".." in relative.parts:
        raise SyncStudyError(f"{storage}: trial {row.trial_id}'s checkpoint {recorded} climbs out of the study folder")
    folder = storage
    for part in relative.parts:
        folder = folder / part
        if folder.is_symlink():
            raise SyncStudyError(f"{folder}: a symbolic link, not followed")
    for name in (TrialFiles.MODEL, TrialFiles.REPORT):
        if (folder / name).is_symlink() or not (folder / name).is_file():
            raise SyncStudyError(f"{folder / name}: missing or not a plain file (trial {row.trial_id}'s final checkpoint)")
    return folder


def selection(folder: Path) -> tuple[str, int]:
    """The split the trial's evaluation measured and its image count, from its report.json."""
    from pipeline.trial_files import TrialFiles

    path = folder / TrialFiles.REPORT
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SyncStudyError(f"{path}: not readable JSON ({exc})") from None
    split, images = report.get("split", SPLIT_BEFORE), report.get("images")
    if split not in ("val", "test") or not isinstance(images, int) or isinstance(images, bool):
        raise SyncStudyError(f"{path}: no evaluation split/images count it could have written")
    return split, images


def check_config(m: Member, config: Any, path: Path) -> None:
    """The checkpoint's config is its row's: the searched params and the seed."""
    saved, params = config.to_dict(), m.row.params
    for name in [*m.spec.searched(), "seed"]:
        if name in params and saved.get(name) != params[name]:
            raise SyncStudyError(
                f"{path}: holds {name} {saved.get(name)!r}, but trial {m.row.trial_id} ran with {params[name]!r}"
            )


def part(split: Any, start: int, stop: int) -> Any:
    """Images [start, stop) of `split`, with their landmarks and part masks."""
    from syncmodel.data import Split

    def cut(t: Any) -> Any:
        return None if t is None else t[start:stop]

    return Split(split.images[start:stop], split.labels[start:stop], cut(split.landmarks), cut(split.part_masks))


def evaluate_kwargs(config: Any, bundle: Any) -> dict[str, Any]:
    """`syncmodel.evaluation.evaluate`'s settings as the trial's evaluation used them
    (pipeline.evaluation: the trained epsilon, `config.seed`, default settings), on the CPU."""
    from pipeline.evaluation import trained_epsilon

    return dict(
        max_images=None, epsilon=trained_epsilon(config), seed=config.seed, num_classes=bundle.num_classes,
        image_size=bundle.image_size, part_names=bundle.part_names or None, device="cpu",
    )  # fmt: skip


def measure(
    model: Any, layers: list[str], config: Any, bundle: Any, split: str, first: int
) -> tuple[dict, dict, int, int, list[tuple[int, dict]]]:
    """`syncmodel.evaluation.evaluate` as the trial ran it (pipeline.evaluation: the trained
    epsilon, `config.seed`, default settings) on the first `first` images of `split` (the
    selection images); on the test images that selected nothing (from `first` on when the
    selection was on test, all of them otherwise); and on up to `BLOCKS` consecutive blocks of
    `first` of those. Returns (selection report, held-out report, first held-out index,
    held-out image count, [(block's first index, its report)])."""
    from syncmodel.evaluation import evaluate

    kwargs = evaluate_kwargs(config, bundle)
    selected, _ = evaluate(model, part(getattr(bundle, split), 0, first), layers, **kwargs)
    start = first if split == "test" else 0
    held, _ = evaluate(model, part(bundle.test, start, len(bundle.test)), layers, **kwargs)
    blocks = []
    for j in range(min(BLOCKS, (len(bundle.test) - start) // first)):
        a = start + j * first
        blocks.append((a, evaluate(model, part(bundle.test, a, a + first), layers, **kwargs)[0]))
    return selected, held, start, len(bundle.test) - start, blocks


def data_for(config: Any, split: str, cache: dict) -> tuple[Any, float, float]:
    """The member's DataBundle (`syncmodel.data.load_data` of its config) and the wall and CPU
    seconds it took to build (0 when cached). The test split never depends on `config.seed` (syncmodel.data.splits
    TEST_SEED): with selection on test, bundles that differ only in seed are shared."""
    from pipeline.trial import DATA_FIELDS
    from syncmodel.data import load_data

    key = tuple(None if (f == "seed" and split == "test") else getattr(config, f) for f in DATA_FIELDS)
    if key in cache:
        return cache[key], 0.0, 0.0
    t, c = time.perf_counter(), time.process_time()
    cache.clear()  # one bundle at a time: the members come study by study
    cache[key] = load_data(config)
    return cache[key], time.perf_counter() - t, time.process_time() - c


@dataclass(frozen=True)
class Measured:
    """What `evaluate_member` found for one member."""

    checkpoint: str  # model.safetensors, relative to the study folder
    split: str  # the split the trial's evaluation measured (its first `first` images)
    first: int
    start: int  # the held-out test images: [start, start + images)
    images: int
    epsilon: float
    seed: int
    layers: list[str]
    selected: dict[str, Any]  # evaluate's report on the selection images
    held: dict[str, Any]  # ... on the held-out ones
    blocks: list[tuple[int, dict[str, Any]]]  # ... on held-out blocks of `first` images: (first index, report)
    data_seconds: float  # building the data (0 when another member's was reused)
    seconds: float  # wall: loading the checkpoint and both evaluations
    cpu_seconds: float  # the same in CPU time of this process


def evaluate_member(m: Member, cache: dict) -> Measured:
    """The slow part: load the member's checkpoint, rebuild its data, evaluate it twice."""
    from pipeline.evaluation import trained_epsilon
    from pipeline.trial_files import TrialFiles
    from syncmodel.checkpoint import load_checkpoint
    from syncmodel.nets import default_layers

    t0, c0 = time.perf_counter(), time.process_time()
    folder = checkpoint_folder(m)
    model, config, meta = load_checkpoint(folder / TrialFiles.MODEL)
    check_config(m, config, folder / TrialFiles.MODEL)
    split, recorded_images = selection(folder)
    bundle, data_seconds, data_cpu = data_for(config, split, cache)
    # the offset is the spec's max_images as evaluate applied it (min with the split's size)
    first = min(m.spec.evaluation.max_images, len(getattr(bundle, split)))
    said = m.row.metrics.get("images")
    if first != recorded_images or (_finite(said) and said != first):
        raise SyncStudyError(
            f"{folder / TrialFiles.REPORT}: the evaluation measured {recorded_images} images (row: {said}), "
            f"not the spec's evaluation.max_images {m.spec.evaluation.max_images} of the {split} split"
        )
    if split == "test" and first >= len(bundle.test):
        raise SyncStudyError(
            f"{m.storage}: evaluation.max_images {m.spec.evaluation.max_images} covers the whole test split "
            f"({len(bundle.test)} images): no held-out image is left"
        )
    layers = list(meta.get("layers") or config.layers or default_layers(config.backbone))
    selected, held, start, n, blocks = measure(model, layers, config, bundle, split, first)
    return Measured(
        str((folder / TrialFiles.MODEL).relative_to(m.storage)), split, first, start, n, trained_epsilon(config),
        config.seed, layers, selected, held, blocks, data_seconds, time.perf_counter() - t0 - data_seconds,
        time.process_time() - c0 - data_cpu,
    )  # fmt: skip


def record(m: Member, objectives: list[str], got: Measured) -> dict:
    """The member's line of heldout.jsonl."""
    metrics, held = m.row.metrics, got.held

    def again(report: dict) -> dict:  # the objectives, the evaluation's re-measured in `report`
        return {o: _plain(report[o] if o in report else metrics.get(o)) for o in objectives}

    return {
        "arm": m.arm, "repeat": m.repeat, "study": m.spec.name, "trial_id": m.row.trial_id,
        "checkpoint": got.checkpoint,
        "selected_on": {"split": got.split, "first": 0, "images": got.first},
        "held_out": {"split": "test", "first": got.start, "images": got.images},
        "epsilon": got.epsilon, "seed": got.seed, "layers": got.layers,
        "val_acc": _plain(metrics.get("val_acc")), "test_acc": _plain(metrics.get("test_acc")),
        # what the search saw, and the same objectives with the evaluation's re-measured on
        # the held-out images (the rest, from training, as they were)
        "objectives": {o: _plain(metrics.get(o)) for o in objectives},
        "objectives_heldout": again(held),
        "remeasured": [o for o in objectives if o in held],
        "recorded": {k: _plain(metrics.get(k)) for k in KEYS},
        "reproduced": {k: _plain(got.selected.get(k)) for k in KEYS},
        "heldout": {k: _plain(held.get(k)) for k in KEYS},
        "blocks": [{"first": a, "images": got.first, "values": {k: _plain(r.get(k)) for k in KEYS}, "objectives": again(r)}
                   for a, r in got.blocks],  # fmt: skip
        "data_seconds": round(got.data_seconds, 3),
        "seconds": round(got.seconds, 3),
        "cpu_seconds": round(got.cpu_seconds, 3),
    }  # fmt: skip


def remeasure(comp: Any, result: Any, out: Callable[[str], None] = print) -> tuple[list[dict], dict]:
    """Every front member's record, and the timing: torch on as many threads as a trial had
    (resources.cpu), as the trials' evaluations ran."""
    import torch

    members = front_members(comp, result)
    objectives = [o.metric for o in comp.objectives]
    threads = max([1, *(int(m.spec.resources.cpu) for m in members)])
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    records: list[dict] = []
    cache: dict = {}
    t0 = time.perf_counter()
    try:
        for i, m in enumerate(members, 1):
            rec = record(m, objectives, evaluate_member(m, cache))
            records.append(rec)
            shift = ", ".join(f"{k} {_g(rec['recorded'][k])} -> {_g(rec['heldout'][k])}" for k in KEYS[:2])
            out(f"[{i}/{len(members)}] {m.arm} r{m.repeat} {m.row.trial_id}: {shift} ({rec['seconds']:.1f} s, CPU {rec['cpu_seconds']:.1f} s)")
    finally:
        torch.set_num_threads(before)
    total = time.perf_counter() - t0
    data = sum(r["data_seconds"] for r in records)
    cpu = sum(r["cpu_seconds"] for r in records)
    timing = {
        "members": len(records), "threads": threads, "nice": os.nice(0), "seconds": round(total, 3),
        "data_seconds": round(data, 3),
        "seconds_per_checkpoint": round((total - data) / len(records), 3) if records else None,
        "cpu_seconds_per_checkpoint": round(cpu / len(records), 3) if records else None,
        "source": "time.perf_counter (wall) and time.process_time (CPU, this process) around "
                  "compare_shapes_heldout.remeasure; per checkpoint: loading it and its evaluations "
                  "(selection images, held-out images, the blocks), building data excluded",
    }  # fmt: skip
    return records, timing


def _g(v: Any) -> str:
    return f"{v:.4g}" if _finite(v) else "-"


# --------------------------------------------------------------------------- fill


def read(path: Path) -> list[dict]:
    if path.is_symlink() or not path.is_file():
        raise SyncStudyError(f"{path}: no such file (compare_shapes.py --collect DIR writes it)")
    records = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SyncStudyError(f"{path}:{i}: not a JSON line ({exc.msg})") from None
        missing = [k for k in ("arm", "repeat", "trial_id", "objectives", "objectives_heldout", "heldout") if k not in records[-1]]
        if missing:
            raise SyncStudyError(f"{path}:{i}: no {', '.join(missing)}")
    return records


def pair_dicts(answer: dict, hv: dict[str, list[float]]) -> list[dict]:
    """The pair table of `syncstudy compare` (pipeline.record.compare.pair_table: paired
    differences, Holm over the table, TOST at the margin, verdicts) for these hypervolumes, as
    compare.json writes it. pair_table reads only the arms' order and the margin of its spec."""
    from pipeline.record.compare import pair_table

    spec = SimpleNamespace(arms=dict.fromkeys(answer["arms"]), margin=answer["equivalence_margin"]["hypervolume"])
    pairs = pair_table(spec, {arm: [math.nan if v is None else float(v) for v in vs] for arm, vs in hv.items()})
    return [
        {"a": p.a, "b": p.b, "n": p.diff.n, "mean": _plain(p.diff.mean), "sd": _plain(p.diff.sd),
         "low": _plain(p.diff.low), "high": _plain(p.diff.high), "p": _plain(p.diff.p), "p_holm": _plain(p.p_holm),
         "p_tost": _plain(p.p_tost), "p_tost_holm": _plain(p.p_tost_holm), "verdict": p.verdict}
        for p in pairs
    ]  # fmt: skip


def heldout_answer(answer: dict, records: list[dict], where: Path, block: int | None = None) -> dict:
    """compare.json's answer with each repeat's front re-measured: the same members, their
    objectives from `objectives_heldout` (or from held-out block `block`), the hypervolume
    against the same reference point, the pair table from those. A member with a non-finite
    objective counts for nothing (studies[].finished counts the others); `where` names the
    files in refusals."""
    from pipeline.hypervolume import hypervolume

    metrics = [o["metric"] for o in answer["objectives"]]
    modes = [o["mode"] for o in answer["objectives"]]
    reference = [answer["reference"][m] for m in metrics]
    arms = {}
    for arm, body in answer["arms"].items():
        studies = []
        for study in body["studies"]:
            k = study["repeat"]
            mine = [r for r in records if r["arm"] == arm and r["repeat"] == k]
            if sorted(r["trial_id"] for r in mine) != sorted(m["trial_id"] for m in study["front"]):
                raise SyncStudyError(f"{where}: {FILE} and compare.json disagree on the front of {arm} r{k}; collect again")
            values = [r["objectives_heldout"] if block is None else r["blocks"][block]["objectives"] for r in mine]
            points = [[v.get(m) for m in metrics] for v in values]
            finite = [p for p in points if all(_finite(v) for v in p)]
            studies.append({"repeat": k, "study": study["study"], "trials": len(mine), "finished": len(finite),
                            "hypervolume": hypervolume(finite, reference, modes), "front": mine})  # fmt: skip
        arms[arm] = {"fields": body["fields"], "hypervolume": [s["hypervolume"] for s in studies], "studies": studies}
    extra = {(r["arm"], r["repeat"]) for r in records} - {(a, s["repeat"]) for a, b in answer["arms"].items() for s in b["studies"]}
    if extra:
        raise SyncStudyError(f"{where}: {FILE} holds members of studies compare.json lacks ({sorted(extra)[0]}); collect again")
    return {**answer, "arms": arms, "pairs": pair_dicts(answer, {a: b["hypervolume"] for a, b in arms.items()})}


def block_answer(answer: dict, records: list[dict], where: Path) -> dict | None:
    """Each repeat's hypervolume on held-out blocks of the selection's size (the mean over the
    blocks every member has), with its pair table; None when the records have no block."""
    n = min((len(r.get("blocks") or []) for r in records), default=0)
    if n == 0:
        return None
    per = [heldout_answer(answer, records, where, block=j) for j in range(n)]
    hv = {arm: [sum(p["arms"][arm]["hypervolume"][k] for p in per) / n for k in range(len(body["studies"]))]
          for arm, body in answer["arms"].items()}  # fmt: skip
    return {**answer, "blocks": n, "arms": {arm: {"hypervolume": v} for arm, v in hv.items()},
            "pairs": pair_dicts(answer, hv)}  # fmt: skip
