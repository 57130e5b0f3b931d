"""Issue 25: the comparison of methods each searched with the same budget
(studies/compare-shapes.yaml), reported in docs/results.md from files kept in the repository.

`--collect DIR` copies what the docs need from a finished comparison folder into
docs/experiments/compare-shapes/: every trial of every arm x repeat (trials.jsonl: arm, repeat,
the trial's params, every metric it recorded — objectives, test accuracy, the evaluation's —
and its provenance), the answer of `syncstudy compare SPEC --storage DIR --json --no-log`
(compare.json), the arms' fronts drawn by the code that draws the parent run's fronts.png,
the spec as launched, and the comparison's wall time from its trials' start and end columns
(meta.json). A folder that is not a finished comparison is refused (one line, exit 2).

Each trial's evaluation measured the first `evaluation.max_images` test images, so those
images selected the fronts (two of the three objectives come from them). `--collect` therefore
also re-measures every member of every arm x repeat front on the rest of the test split, which
no trial saw, from its checkpoint in the study folder (compare_shapes_heldout.py: heldout.jsonl,
the time it took in meta.json); the folder must still hold its trials' final checkpoints.

`--fill` rewrites, from those files only (and docs/experiments/baselines.jsonl for the 64-px
plain nets), the comparison's section of docs/results.md and the headline at the top of it
(the hypervolumes re-measured on held-out images first, those the search saw beside them),
then runs composite_ranking.py's fill (issue 24 item 1b) on the same trials. The same comparison
rerun at the gated composite (collected into docs/experiments/compare-shapes-rerun/, or the folder
given with --rerun) gets a section of its own before issue 25's, and the headline leads with it;
every headline paragraph and section names its seeds, commit and the composite its trials carry.

    nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python docs/experiments/compare_shapes.py --collect runs/compare-shapes --machine "..."
    nice -n 19 env OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python docs/experiments/compare_shapes.py --collect runs/compare-shapes-rerun --data docs/experiments/compare-shapes-rerun --machine "..."
    PYTHONPATH=$PWD .venv/bin/python docs/experiments/compare_shapes.py --fill
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = HERE / "compare-shapes"
# The same comparison rerun at the gated composite (fresh seeds, 3 repeats): when collected, the
# headline leads with it and its section stands before issue 25's.
RERUN = HERE / "compare-shapes-rerun"
BASELINES = HERE / "baselines.jsonl"
SCRIPT = "compare_shapes.py"
TRIALS_FILE, ANSWER, FRONTS, META, SPEC = "trials.jsonl", "compare.json", "fronts.png", "meta.json", "comparison.yaml"
SAVED = "comparison.yaml"  # pipeline.spec.arms.SAVED_FILE: the spec as launched, in the folder
REFERENCE_ARM = "plain"  # the arms are judged against it in the headline (else the spec's first)
TITLE = "The comparison: each method searched with the same budget (issue 25)"
HEADLINE = "Headline: the comparison (issue 25)"  # its paragraph's opening words when no rerun leads
RERUN_TITLE = "The comparison rerun with the gated composite"
# Which composite a trial's `interpretability` is, told by the keys its metrics carry: each form
# added one that no earlier form's rows have (docs/design.md §1.4; results.md, "Which composite").
COMPOSITES = (
    ("interpretability_v2", "the gated composite (the current one, from commit ca4f194)"),
    ("between_module_distributedness", "v2 (commits 872009a to ca4f194)"),
    ("interpretability_v1", "the form with D_u (before commit 872009a), which charged the coupling for every "
                            "neuron it drew into a module"),
)
FIRST_COMPOSITE = "v1 (before issue 24), which fell whenever the coupling was on"


def _sibling(name: str) -> Any:
    """A script beside this one (docs/experiments is no package)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: its dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


ranking = _sibling("composite_ranking")
heldout = _sibling("compare_shapes_heldout")
Refusal = ranking.Refusal
plural = ranking.plural
HELDOUT = heldout.FILE


# --------------------------------------------------------------------------- collect


def _plain(v: Any) -> Any:
    """JSON-able: NaN/inf → None; numpy-ish scalars to Python; anything odd to text."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def _iso(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")


def open_comparison(folder: Path) -> Any:
    """The comparison launched into `folder`, every study of it finished; else Refusal."""
    from pipeline.comparison import finished
    from pipeline.paths import storage_of
    from pipeline.record.tables import TRIALS, has_parts
    from pipeline.spec.arms import load_comparison
    from syncmodel.errors import SyncStudyError

    saved = folder / SAVED
    if not folder.is_dir():
        raise Refusal(f"{folder}: no such folder")
    if saved.is_symlink() or not saved.is_file():
        raise Refusal(f"{folder}: not a comparison folder (no {SAVED}; `syncstudy launch SPEC` writes it)")
    try:
        comp = load_comparison(saved, overrides={"storage": str(folder.resolve())}, writable=False)
    except SyncStudyError as exc:
        raise Refusal(f"{saved}: {exc}") from None
    for arm, k, spec in comp.studies():
        storage = storage_of(spec)
        if storage.is_symlink() or (storage / TRIALS).is_symlink():
            raise Refusal(f"{storage}: a symbolic link, not followed")
        if not finished(spec):
            state = "not launched" if not storage.is_dir() else (
                "still running or interrupted" if has_parts(storage) or not (storage / TRIALS).is_file() else "not all its trials ended"
            )  # fmt: skip
            raise Refusal(f"{folder}: not a finished comparison: {storage.name} (arm {arm}, repeat {k}) is {state}")
    return comp


def compare_json(folder: Path) -> dict:
    """What `syncstudy compare FOLDER/comparison.yaml --storage FOLDER --json --no-log` prints."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["compare", str(folder / SAVED), "--storage", str(folder.resolve()), "--json", "--no-log"])
    if rc != 0:
        raise Refusal(f"{folder}: syncstudy compare failed ({err.getvalue().strip() or rc})")
    return json.loads(out.getvalue())


