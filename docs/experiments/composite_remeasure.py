"""Issue 24 item 1b with the running code's composite: the searched comparison's trials re-measured
(the committed rows at commit 9d79516, so with v2, `interpretability_v2` since commit ca4f194).

The comparison's trials (docs/experiments/compare-shapes, launched at commit f3dcf93) recorded
the composite of their day, whose distributedness counted every unsynchronised neuron as a unit
(`module_distributedness`). v2 counted the modules alone (`between_module_distributedness`,
docs/design.md §1.4). This script reloads every finished
trial's final checkpoint from the comparison folder, rebuilds its data from its own config and
evaluates it as its trial did (`compare_shapes_heldout.evaluate_kwargs`: its layers, trained
epsilon and seed) on the images its evaluation measured (the first `evaluation.max_images` of
its split). The primary metrics must come back as the trial recorded them (checked: the largest
difference is reported, and above `REPRODUCED` the script refuses); the composite is the
current code's. The rows, in trials.jsonl's form with the composite replaced (the recorded one
kept as `interpretability_recorded`), go to compare-shapes/trials_remeasured.jsonl, and
composite_ranking.py's section is written from them into docs/results.md as a block of its
own.

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/composite_remeasure.py DIR          # measure
    PYTHONPATH=$PWD .venv/bin/python docs/experiments/composite_remeasure.py --fill       # + docs

DIR is the comparison folder (`syncstudy launch studies/compare-shapes.yaml` wrote it). Bad
input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "compare-shapes"
OUT_FILE = "trials_remeasured.jsonl"
SCRIPT = "composite_remeasure.py"
BLOCK = "composite-ranking-remeasured"
# The trial's evaluation and this one run the same float32 code on the same images; only the
# thread count differs (the trials had resources.cpu threads, this runs on one), so the
# convolutions sum in another order and the responses differ by float32 rounding, which the
# metrics that threshold (Sync's module assignment, the top images per filter) can enlarge: on
# the 288 trials the largest difference was 5.5e-5 (held-out purity). Any other input (another
# checkpoint, other images, other settings) moves them by far more. The bound is a fiftieth of
# the smallest margin of a primary metric (location instability's 0.005, syncmodel.stats),
# so a difference under it could not change any reading.
REPRODUCED = 1e-4
CHECKED = ("accuracy", "location_instability", "class_purity", "consistency_ari_corrected")
NEW = ("interpretability", "between_module_distributedness", "module_distributedness")


def _sibling(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


shapes = _sibling("compare_shapes")
heldout = _sibling("compare_shapes_heldout")
ranking = _sibling("composite_ranking")
Refusal = ranking.Refusal
# compare_shapes refuses with the Refusal of the composite_ranking it loaded, which a test
# session may have loaded apart from ours: both are bad input
REFUSALS = tuple({Refusal, shapes.Refusal})


def remeasure(folder: Path) -> tuple[list[dict], dict]:
    """Every trial's record (compare_shapes.trial_records) with the composite re-measured."""
    import torch

    from pipeline.paths import storage_of
    from pipeline.record.compare import compare
    from pipeline.trial_files import TrialFiles
    from syncmodel.checkpoint import load_checkpoint
    from syncmodel.errors import SyncStudyError
    from syncmodel.evaluation import evaluate
    from syncmodel.nets import default_layers
    from syncmodel.provenance import provenance

    torch.set_num_threads(1)
    comp = shapes.open_comparison(folder)
    result = compare(comp, importances=False)
    records = {(r["arm"], r["repeat"], r["trial_id"]): r for r in shapes.trial_records(result)}
    specs = {(arm, k): spec for arm, k, spec in comp.studies()}
    cache: dict = {}
    worst = {k: 0.0 for k in CHECKED}
    t0 = time.perf_counter()
    out = []
    for arm, repeats in result.repeats.items():
        for r in repeats:
            spec = specs[arm, r.repeat]
            for row in r.rows:
                rec = records[(arm, r.repeat, row.trial_id)]
                if row.status != "ok":
                    out.append(rec)
                    continue
                m = heldout.Member(arm, r.repeat, spec, row, storage_of(spec))
                try:
                    ckpt = heldout.checkpoint_folder(m)
                    model, config, meta = load_checkpoint(ckpt / TrialFiles.MODEL)
                    heldout.check_config(m, config, ckpt / TrialFiles.MODEL)
                    split, images = heldout.selection(ckpt)
                except SyncStudyError as exc:
                    raise Refusal(str(exc)) from None
                bundle, _, _ = heldout.data_for(config, split, cache)
                layers = list(meta.get("layers") or config.layers or default_layers(config.backbone))
                report, _ = evaluate(model, heldout.part(getattr(bundle, split), 0, images), layers,
                                     **heldout.evaluate_kwargs(config, bundle))  # fmt: skip
                for k in CHECKED:
                    a, b = ranking.number(report.get(k)), ranking.number(row.metrics.get(k))
                    if math.isnan(a) != math.isnan(b):
                        raise Refusal(f"{ckpt}: {k} {b} recorded, {a} re-measured: not the trial's inputs")
                    if not math.isnan(a):
                        worst[k] = max(worst[k], abs(a - b))
                        if abs(a - b) > REPRODUCED:
                            raise Refusal(f"{ckpt}: {k} {b} recorded, {a} re-measured: not the trial's inputs")
                metrics = dict(rec["metrics"])
                metrics["interpretability_recorded"] = metrics.get("interpretability")
                metrics.update({k: heldout._plain(report.get(k)) for k in NEW})
                out.append({**rec, "metrics": metrics,
                            "remeasured": {"split": split, "images": images, **provenance(config.dataset, "cpu")}})  # fmt: skip
                print(f"{arm} r{r.repeat} {row.trial_id}: composite {ranking.number(rec['metrics'].get('interpretability')):.4f} "
                      f"-> {ranking.number(report['interpretability']):.4f}", flush=True)  # fmt: skip
    meta = {"source": str(folder.resolve()), "seconds": round(time.perf_counter() - t0, 1),
            "largest_difference_from_recorded": worst, "tolerance": REPRODUCED}  # fmt: skip
    return out, meta