def trial_records(result: Any) -> list[dict]:
    """One record per trial of every arm x repeat (pipeline.record.tables.TrialRow)."""
    from pipeline.record.provenance import KEYS as PROVENANCE

    records = []
    for arm, repeats in result.repeats.items():
        searched = list(result.spec.arms[arm][0].searched())
        for r in repeats:
            for row in r.rows:
                seconds = (row.end_time - row.start_time) if row.start_time and row.end_time else None
                records.append({
                    "arm": arm, "repeat": r.repeat, "study": r.study, "trial_id": row.trial_id,
                    "status": row.status, "error": row.error,
                    "start_time": _iso(row.start_time), "end_time": _iso(row.end_time), "seconds": _plain(None if seconds is None else round(seconds, 3)),
                    **{k: _plain(getattr(row, k)) for k in PROVENANCE},
                    "node_id": row.node_id, "mlflow_run_id": row.mlflow_run_id,
                    "searched": {n: _plain(row.params.get(n)) for n in searched},
                    "params": {k: _plain(v) for k, v in sorted(row.params.items())},
                    "metrics": {k: _plain(v) for k, v in sorted(row.metrics.items())},
                })  # fmt: skip
    return records


def wall_time(records: list[dict], result: Any) -> dict:
    """From the trials' start_time/end_time columns: the first trial's start to the last one's
    end, over the whole comparison and per study."""
    def span(rs: list[dict]) -> dict:
        starts = [datetime.fromisoformat(r["start_time"]) for r in rs if r["start_time"]]
        ends = [datetime.fromisoformat(r["end_time"]) for r in rs if r["end_time"]]
        if not starts or not ends:
            return {"first_start": None, "last_end": None, "seconds": None}
        return {"first_start": min(starts).isoformat(), "last_end": max(ends).isoformat(),
                "seconds": (max(ends) - min(starts)).total_seconds()}  # fmt: skip

    studies = []
    for arm, repeats in result.repeats.items():
        for r in repeats:
            mine = [x for x in records if x["arm"] == arm and x["repeat"] == r.repeat]
            studies.append({"arm": arm, "repeat": r.repeat, "study": r.study, "trials": len(mine), **span(mine)})
    busy = [x["seconds"] for x in records if x["seconds"] is not None]
    return {
        "source": "trials.parquet start_time/end_time: the first trial's start to the last trial's end",
        **span(records), "trial_seconds_sum": sum(busy), "studies": studies,
    }  # fmt: skip


def collect(folder: Path, out: Path, machine: str | None) -> dict:
    """Everything is computed before anything is written; `out` is replaced whole. Returns the
    held-out re-measurement's timing."""
    import yaml

    from pipeline.record.compare import compare, fronts_png
    from syncmodel.errors import SyncStudyError

    comp = open_comparison(folder)
    answer = compare_json(folder)
    result = compare(comp, importances=False)  # the rows and fronts the answer was made from
    records = trial_records(result)
    try:
        held, timing = heldout.remeasure(comp, result, out=lambda line: print(line, flush=True))
    except SyncStudyError as exc:  # a checkpoint missing, altered or not the trial's
        raise Refusal(str(exc)) from None
    spec_text = (folder / SAVED).read_text()
    raw = yaml.safe_load(spec_text)
    meta = {
        "comparison": comp.name,
        "smoke": spec_text.startswith("# the comparison as launched (smoke form)"),
        "source": str(folder.resolve()),
        "collected": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "concurrency": raw.get("concurrency"),
        "evaluation": raw.get("evaluation"),
        "train": raw.get("train"),
        "wall": wall_time(records, result),
        "heldout": timing,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        (tmp / TRIALS_FILE).write_text("".join(json.dumps(r, sort_keys=False, allow_nan=False) + "\n" for r in records))
        (tmp / ANSWER).write_text(json.dumps(answer, indent=2, allow_nan=False) + "\n")
        (tmp / META).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
        (tmp / HELDOUT).write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in held))
        (tmp / SPEC).write_text(spec_text)
        fronts_png(result, tmp / FRONTS)
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return timing


# --------------------------------------------------------------------------- read back


def load(data: Path) -> tuple[dict, dict, list[dict], dict, dict | None]:
    """compare.json, meta.json, trials.jsonl and the answer re-measured on held-out images (from
    heldout.jsonl: on the whole held-out part, and on blocks of the selection's size), each
    checked against the others."""
    from syncmodel.errors import SyncStudyError

    for name in (ANSWER, META, TRIALS_FILE, HELDOUT):
        if not (data / name).is_file() or (data / name).is_symlink():
            raise Refusal(f"{data}: no {name} (run --collect DIR first)")
    try:
        answer = json.loads((data / ANSWER).read_text())
        meta = json.loads((data / META).read_text())
    except json.JSONDecodeError as exc:
        raise Refusal(f"{data}: a JSON file does not parse ({exc.msg})") from None
    rows = ranking.read_trials(data / TRIALS_FILE)
    try:
        composite_of(rows)
    except Refusal as exc:
        raise Refusal(f"{data / TRIALS_FILE}: {exc}") from None
    check_consistent(answer, rows, data)
    try:
        records = heldout.read(data / HELDOUT)
        check_records(answer, rows, records, data)
        held = heldout.heldout_answer(answer, records, data)
        blocks = heldout.block_answer(answer, records, data)
    except SyncStudyError as exc:
        raise Refusal(str(exc)) from None
    return answer, meta, rows, held, blocks


def check_consistent(answer: dict, rows: list[dict], data: Path) -> None:
    """Each repeat's hypervolume in compare.json, recomputed from trials.jsonl (the same front
    and hypervolume code): the two files must be of one collection."""
    from pipeline.hypervolume import hypervolume
    from pipeline.record.summary import pareto_front

    metrics = [o["metric"] for o in answer["objectives"]]
    modes = [o["mode"] for o in answer["objectives"]]
    reference = [answer["reference"][m] for m in metrics]
    for arm, body in answer["arms"].items():
        for study in body["studies"]:
            done = [r for r in rows if r["arm"] == arm and r["repeat"] == study["repeat"] and r["status"] == "ok"
                    and all(_finite(r["metrics"].get(m)) for m in metrics)]  # fmt: skip
            points = [(r["trial_id"], [r["metrics"][m] for m in metrics]) for r in done]
            front = set(pareto_front(points, modes))
            hv = hypervolume([p for tid, p in points if tid in front], reference, modes) if done else 0.0
            said = study["hypervolume"]
            if said is None or abs(hv - said) > 1e-9 * max(1.0, abs(said)):
                raise Refusal(f"{data}: {ANSWER} and {TRIALS_FILE} disagree ({arm} r{study['repeat']}: hypervolume "
                              f"{said} vs {hv}); collect again")  # fmt: skip


def check_records(answer: dict, rows: list[dict], records: list[dict], data: Path) -> None:
    """heldout.jsonl is of the same collection: each member's objectives as searched are its
    trials.jsonl row's; and the pair code the held-out table is computed with gives back
    compare.json's pairs from compare.json's hypervolumes."""
    metrics = [o["metric"] for o in answer["objectives"]]
    by_id = {(r["arm"], r["repeat"], r["trial_id"]): r for r in rows}
    for rec in records:
        row = by_id.get((rec["arm"], rec["repeat"], rec["trial_id"]))
        if row is None or any(rec["objectives"].get(m) != row["metrics"].get(m) for m in metrics):
            raise Refusal(f"{data}: {HELDOUT} and {TRIALS_FILE} disagree ({rec['arm']} r{rec['repeat']} "
                          f"{rec['trial_id']}); collect again")  # fmt: skip
    # the same floats through the same code: equal, not close (JSON keeps a float exactly)
    again = heldout.pair_dicts(answer, {arm: body["hypervolume"] for arm, body in answer["arms"].items()})
    if again != answer["pairs"]:
        raise Refusal(f"{data}: the pair table of {ANSWER} is not what the pair code gives for its hypervolumes "
                      "now; collect again")  # fmt: skip


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- numbers


def fmt(v: Any, digits: int = 3) -> str:
    """A number as the tables print it: 3 significant figures below 0.1, else 3 decimals."""
    if not _finite(v):
        return "–"
    v = float(v) + 0.0  # -0.0 prints as 0
    if v != 0 and abs(v) < 0.1:
        return f"{v:#.{digits}g}"  # '#': trailing zeros kept, so 0.0800 beside 0.0650
    return f"{v:.{digits}f}"


def fp(v: Any) -> str:
    return f"{v:.3g}" if _finite(v) else "–"


def mean_sd(values: list[Any]) -> tuple[float, float]:
    have = [float(v) for v in values if _finite(v)]
    if not have:
        return math.nan, math.nan
    return statistics.fmean(have), (statistics.stdev(have) if len(have) > 1 else math.nan)


def oriented(pair: dict, first: str) -> dict:
    """The pair as `first` − the other: the difference and its interval negated, better/worse
    swapped, where `first` is the pair's b."""
    if pair["a"] == first:
        return dict(pair)
    flip = {"better": "worse", "worse": "better"}
    neg = {k: (-pair[k] if _finite(pair[k]) else pair[k]) for k in ("mean",)}
    return {**pair, "a": pair["b"], "b": pair["a"], **neg,
            "low": -pair["high"] if _finite(pair["high"]) else None,
            "high": -pair["low"] if _finite(pair["low"]) else None,
            "verdict": flip.get(pair["verdict"], pair["verdict"])}  # fmt: skip


def sentence(pair: dict, margin: float) -> str:
    """One contrast, plainly, whatever its verdict."""
    a, b, v = pair["a"], pair["b"], pair["verdict"]
    diff = f"{fmt(pair['mean'])} (95% interval [{fmt(pair['low'])}, {fmt(pair['high'])}])"
    if v in ("better", "worse"):
        word = "larger" if v == "better" else "smaller"
        return (f"**{a}'s front is {word} than {b}'s**: hypervolume difference {diff}, Holm-adjusted p "
                f"{fp(pair['p_holm'])}")  # fmt: skip
    if v == "equivalent":
        return (f"**{a} and {b} are equivalent** within ±{margin:g}: difference {diff}, TOST p (Holm) "
                f"{fp(pair['p_tost_holm'])}")  # fmt: skip
    if v == "inconclusive":
        return (f"**{a} vs {b} is inconclusive**: difference {diff}; neither a difference (Holm-adjusted p "
                f"{fp(pair['p_holm'])}) nor equivalence within ±{margin:g} (TOST p, Holm, {fp(pair['p_tost_holm'])}) "
                "is shown")  # fmt: skip
    return f"**{a} vs {b}: no test** (fewer than two repeats with both hypervolumes)"


def power_line(pair: dict, n: int, margin: float) -> str:
    from syncmodel import stats

    sd = pair.get("sd")
    if not _finite(sd):
        return f"{pair['a']} − {pair['b']}: no estimate (sd of the paired differences undefined)"
    tost = stats.power(n, sd, margin, "tost")
    diff = stats.power(n, sd, margin, "difference")
    need = stats.seeds_for_power(sd, margin, kind="tost")
    need_text = f"more than {need - 1}" if need > 1000 else str(need)
    return (f"{pair['a']} − {pair['b']}: paired sd {fmt(sd)}; with {n} repeats the TOST at ±{margin:g} has power "
            f"{tost:.2f} if the arms are equal, the paired t-test {diff:.2f} if they differ by {margin:g}; 80% power for "
            f"the TOST needs {need_text} repeats")  # fmt: skip


# --------------------------------------------------------------------------- text