def fill(results: Path, rows: list[dict], meta: dict, smoke: bool = False) -> None:
    """docs/results.md's block BLOCK: composite_ranking.py's section on the re-measured rows,
    after the section on the recorded ones."""
    commits = sorted({r["remeasured"].get("commit") or "none" for r in rows if "remeasured" in r})
    diff = ", ".join(f"{k} {v:.1e}" for k, v in meta["largest_difference_from_recorded"].items())
    note = (f"The composite re-measured by `docs/experiments/{SCRIPT}` from every finished trial's checkpoint at commit "
            f"{', '.join(c[:7] for c in commits)}, on the images the trial's evaluation measured; every other metric as "
            f"the trial recorded it (the re-measurement gave them back: largest difference {diff}). Rows: "
            f"`docs/experiments/compare-shapes/{OUT_FILE}`.")  # fmt: skip
    body = ranking.section(rows, smoke=smoke, remeasured=note)
    text = ranking.place_block(ranking.read_doc(results), BLOCK, body, SCRIPT, results, before=ranking.RESULTS_BEFORE)
    ranking.write_doc(results, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, nargs="?", help="the comparison folder to re-measure (omit with --fill)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--fill", action="store_true", help="write the section into --results from --data's rows")
    p.add_argument("--results", type=Path, default=ranking.RESULTS)
    args = p.parse_args(argv)
    try:
        out, meta_file = args.data / OUT_FILE, args.data / "remeasured_meta.json"
        if args.folder is not None:
            rows, meta = remeasure(args.folder)
            out.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))
            meta_file.write_text(json.dumps(meta, indent=2) + "\n")
        if args.fill:
            if not meta_file.is_file():
                raise Refusal(f"{meta_file}: missing (run with the comparison folder first)")
            fill(args.results, ranking.read_trials(out), json.loads(meta_file.read_text()), ranking.is_smoke(args.data))
        if args.folder is None and not args.fill:
            raise Refusal("nothing to do: give the comparison folder, or --fill")
    except REFUSALS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