def _md(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _param(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _reference_arm(answer: dict) -> str:
    return REFERENCE_ARM if REFERENCE_ARM in answer["arms"] else next(iter(answer["arms"]))


def _duration(seconds: Any) -> str:
    if not _finite(seconds):
        return "–"
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def against_reference(answer: dict) -> list[dict]:
    ref = _reference_arm(answer)
    return [oriented(p, p["b"] if p["a"] == ref else p["a"]) for p in answer["pairs"] if ref in (p["a"], p["b"])]


def images_read(held: dict) -> tuple[str, str, int]:
    """In words: the images that selected the fronts, those re-measured on, and the number of
    members (from the held-out records)."""
    records = _members(held)
    selected = sorted({(r["selected_on"]["split"], r["selected_on"]["images"]) for r in records})
    spans = sorted({(r["held_out"]["first"], r["held_out"]["first"] + r["held_out"]["images"] - 1) for r in records})
    chose = "; ".join(f"the first {n} {split} images" for split, n in selected) or "–"
    on = "; ".join(f"test images {a}–{b}" for a, b in spans) or "–"
    return chose, on, len(records)


def selected_split(held: dict) -> str:
    """The split whose images chose the fronts, in words ("test", "validation")."""
    splits = sorted({r["selected_on"]["split"] for r in _members(held)})
    return " and ".join({"val": "validation"}.get(x, x) for x in splits) or "–"


def composite_of(rows: list[dict]) -> str:
    """Which composite the trials' `interpretability` is, in words (COMPOSITES); one for all, or
    Refusal: a collection of trials scored by two forms has no one front."""
    named = set()
    for r in rows:
        keys = r.get("metrics") or {}
        named.add(next((words for key, words in COMPOSITES if key in keys), FIRST_COMPOSITE))
    if len(named) > 1:
        raise Refusal(f"the trials' `interpretability` is of {len(named)} forms ({'; '.join(sorted(named))})")
    return named.pop() if named else "–"


def anchor(title: str) -> str:
    """The link target GitHub gives a heading."""
    return "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def seeds_of(rows: list[dict]) -> str:
    """The repeats' training seeds, from the trials' params (repeat k: the comparison's seed + k)."""
    seeds = sorted({r["params"].get("seed") for r in rows if isinstance(r.get("params"), dict)} - {None})
    return ", ".join(map(str, seeds)) or "–"


def commits_of(rows: list[dict], digits: int) -> list[str]:
    """The commits the trials record, each shortened to `digits` hex digits."""
    return sorted({(r.get("commit") or "unrecorded")[:digits] for r in rows})


def brief(pair: dict) -> str:
    return f"{pair['a']} − {pair['b']} {fmt(pair['mean'])} [{fmt(pair['low'])}, {fmt(pair['high'])}] {pair['verdict']}"


def _spread(answer: dict) -> str:
    out = []
    for arm, body in answer["arms"].items():
        hv = [v for v in body["hypervolume"] if _finite(v)]
        m, s = mean_sd(hv)
        out.append(f"{arm} {fmt(m)} ± {fmt(s)} (range {fmt(min(hv) if hv else None)}–{fmt(max(hv) if hv else None)})")
    return "; ".join(out)


def headline(answer: dict, held: dict, meta: dict, rows: list[dict], label: str = HEADLINE,
             title: str = TITLE) -> str:  # fmt: skip
    """A paragraph at the top of docs/results.md, opened by `label` in bold: the hypervolumes
    re-measured on held-out images first, those the search saw after them; `title` is the
    heading of its section, linked at the end."""
    from syncmodel import stats

    ref, margin, n = _reference_arm(answer), answer["equivalence_margin"]["hypervolume"], answer["repeats"]
    chose, on, _ = images_read(held)
    contrasts = against_reference(held)
    verdicts = "; ".join(sentence(p, margin) for p in contrasts)
    powers = [stats.power(n, p["sd"], margin, "tost") for p in contrasts if _finite(p.get("sd"))]
    span = "" if not powers else (f"{min(powers):.2f}" if min(powers) == max(powers) else f"{min(powers):.2f}–{max(powers):.2f}")
    power = (f"With {n} repeats and the paired sds observed, a TOST at the spec's margin ±{margin:g} has power "
             f"{span} to show two equal arms equivalent (below). ") if powers else ""  # fmt: skip
    smoke = " **Smoke form: a check that the pipeline runs, not a result.**" if meta.get("smoke") else ""
    train = meta.get("train") or {}
    commits = ", ".join(commits_of(rows, 7)) or "–"
    return (
        f"**{label}.**{smoke} Each method searched with the same budget, "
        f"{answer['samples']} trials in each of {n} repeats (seeds {seeds_of(rows)}), on "
        f"{train.get('image_size', '–')}-px shapes, at commit {commits}; a front's hypervolume counts validation "
        f"accuracy, location instability and the composite together, the composite being {composite_of(rows)}. "
        "The search measured "
        f"location instability and the composite on {chose}, the images that then chose each front, so the "
        f"hypervolumes it saw can be optimistic (a selection leak); here every front member is re-measured on {on}, "
        "which no trial saw. "
        f"Re-measured on held-out images, against {ref}: {verdicts}. Hypervolume per arm on held-out images, mean ± sd "
        f"over the {n} repeats: {_spread(held)}. {power}As the search saw them: "
        f"{'; '.join(brief(p) for p in against_reference(answer))}. Details, fronts, wall time and machine: "
        f"[{title[0].lower() + title[1:]}](#{anchor(title)}).\n"
    )


def section(answer: dict, held: dict, blocks: dict | None, meta: dict, rows: list[dict], baselines: list[dict],
            title: str = TITLE, folder: str = DATA.name) -> str:  # fmt: skip
    """The results.md section (without its markers) of the collection in
    docs/experiments/`folder`, headed `title`."""
    metrics = [o["metric"] for o in answer["objectives"]]
    margin, n = answer["equivalence_margin"]["hypervolume"], answer["repeats"]
    evaluation = meta.get("evaluation") or {}
    chose, on, members = images_read(held)
    smoke = " — SMOKE FORM, not a result" if meta.get("smoke") else ""
    objectives = ", ".join(f"`{o['metric']}` ({o['mode']})" for o in answer["objectives"])
    remeasured = sorted({m for r in _members(held) for m in r.get("remeasured", [])}, key=metrics.index)
    split = selected_split(held)
    if split == "test":  # issue 25's trials evaluated on test images, before `evaluation.split`
        selected = (
            f"the first {evaluation.get('max_images', '–')} images of the **test** split. So the search selected each "
            "front on those test images, and the values it saw for two of the three objectives, and the hypervolumes "
            f"made from them, can be optimistic: a selection leak. The rest of the test split ({on}) was never seen by "
            "any trial;"
        )
        since = (" Since commit f4a4e52 a trial's evaluation runs on the validation split (`evaluation.split`, "
                 "default `val`), so a rerun of this spec selects on validation images and reports on test images.")  # fmt: skip
    else:
        selected = (
            f"{chose}. So those images selected each front, and the values the search saw for two of the three "
            "objectives, and the hypervolumes made from them, can be optimistic: a selection leak. No trial saw the "
            f"test split ({on});"
        )
        since = ""
    out = [
        f"## {title}{smoke}",
        "",
        f"`docs/experiments/{SCRIPT}` from the comparison `{meta.get('comparison', '–')}` (the spec as launched: "
        f"`docs/experiments/{folder}/{SPEC}`; every trial: `{TRIALS_FILE}`; the answer of `syncstudy compare "
        f"--json --no-log`: `{ANSWER}`; the fronts re-measured on held-out images: `{HELDOUT}`). Its trials' "
        f"composite is {composite_of(rows)}. Reproduce this section: "
        f"`PYTHONPATH=$PWD .venv/bin/python docs/experiments/{SCRIPT} --fill`.",
        "",
        *setup(answer, meta, rows),
        "",
        f"Objectives: {objectives}. Validation accuracy is the last epoch's, on the validation split. Location "
        f"instability and the composite come from the trial's evaluation, which `syncmodel.evaluate` ran on {selected} "
        "**the headline numbers are the fronts re-measured there** (below), and the hypervolumes as searched follow "
        "them for comparison. Test accuracy (whole test split) is reported beside the fronts; nothing was selected on "
        f"it.{since}",
        "",
        *where_and_how_long(meta, rows),
        "",
        "### Hypervolume on held-out test images (the headline)",
        "",
        *heldout_method(held, meta, remeasured, chose, on, members),
        "",
        *hypervolume_table(held),
        "",
        *pairs_block(held, n, margin, "the re-measured hypervolumes"),
        *blocks_line(blocks, held),
        "",
        "### The fronts' accurate end",
        "",
        *accurate_end(held),
        "",
        f"### What selection on {split} images did to the fronts",
        "",
        *shift_table(held, remeasured),
        "",
        f"### Hypervolume as searched (selected on {chose})",
        "",
        "What `syncstudy compare` reports: the values the search saw, against the reference point "
        + ", ".join(f"{m} {answer['reference'][m]:g}" for m in metrics) + " (fixed in the spec before the run). "
        "Per arm and repeat (finished trials / trials):",
        "",
        *hypervolume_table(answer),
        "",
        *pairs_block(answer, n, margin, "the hypervolumes as searched"),
        "",
        f"![the arms' fronts, as searched](experiments/{folder}/{FRONTS})",
        "",
        "### The fronts",
        "",
        f"Per arm, the front of its finished trials over all {n} repeats, as searched, best first by the first "
        f"objective; beside it the members' {', '.join(f'`{m}`' for m in remeasured)} re-measured on held-out "
        "images (\"held-out\") and test accuracy (never selected on); the searched params:",
    ]  # fmt: skip
    for arm, body in answer["arms"].items():
        mine = {(r["repeat"], r["trial_id"]): r for s in held["arms"][arm]["studies"] for r in s["front"]}
        out += ["", f"**{arm}** ({', '.join(f'{k} {_param(v)}' for k, v in body['fields'].items()) or 'the common train'}; "
                f"front sizes per repeat: {', '.join(str(len(s['front'])) for s in body['studies'])})", ""]  # fmt: skip
        out += front_table(body, metrics, mine, remeasured)
    out += ["", "### What the search found to matter", "",
            "fANOVA importances of the searched params per arm and objective (pooled over the repeats, as searched; "
            "`pipeline.importance`):", "", *importance_table(answer)]  # fmt: skip
    out += ["", "### The cost of 32 px", "", *pixel_cost(answer, meta, rows, baselines)]
    return "\n".join(out) + "\n"


def heldout_method(held: dict, meta: dict, remeasured: list[str], chose: str, on: str, members: int) -> list[str]:
    """How the held-out hypervolumes were made, the reproduction check and the time it took."""
    records = _members(held)
    metrics = [o["metric"] for o in held["objectives"]]
    kept = [m for m in metrics if m not in remeasured]
    timing = meta.get("heldout") or {}

    def sec(key: str, digits: int) -> str:
        return f"{timing[key]:.{digits}f}" if _finite(timing.get(key)) else "–"

    checks = []
    for key in heldout.KEYS:
        pairs = [(r["recorded"].get(key), r["reproduced"].get(key)) for r in records]
        both = [abs(a - b) for a, b in pairs if _finite(a) and _finite(b)]
        odd = sum(_finite(a) != _finite(b) for a, b in pairs)
        checks.append(f"`{key}` {fp(max(both)) if both else '–'}" + (f" ({odd} defined on one side only)" if odd else ""))
    return [
        f"For every member of every arm × repeat front ({plural(members, 'trial')}: the fronts `syncstudy compare` "
        "computes from the values the search saw) the trial's final checkpoint (`model.safetensors` in its study "
        "folder) was loaded, its data rebuilt from its own config (`syncmodel.data.load_data`), and `syncmodel.evaluate` "
        "run as the trial ran it (its layers, the Sync radius its training ended with, its seed) on "
        f"{on}. Each front's hypervolume is then that of the same members with "
        f"{', '.join(f'`{m}`' for m in remeasured)} re-measured and {', '.join(f'`{m}`' for m in kept) or 'nothing else'} "
        "as recorded, against the same reference point "
        + ", ".join(f"{m} {held['reference'][m]:g}" for m in metrics)
        + "; re-measured members may dominate one another, and a dominated one adds nothing.",
        "",
        size_effect(held),
        "",
        f"Check: the same evaluation on the selection images ({chose}) gives back the values the trials recorded; "
        f"largest absolute difference over the {plural(members, 'member')}: {'; '.join(checks)} (equal to the "
        "last bit is not expected: the trials computed them in float32, in other processes).",
        "",
        f"Time: {sec('seconds', 0)} s wall for {plural(timing.get('members'), 'checkpoint')}: "
        f"{sec('seconds_per_checkpoint', 1)} s wall and {sec('cpu_seconds_per_checkpoint', 1)} s CPU each (loading "
        f"it and its evaluations: selection images, held-out images, the blocks), plus {sec('data_seconds', 1)} s "
        "building data; "
        f"{plural(timing.get('threads'), 'torch thread')} at nice {timing.get('nice', '–')}, on "
        f"{meta.get('machine') or 'the machine --collect ran on'}.",
        "",
        "Per arm and repeat (members with finite re-measured values / front members):",
    ]  # fmt: skip


def pairs_block(answer: dict, n: int, margin: float, what: str) -> list[str]:
    """The pair table, the power of the repeats and the verdicts in words, for `answer`'s pairs."""
    return [
        f"Paired differences of {what} (a − b, repeat k with repeat k: the same seeds) over {n} repeats, 95% "
        f"t-interval; Holm over the table; TOST at the spec's margin ±{margin:g}, Holm too; the verdict from "
        "`syncmodel.stats.verdict` (better/worse: Holm p < 0.05; else equivalent: TOST Holm p < 0.05; else "
        "inconclusive):",
        "",
        *pair_table(answer),
        "",
        f"What {n} repeats can show, from each pair's observed sd of paired differences (`syncmodel.stats.power`, "
        "`seeds_for_power`):",
        "",
        *(f"- {power_line(p, n, margin)}" for p in answer["pairs"]),
        "",
        "What it says:",
        "",
        *(f"- {sentence(p, margin)}." for p in answer["pairs"]),
    ]  # fmt: skip


def _members(held: dict, arm: str | None = None) -> list[dict]:
    return [r for a, body in held["arms"].items() if arm in (None, a) for s in body["studies"] for r in s["front"]]


def accurate_end(held: dict, threshold: float = ranking.KEPT_VAL_ACC) -> list[str]:
    """Per arm, its front members at kept accuracy: how many, and per repeat the best held-out
    location instability and composite among them (a hypervolume also counts members that gave
    accuracy up). Described only: no verdict is drawn from it."""
    rows = []
    for arm, body in held["arms"].items():
        members = kept = 0
        best_li, best_i = [], []
        for study in body["studies"]:
            mine = [r for r in study["front"] if _finite(r.get("val_acc")) and r["val_acc"] >= threshold]
            members, kept = members + len(study["front"]), kept + len(mine)
            li = [r["heldout"].get("location_instability") for r in mine]
            comp = [r["heldout"].get("interpretability") for r in mine]
            best_li.append(min((v for v in li if _finite(v)), default=None))
            best_i.append(max((v for v in comp if _finite(v)), default=None))
        have_li, have_i = [v for v in best_li if _finite(v)], [v for v in best_i if _finite(v)]
        rows.append([arm, f"{kept} of {members}", str(len(have_li)),
                     f"{fmt(statistics.fmean(have_li)) if have_li else '–'}", f"{fmt(statistics.fmean(have_i)) if have_i else '–'}"])  # fmt: skip
    return [
        f"A front's hypervolume also counts members that gave accuracy up. Per arm, its front members (all repeats) "
        f"at kept accuracy (`val_acc` ≥ {threshold:g}, the threshold issue 24's ranking check fixed before any "
        "comparison ran), and, over the repeats that have one, the mean of each repeat's best held-out location "
        "instability and best held-out composite among them. Described, not tested: this view was added after the "
        "hypervolumes were seen, and no verdict is drawn from it.",
        "",
        *_md(["arm", "front members at kept accuracy", "repeats with one", "best location instability, mean",
              "best composite, mean"], rows),  # fmt: skip
    ]


def _blocks_read(records: list[dict]) -> str:
    spans = sorted({(b["first"], b["first"] + b["images"] - 1) for r in records for b in r.get("blocks") or []})
    return " and ".join(f"{a}–{b}" for a, b in spans)


def _block_mean(r: dict, key: str) -> float:
    vs = [b["values"].get(key) for b in r.get("blocks") or []]
    return statistics.fmean(vs) if vs and all(_finite(v) for v in vs) else math.nan


def size_effect(held: dict) -> str:
    """Location instability's mean over all members on the selection images, on held-out
    blocks of their size and on the whole held-out part: how much the image count moves it."""
    records = _members(held)
    key = "location_instability"
    trios = [(r["recorded"].get(key), _block_mean(r, key), r["heldout"].get(key)) for r in records]
    trios = [t for t in trios if all(_finite(v) for v in t)]
    if not trios:
        return ""
    a, b, c = (statistics.fmean(t[i] for t in trios) for i in range(3))
    _, on, _ = images_read(held)
    return (
        f"Location instability depends on how many images it is measured on (ICNN's top K = 100 images per filter "
        f"are picked among more): over the {plural(len(trios), 'member')} its mean is {fmt(a)} on the selection "
        f"images, {fmt(b)} on held-out blocks of the same size (test images {_blocks_read(records)}) and {fmt(c)} "
        f"on {on}. So the held-out hypervolumes below are not on the scale of those the search saw, and a "
        "difference between the two is no measure of the leak (the next section measures it on blocks of the "
        "same size); every arm is measured on the same images, so the contrasts between arms are fair."
    )


def shift_table(held: dict, remeasured: list[str]) -> list[str]:
    """Per arm and value, over the arm's front members (all repeats): the mean as the search saw
    it (the selection images), on held-out blocks of the same size, the change, how much the
    blocks differ, and on the whole held-out part."""
    keys = [*remeasured, *(k for k in heldout.KEYS if k not in remeasured)]
    chose, on, _ = images_read(held)
    records = _members(held)
    rows = []
    for arm in held["arms"]:
        mine = _members(held, arm)
        for k in keys:
            have = [r for r in mine if _finite(r["recorded"].get(k)) and _finite(_block_mean(r, k))]
            if not have:
                rows.append([arm, f"`{k}`", "0", "–", "–", "–", "–", "–"])
                continue
            a = statistics.fmean(r["recorded"][k] for r in have)
            b = statistics.fmean(_block_mean(r, k) for r in have)
            spread = [abs(r["blocks"][0]["values"][k] - r["blocks"][1]["values"][k]) for r in have if len(r["blocks"]) > 1]
            whole = [r["heldout"].get(k) for r in have if _finite(r["heldout"].get(k))]
            rows.append([arm, f"`{k}`", str(len(have)), fmt(a), fmt(b), f"{'+' if b - a >= 0 else '−'}{fmt(abs(b - a))}",
                         fmt(statistics.fmean(spread)) if spread else "–", fmt(statistics.fmean(whole)) if whole else "–"])  # fmt: skip
    tests = "; ".join(f"{arm} {fmt(mean_sd([r.get('test_acc') for r in _members(held, arm)])[0])}" for arm in held["arms"])
    return [
        f"Per arm and value, the mean over the arm's front members (all repeats; members with the value defined on "
        f"the selection images and every block): as searched ({chose}); on held-out blocks of the same size (test "
        f"images {_blocks_read(records)}, the mean of the blocks); the change, which is what selecting on those "
        "images did to the front; how much the blocks differ (mean over members of |block 1 − block 2|), the size "
        f"of a change that chance alone makes; and on {on}. `class_purity` and `consistency_ari_corrected` (issue "
        "24's primaries) were no objective but were measured on the selection images too; `accuracy` is the "
        "evaluation's, on the same images:",
        "",
        *_md(["arm", "value", "members", "as searched", "held-out, same size", "change", "blocks differ by",
              "held-out, all"], rows),  # fmt: skip
        "",
        f"Test accuracy of the front members (whole test split), mean per arm: {tests}.",
    ]  # fmt: skip


def blocks_line(blocks: dict | None, held: dict) -> list[str]:
    """The held-out hypervolumes again on blocks of the selection's size, and their verdicts."""
    if blocks is None:
        return []
    margin = held["equivalence_margin"]["hypervolume"]
    verdicts = "; ".join(brief(p) for p in against_reference(blocks))
    return [
        "",
        f"The same on held-out blocks of the selection's size (test images {_blocks_read(_members(held))}; each "
        f"repeat's hypervolume the mean over the {plural(blocks['blocks'], 'block')}), on the scale the search saw: "
        f"{_spread(blocks)}; paired differences (Holm, TOST at ±{margin:g}) against {_reference_arm(blocks)}: "
        f"{verdicts}.",
    ]


def setup(answer: dict, meta: dict, rows: list[dict]) -> list[str]:
    from syncmodel.config import TrainConfig

    train = meta.get("train") or {}
    arms = ", ".join(f"`{a}`" for a in answer["arms"])
    return [
        f"Setup: arms {arms}; each searched with {answer['samples']} trials (TPE) in each of {answer['repeats']} "
        f"repeats (repeat k of every arm has the same seeds); {train.get('dataset', '–')}, "
        f"{train.get('image_size', '–')} px, {train.get('n_train', '–')} training images, "
        f"{plural(train.get('epochs'), 'epoch')}, `{train.get('backbone') or TrainConfig().backbone}`; {len(rows)} trials, {sum(r['status'] == 'ok' for r in rows)} finished "
        "(status ok)."
    ]


def where_and_how_long(meta: dict, rows: list[dict]) -> list[str]:
    wall = meta.get("wall") or {}
    devices = sorted({r.get("device") or "unrecorded" for r in rows})
    torch = sorted({r.get("torch") or "unrecorded" for r in rows})
    data = sorted({r.get("data_version") or "unrecorded" for r in rows})
    commits = commits_of(rows, 10)
    dirty = sum(bool(r.get("dirty")) for r in rows)
    nodes = len({r.get("node_id") for r in rows if r.get("node_id")})
    machine = meta.get("machine") or "not described at --collect"
    busy = wall.get("trial_seconds_sum")
    per_study = [s["seconds"] for s in wall.get("studies", []) if _finite(s.get("seconds"))]
    return [
        f"Where and how long: {machine}; the trials' device column: {', '.join(devices)} ({plural(nodes, 'Ray node')}); "
        f"torch {', '.join(torch)}; data {', '.join(data)}; commit {', '.join(commits)}"
        f"{f' ({dirty} trials from a checkout with uncommitted changes)' if dirty else ''}. "
        f"{plural(meta.get('concurrency'), 'trial')} at a time. Wall time **{_duration(wall.get('seconds'))}** "
        f"({wall.get('seconds') or 0:.0f} s), from the first trial's start ({wall.get('first_start', '–')}) to the last "
        "trial's end, read from the trials' `start_time`/`end_time` columns (the driver's start-up before the first "
        f"trial and the answer after the last are not in it); the trials themselves took {_duration(busy)} together, "
        f"and one arm × repeat study {_duration(min(per_study) if per_study else None)} to "
        f"{_duration(max(per_study) if per_study else None)}."
    ]


def hypervolume_table(answer: dict) -> list[str]:
    n = answer["repeats"]
    rows = []
    for arm, body in answer["arms"].items():
        cells = [f"{fmt(s['hypervolume'])} ({s['finished']}/{s['trials']})" for s in body["studies"]]
        m, s = mean_sd(body["hypervolume"])
        rows.append([arm, *cells, f"{fmt(m)} ± {fmt(s)}"])
    return _md(["arm", *(f"r{k}" for k in range(n)), "mean ± sd"], rows)


def pair_table(answer: dict) -> list[str]:
    rows = [[p["a"], p["b"], str(p["n"]), fmt(p["mean"]), f"[{fmt(p['low'])}, {fmt(p['high'])}]", fp(p["p"]),
             fp(p["p_holm"]), fp(p["p_tost_holm"]), f"**{p['verdict']}**"] for p in answer["pairs"]]  # fmt: skip
    return _md(["a", "b", "n", "mean a − b", "95% interval", "p", "p Holm", "TOST p Holm", "verdict"], rows)


def front_table(body: dict, metrics: list[str], held: dict[tuple[int, str], dict], remeasured: list[str]) -> list[str]:
    """The pooled front's members, each with its values re-measured on held-out images (`held`
    by (repeat, trial id): a member of the pooled front is on its own repeat's front)."""
    front = body["front"]
    if not front:
        return ["no finished trial"]
    tests = sorted({t for m in front for t in m["test"]})
    names = list(front[0]["params"])

    def again(m: dict, k: str) -> str:
        rec = held.get((m["repeat"], m["trial_id"]))
        return fmt(rec["objectives_heldout"].get(k)) if rec else "–"

    rows = [[f"r{m['repeat']}", m["trial_id"], *(fmt(m["objectives"][k]) for k in metrics),
             *(again(m, k) for k in remeasured), *(fmt(m["test"].get(t)) for t in tests),
             *(_param(m["params"].get(p)) for p in names)] for m in front]  # fmt: skip
    return _md(["repeat", "trial", *metrics, *(f"{k} held-out" for k in remeasured), *tests, *names], rows)


def importance_table(answer: dict) -> list[str]:
    rows = []
    for arm, body in answer["arms"].items():
        for metric, found in body["importances"].items():
            shares = ", ".join(f"{p} {v:.2f}" for p, v in found.items()) if found else "n/a (the objective or no param varies)"
            rows.append([arm, metric, shares])
    return _md(["arm", "objective", "importance"], rows)


def pixel_cost(answer: dict, meta: dict, rows: list[dict], baselines: list[dict]) -> list[str]:
    """Plain nets' test accuracy at 32 px (this comparison) beside 64 px (the issue-11 rows)."""
    from scipy import stats

    from syncmodel.config import TrainConfig
    from syncmodel.data.shapes import DEFAULT_SIZE, DEFAULT_TRAIN

    ref = _reference_arm(answer)
    mine = ranking.best_settings([r for r in rows if r["arm"] == ref and r["status"] == "ok"
                                  and _finite(r["metrics"].get("val_acc"))])  # fmt: skip
    small = [r["metrics"].get("test_acc") for r in mine if _finite(r["metrics"].get("test_acc"))]
    big_rows = [r for r in baselines if r.get("dataset") == "shapes" and r.get("condition") == "plain"
                and r.get("status") != "diverged" and _finite(r.get("test_acc"))]  # fmt: skip
    big = [r["test_acc"] for r in big_rows]
    train = meta.get("train") or {}
    (ms, ss), (mb, sb) = mean_sd(small), mean_sd(big)
    lines = [
        f"Test accuracy of plain nets. 32 px: per repeat, this comparison's `{ref}` trial with the highest "
        "validation accuracy (ties to the one that started first) — "
        + ", ".join(f"r{r['repeat']} {fmt(r['metrics']['test_acc'])}" for r in mine)
        + f"; mean {fmt(ms)} ± {fmt(ss)} (sd, n {len(small)}). {train.get('n_train', '–')} training images, "
        f"{plural(train.get('epochs'), 'epoch')}, lr and weight decay searched.",
    ]
    if not big:
        return lines + ["", "64 px: no plain shapes row in `docs/experiments/baselines.jsonl`."]
    epochs = sorted({r.get("epochs") for r in big_rows})
    n_train = sorted({r.get("n_train") or DEFAULT_TRAIN for r in big_rows})
    devices = sorted({r.get("device") or "unrecorded" for r in big_rows})
    lines += [
        "",
        f"64 px: the issue-11 rows of `docs/experiments/baselines.jsonl` with dataset `shapes` and condition "
        f"`plain` (seeds {', '.join(str(r['seed']) for r in big_rows)}; their `test_acc`): mean {fmt(mb)} ± {fmt(sb)} "
        f"(sd, n {len(big)}). The rows carry no image size: the generator's default, {DEFAULT_SIZE} px; "
        f"{', '.join(map(str, n_train))} training images, {', '.join(map(str, epochs))} epochs, lr "
        f"{TrainConfig().lr:g} fixed, on {', '.join(devices)}.",
    ]
    if len(small) > 1 and len(big) > 1:
        t = stats.ttest_ind(small, big, equal_var=False)
        ci = t.confidence_interval(0.95)
        lines += [
            "",
            f"32 px − 64 px: {fmt(ms - mb)} (Welch 95% interval [{fmt(ci.low)}, {fmt(ci.high)}], p {fp(t.pvalue)}; "
            "unpaired: different seeds and runs). Not the pixels alone: the two also differ in training images, "
            "epochs, tuning and device, as listed.",
        ]
    return lines


# --------------------------------------------------------------------------- fill


def read_baselines(path: Path) -> list[dict]:
    if not path.is_file():
        raise Refusal(f"{path}: no such file (the issue-11 rows)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fill(results: Path, design: Path, data: Path, baselines: Path, top: int = ranking.TOP,
         rerun: Path | None = None) -> None:  # fmt: skip
    """Issue 25's comparison from `data`; with `rerun`, the comparison rerun at the gated
    composite too: the headline leads with it and its section stands before issue 25's."""
    answer, meta, rows, held, blocks = load(data)
    base = read_baselines(baselines)
    lead = lead_body = None  # the rerun's headline paragraph and section
    if rerun is not None:  # read and checked before anything is written
        r_answer, r_meta, r_rows, r_held, r_blocks = load(rerun)
        lead = headline(r_answer, r_held, r_meta, r_rows, "Headline: the comparison rerun with the gated composite",
                        RERUN_TITLE)  # fmt: skip
        lead_body = section(r_answer, r_held, r_blocks, r_meta, r_rows, base, RERUN_TITLE, rerun.name)
    first = headline(answer, held, meta, rows, HEADLINE if lead is None else "Before it, the comparison of issue 25")
    text = ranking.read_doc(results)
    text = ranking.place_block(text, "compare-shapes-headline", first if lead is None else f"{lead}\n{first}", SCRIPT,
                               results, after="# Results\n\n")  # fmt: skip
    text = ranking.place_block(text, "compare-shapes", section(answer, held, blocks, meta, rows, base), SCRIPT, results,
                               before=ranking.RESULTS_BEFORE)  # fmt: skip
    if lead_body is not None:
        text = ranking.place_block(text, "compare-shapes-rerun", lead_body, SCRIPT, results,
                                   before="<!-- compare-shapes (generated")  # fmt: skip
    ranking.write_doc(results, text)
    ranking.fill(results, design, rows, top, bool(meta.get("smoke")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--collect", type=Path, metavar="DIR", help="a finished comparison's folder (runs/compare-shapes)")
    p.add_argument("--machine", help="with --collect: where it ran, in words (the folder does not record it)")
    p.add_argument("--fill", action="store_true", help="rewrite the comparison's sections of --results (and --design)")
    p.add_argument("--data", type=Path, default=DATA, help="the collected files (default: %(default)s)")
    p.add_argument("--rerun", type=Path, help="with --fill: the comparison rerun at the gated composite, collected "
                   f"(default: {RERUN.relative_to(ROOT)} when --data is the default and it is there)")  # fmt: skip
    p.add_argument("--results", type=Path, default=ranking.RESULTS)
    p.add_argument("--design", type=Path, default=ranking.DESIGN)
    p.add_argument("--baselines", type=Path, default=BASELINES)
    args = p.parse_args(argv)
    if not args.collect and not args.fill:
        p.error("give --collect DIR, --fill, or both")
    try:
        if args.collect:
            t = time.perf_counter()
            timing = collect(args.collect, args.data, args.machine)
            print(f"re-measured {timing['members']} front members on held-out test images in {timing['seconds']:.1f} s "
                  f"({timing['seconds_per_checkpoint'] or 0:.2f} s per checkpoint, CPU "
                  f"{timing['cpu_seconds_per_checkpoint'] or 0:.2f} s; {timing['data_seconds']:.1f} s "
                  f"building data, {timing['threads']} torch thread(s), nice {timing['nice']})")  # fmt: skip
            print(f"collected {args.collect} into {args.data} ({time.perf_counter() - t:.1f} s)")
        if args.fill:
            rerun = args.rerun
            if rerun is None and args.data == DATA and RERUN.is_dir():
                rerun = RERUN
            fill(args.results, args.design, args.data, args.baselines, rerun=rerun)
            print(f"filled {args.results} and {args.design} from {args.data}")
    except Refusal as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
