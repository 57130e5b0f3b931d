"""docs/experiments/compare_shapes.py (issue 25 item 5): --collect copies a finished comparison
folder's trials, `compare --json --no-log` answer, fronts and wall time into the repository,
re-measures every front member on the test images no trial saw (compare_shapes_heldout.py), and
refuses anything else; --fill writes the results sections from those files alone, every number
from them. A synthetic comparison (tables written with the tables module; no training, no Ray),
its checkpoints' evaluation replaced by a fake; and a tiny one with real checkpoints."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.paths import EXPERIMENT_DIR, storage_of
from pipeline.record.compare import compare
from pipeline.record.tables import PARTS, TRIALS, TrialRow, trials_table, write_table
from pipeline.spec.arms import SAVED_FILE, load_comparison, saved_text

SCRIPTS = Path(__file__).resolve().parents[2] / "docs" / "experiments"
T0 = 1_800_000_000.0  # the first trial's start, seconds since the epoch
TRIAL_SECONDS = 7.0
# val_acc, location instability, composite of each arm's three trials, and each repeat's shift
# of the composite (so the repeats' hypervolumes differ and the paired sd is not 0)
GRID = {
    "plain": [(0.99, 0.10, 0.20), (0.97, 0.08, 0.22), (0.60, 0.12, 0.05)],
    "gate": [(0.98, 0.06, 0.30), (0.99, 0.07, 0.26), (0.96, 0.05, 0.31)],
}
SHIFT = [0.0, 0.013, -0.007]


@pytest.fixture(scope="module")
def script():  # noqa: ANN201 (a module loaded from a path)
    spec = importlib.util.spec_from_file_location("compare_shapes", SCRIPTS / "compare_shapes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_shapes"] = module
    spec.loader.exec_module(module)
    return module


def _launched(spec_dir: Path, folder: Path, smoke: bool = False, **varying: object):  # noqa: ANN202
    """A comparison spec (`varying`: its name, train, arms, sizes and reference) on the three
    objectives these tests compare, written to `spec_dir` and loaded as launched (--smoke or
    not); `folder` made with the saved spec `launch` leaves in it. Returns the comparison."""
    doc = {
        **varying,
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "location_instability", "mode": "min"},
                       {"metric": "interpretability", "mode": "max"}],
        "equivalence_margin": {"hypervolume": 0.002},
        "evaluation": {"enabled": True, "max_images": 60, "pictures": False},
        "storage": str(folder),
    }  # fmt: skip
    spec_path = spec_dir / f"{varying['name']}.yaml"
    spec_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    comp = dataclasses.replace(load_comparison(spec_path), smoke=smoke)
    folder.mkdir(parents=True)
    (folder / SAVED_FILE).write_text(saved_text(comp))
    return comp


def _comparison(tmp_path: Path, smoke: bool = False) -> Path:
    """A finished comparison folder as `syncstudy launch` leaves it: the saved spec, and per
    arm x repeat a compacted trials.parquet and Tune's experiment folder."""
    folder = tmp_path / "runs" / "cmp"
    comp = _launched(
        tmp_path, folder, smoke=smoke, name="cmp",
        train={"dataset": "shapes", "image_size": 32, "n_train": 200, "epochs": 2},
        arms={
            "plain": {"train": {"lambda_focus": 0.0}, "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
            "gate": {"train": {"focus_kind": "gate"}, "search": {"lambda_focus": {"low": 1e-3, "high": 1.0, "log": True}}},
        },
        samples=3, repeats=3, concurrency=2,
        reference={"val_acc": 0.0, "location_instability": 0.2, "interpretability": 0.0},
    )  # fmt: skip
    start = T0
    for arm, k, spec in comp.studies():
        rows = []
        for i, (acc, inst, comp_score) in enumerate(GRID[arm]):
            name = "lr" if arm == "plain" else "lambda_focus"
            metrics = {
                "val_acc": acc, "location_instability": inst, "interpretability": comp_score + SHIFT[k],
                "test_acc": acc - 0.01 - k / 1000, "class_purity": 0.3 + i / 10, "consistency_ari_corrected": math.nan,
                "detectors": 2.0,
            }  # fmt: skip
            row = TrialRow(f"{arm[0]}{k}t{i}", "ok", {name: 10.0 ** -(i + 2), "seed": k}, metrics,
                           start_time=start, end_time=start + TRIAL_SECONDS, commit="abc123", dirty=False,
                           torch="2.x", device="cpu", data_version="shapes generator 2", node_id="n1")  # fmt: skip
            start += TRIAL_SECONDS + 1.0
            rows.append(row)
        storage = storage_of(spec)
        (storage / EXPERIMENT_DIR).mkdir(parents=True)
        (storage / EXPERIMENT_DIR / "tuner.pkl").write_bytes(b"")  # `finished` checks it exists; never read
        write_table(trials_table(rows), storage / TRIALS)
    return folder


def _docs(tmp_path: Path) -> tuple[Path, Path]:
    results, design = tmp_path / "results.md", tmp_path / "design.md"
    results.write_text("# Results\n\nIntro.\n\n## 1. First\n\nText.\n\n## 2. The comparison: plain\n\nOld.\n")
    design.write_text("# Design\n\n### 1.4 Metrics\n\nMetrics.\n\n### 1.5 Inference over seeds\n\nStats.\n")
    return results, design


def _baselines(tmp_path: Path) -> Path:
    path = tmp_path / "baselines.jsonl"
    rows = [{"dataset": "shapes", "condition": "plain", "seed": s, "epochs": 10, "n_train": None, "status": "ok",
             "device": "NVIDIA H200", "test_acc": acc} for s, acc in enumerate([0.995, 0.996, 1.0])]  # fmt: skip
    rows.append({"dataset": "digits", "condition": "plain", "seed": 0, "epochs": 15, "status": "ok", "test_acc": 0.5})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_collect_copies_every_trial_the_answer_the_fronts_and_the_wall_time(script, tmp_path: Path) -> None:
    folder = _comparison(tmp_path)
    out = tmp_path / "data"
    assert script.main(["--collect", str(folder), "--data", str(out), "--machine", "a 2-core VM"]) == 0
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 3 * 3
    one = next(r for r in rows if r["arm"] == "gate" and r["repeat"] == 2 and r["trial_id"] == "g2t1")
    assert one["searched"] == {"lambda_focus": pytest.approx(1e-3)}
    assert one["metrics"]["interpretability"] == pytest.approx(0.26 + SHIFT[2])
    assert one["metrics"]["test_acc"] == pytest.approx(0.99 - 0.01 - 2 / 1000) and one["metrics"]["detectors"] == 2.0
    assert one["metrics"]["consistency_ari_corrected"] is None  # NaN kept as JSON null
    assert {k: one[k] for k in ("commit", "dirty", "torch", "device", "data_version")} == {
        "commit": "abc123", "dirty": False, "torch": "2.x", "device": "cpu", "data_version": "shapes generator 2"}  # fmt: skip
    # the answer is what `syncstudy compare --json --no-log` prints for the folder
    answer = json.loads((out / "compare.json").read_text())
    result = compare(load_comparison(folder / SAVED_FILE, overrides={"storage": str(folder)}, writable=False))
    for arm, body in answer["arms"].items():
        assert body["hypervolume"] == pytest.approx(result.arm_hypervolumes(arm), rel=1e-12)
    assert [p["verdict"] for p in answer["pairs"]] == [p.verdict for p in result.pairs]
    assert (out / "fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "comparison.yaml").read_text() == (folder / SAVED_FILE).read_text()
    meta = json.loads((out / "meta.json").read_text())
    n = len(rows)
    # trials back to back, 1 s apart: first start to last end = n trials + (n - 1) gaps
    assert meta["wall"]["seconds"] == pytest.approx(n * TRIAL_SECONDS + (n - 1) * 1.0, abs=0.002)
    assert meta["wall"]["trial_seconds_sum"] == pytest.approx(n * TRIAL_SECONDS, abs=0.002 * n)
    assert meta["machine"] == "a 2-core VM" and meta["smoke"] is False and meta["concurrency"] == 2


@pytest.mark.parametrize("damage", ["running", "not-launched", "no-spec"])
def test_collect_refuses_a_folder_that_is_not_a_finished_comparison(script, tmp_path: Path, damage: str,
                                                                     capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    folder = _comparison(tmp_path)
    study = folder / "gate-r1"
    if damage == "running":  # a per-trial file not yet compacted: its driver is at work
        (study / PARTS / "trials").mkdir(parents=True)
        (study / PARTS / "trials" / "g1t9.parquet").write_bytes(b"")
    elif damage == "not-launched":
        (study / TRIALS).unlink()
    else:
        (folder / SAVED_FILE).unlink()
    out = tmp_path / "data"
    out.mkdir()
    (out / "trials.jsonl").write_text("kept\n")  # an earlier collection: must survive the refusal
    assert script.main(["--collect", str(folder), "--data", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(folder) in err[0]
    assert ("gate-r1" in err[0]) == (damage != "no-spec")
    assert sorted(p.name for p in out.iterdir()) == ["trials.jsonl"] and (out / "trials.jsonl").read_text() == "kept\n"


def _filled(script, tmp_path: Path, smoke: bool = False) -> tuple[str, str, dict]:
    out = tmp_path / "data"
    assert script.main(["--collect", str(_comparison(tmp_path, smoke)), "--data", str(out), "--machine", "VM"]) == 0
    results, design = _docs(tmp_path)
    args = ["--fill", "--data", str(out), "--results", str(results), "--design", str(design),
            "--baselines", str(_baselines(tmp_path))]  # fmt: skip
    assert script.main(args) == 0
    text = results.read_text()
    assert script.main(args) == 0  # a second fill rewrites the blocks in place
    assert results.read_text() == text
    return text, design.read_text(), json.loads((out / "compare.json").read_text())


def test_fill_places_the_sections_and_states_every_verdict_from_the_files(script, tmp_path: Path) -> None:
    text, design, answer = _filled(script, tmp_path)
    head = text.index("<!-- compare-shapes-headline")
    section = text.index("<!-- compare-shapes (generated")
    ranking = text.index("<!-- composite-ranking (generated")
    assert text.startswith("# Results\n\n<!-- compare-shapes-headline") and head < text.index("Intro.")
    assert text.index("## 1. First") < section < ranking < text.index("## 2. The comparison: plain")
    assert text.count("## The comparison: each method searched with the same budget (issue 25)") == 1
    assert "SMOKE" not in text
    pair = answer["pairs"][0]
    assert (pair["a"], pair["b"]) == ("plain", "gate")
    assert f"**{pair['verdict']}**" in text  # the verdict word, as syncmodel.stats gave it
    # the headline turns plain - gate into gate - plain: the interval negated
    fmt = script.fmt
    assert f"[{fmt(-pair['high'])}, {fmt(-pair['low'])}]" in text[head:section]
    lines = text[section:].splitlines()
    for arm, body in answer["arms"].items():  # as searched: the section's table
        mean, sd = script.mean_sd(body["hypervolume"])
        assert any(x.startswith(f"| {arm} |") and x.endswith(f"| {fmt(mean)} ± {fmt(sd)} |") for x in lines)
        assert all(f"{fmt(h)} (3/3)" in text for h in body["hypervolume"])
    from syncmodel import stats

    assert f"power {stats.power(3, pair['sd'], 0.002, 'tost'):.2f}" in text
    # 32 px: the plain trial with the best val_acc per repeat (t0, 0.99: test 0.98 - k/1000); 64
    # px: the three shapes plain rows, not the digits one
    assert "r0 0.980, r1 0.979, r2 0.978" in text and "seeds 0, 1, 2" in text
    assert f"mean {fmt((0.995 + 0.996 + 1.0) / 3)}" in text
    assert "Wall time" in text and "VM" in text
    assert "<!-- composite-ranking-pointer" in design
    assert design.index("### 1.4") < design.index("<!-- composite-ranking-pointer") < design.index("### 1.5")


def _marked(data: Path, key: str, every: int = 1) -> None:
    """Give every `every`-th trial of the collection in `data` the metric `key` (the key a form of
    the composite added to the rows it scored)."""
    lines = (data / "trials.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    for i, row in enumerate(rows):
        if i % every == 0:
            row["metrics"][key] = 0.1
    (data / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _two_collections(script, tmp_path: Path) -> tuple[Path, Path]:
    data = {}
    for which in ("issue25", "rerun"):
        (tmp_path / which).mkdir()
        out = data[which] = tmp_path / f"data-{which}"
        assert script.main(["--collect", str(_comparison(tmp_path / which)), "--data", str(out), "--machine", "VM"]) == 0
    _marked(data["rerun"], "interpretability_v2")
    return data["issue25"], data["rerun"]


def test_fill_leads_with_the_rerun_and_names_each_comparisons_composite(script, tmp_path: Path) -> None:
    first, rerun = _two_collections(script, tmp_path)
    results, design = _docs(tmp_path)
    args = ["--fill", "--data", str(first), "--rerun", str(rerun), "--results", str(results), "--design", str(design),
            "--baselines", str(_baselines(tmp_path))]  # fmt: skip
    assert script.main(args) == 0
    text = results.read_text()
    assert script.main(args) == 0  # in place
    assert results.read_text() == text
    head = text[text.index("<!-- compare-shapes-headline"): text.index("<!-- /compare-shapes-headline")]
    lead, before = head.split("\n\n**Before it, the comparison of issue 25.**")
    assert "**Headline: the comparison rerun with the gated composite.**" in lead
    assert "the composite being the gated composite" in lead and "seeds 0, 1, 2" in lead and "abc123" in lead
    assert f"the composite being {script.FIRST_COMPOSITE}" in before
    assert "(#the-comparison-rerun-with-the-gated-composite)" in lead
    assert "(#the-comparison-each-method-searched-with-the-same-budget-issue-25)" in before
    rerun_at = text.index("<!-- compare-shapes-rerun (generated")
    assert text.count("## The comparison rerun with the gated composite\n") == 1
    assert text.index("## 1. First") < rerun_at < text.index("<!-- compare-shapes (generated")
    section = text[rerun_at: text.index("<!-- /compare-shapes-rerun")]
    assert f"![the arms' fronts, as searched](experiments/{rerun.name}/fronts.png)" in section
    assert "Its trials' composite is the gated composite" in section


def test_fill_refuses_a_collection_scored_by_two_composites(script, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    first, rerun = _two_collections(script, tmp_path)
    _marked(first, "between_module_distributedness", every=2)  # half its trials v2's, half the D_u form's
    results, design = _docs(tmp_path)
    before = results.read_text()
    rc = script.main(["--fill", "--data", str(first), "--rerun", str(rerun), "--results", str(results),
                      "--design", str(design), "--baselines", str(_baselines(tmp_path))])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 forms" in err[0] and str(first / "trials.jsonl") in err[0]
    assert results.read_text() == before


def test_fill_marks_a_smoke_collection(script, tmp_path: Path) -> None:
    text, _, _ = _filled(script, tmp_path, smoke=True)
    assert "Smoke form: a check that the pipeline runs, not a result" in text
    assert text.count("SMOKE FORM, not a result") == 2  # both sections' titles


def _fill_refuses_disagreement(script, tmp_path: Path, out: Path, capsys: pytest.CaptureFixture, study: str) -> None:
    """--fill on the collection `out` exits 2 with one line saying it disagrees and naming
    `study` (arm and repeat), and leaves results.md as it was."""
    results, design = _docs(tmp_path)
    before = results.read_text()
    rc = script.main(["--fill", "--data", str(out), "--results", str(results), "--design", str(design),
                      "--baselines", str(_baselines(tmp_path))])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagree" in err[0] and study in err[0]
    assert results.read_text() == before


def test_fill_refuses_an_answer_that_does_not_match_the_trials(script, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    out = tmp_path / "data"
    assert script.main(["--collect", str(_comparison(tmp_path)), "--data", str(out)]) == 0
    answer = json.loads((out / "compare.json").read_text())
    answer["arms"]["gate"]["studies"][1]["hypervolume"] += 0.01
    (out / "compare.json").write_text(json.dumps(answer))
    _fill_refuses_disagreement(script, tmp_path, out, capsys, "gate r1")


def test_fill_refuses_without_a_collection(script, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results, design = _docs(tmp_path)
    rc = script.main(["--fill", "--data", str(tmp_path / "none"), "--results", str(results), "--design", str(design)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--collect" in err[0]


def test_oriented_pair_swaps_the_sides_and_the_verdict(script) -> None:
    pair = {"a": "plain", "b": "gate", "mean": 0.01, "low": 0.002, "high": 0.018, "verdict": "better", "p_holm": 0.01}
    flipped = script.oriented(pair, "gate")
    assert (flipped["a"], flipped["b"], flipped["verdict"]) == ("gate", "plain", "worse")
    assert (flipped["mean"], flipped["low"], flipped["high"]) == (-0.01, -0.018, -0.002)
    assert script.oriented(pair, "plain") == pair


# --------------------------------------------------------------------------- held-out re-measurement
#
# The fronts re-measured on test images no trial saw (compare_shapes_heldout.py). The tests above
# and the bookkeeping tests below replace the evaluation of a checkpoint (evaluate_member, the
# boundary) with values made from the trial's own; one test runs it for real on a tiny comparison
# with real checkpoints.

HELD_LI, HELD_COMPOSITE = 0.02, 0.5  # the fake: held-out instability + 0.02, composite x 0.5
BLOCK_LI = (0.010, 0.012)  # ... and on its two blocks of the selection's size, instability + these


def _fake_member(module):  # noqa: ANN202 (a function of the module's Member)
    def evaluate_member(m, cache: dict):  # noqa: ANN001, ANN202
        met = m.row.metrics
        keys = module.KEYS
        selected = {k: met.get(k) for k in keys}
        held = {**selected, "location_instability": met["location_instability"] + HELD_LI,
                "interpretability": met["interpretability"] * HELD_COMPOSITE}  # fmt: skip
        if (m.arm, m.repeat, m.row.trial_id) == ("gate", 2, "g2t2"):
            held["location_instability"] = math.nan  # undefined on the held-out images: counts for nothing
        first = m.spec.evaluation.max_images
        blocks = [(first * (j + 1), {**selected, "location_instability": met["location_instability"] + d})
                  for j, d in enumerate(BLOCK_LI)]  # fmt: skip
        return module.Measured("tune/x/model.safetensors", "test", first, first, 1000 - first, 0.5, m.row.params["seed"],
                               ["block3"], selected, held, blocks, 0.0, 0.01, 0.01)  # fmt: skip

    return evaluate_member


@pytest.fixture(autouse=True)
def fake_evaluation(request, script, monkeypatch):  # noqa: ANN001, ANN201
    """Every test but those on the `tiny` comparison (real checkpoints) evaluates no checkpoint."""
    if "tiny" not in request.fixturenames:
        monkeypatch.setattr(script.heldout, "evaluate_member", _fake_member(script.heldout))


def _expected_heldout(answer: dict) -> dict[str, list[float]]:
    """Each repeat's front with the fake's held-out values, its hypervolume: computed here."""
    from pipeline.hypervolume import hypervolume

    metrics = [o["metric"] for o in answer["objectives"]]
    out = {}
    for arm, body in answer["arms"].items():
        out[arm] = []
        for study in body["studies"]:
            points = []
            for m in study["front"]:
                acc, li, comp = (m["objectives"][k] for k in metrics)
                if (arm, study["repeat"], m["trial_id"]) != ("gate", 2, "g2t2"):
                    points.append([acc, li + HELD_LI, comp * HELD_COMPOSITE])
            out[arm].append(hypervolume(points, [answer["reference"][k] for k in metrics], ["max", "min", "max"]))
    return out


def test_collect_writes_one_heldout_record_per_front_member(script, tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert script.main(["--collect", str(_comparison(tmp_path)), "--data", str(out)]) == 0
    answer = json.loads((out / "compare.json").read_text())
    records = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    fronts = [(arm, s["repeat"], m["trial_id"]) for arm, body in answer["arms"].items() for s in body["studies"]
              for m in s["front"]]  # fmt: skip
    assert [(r["arm"], r["repeat"], r["trial_id"]) for r in records] == fronts
    assert len(fronts) == 3 * (2 + 3)  # plain's third trial is dominated by its first
    one = next(r for r in records if r["trial_id"] == "g1t0")
    assert one["objectives"] == {"val_acc": 0.98, "location_instability": 0.06, "interpretability": 0.30 + SHIFT[1]}
    assert one["objectives_heldout"] == {
        "val_acc": 0.98, "location_instability": pytest.approx(0.06 + HELD_LI), "interpretability": pytest.approx((0.30 + SHIFT[1]) * HELD_COMPOSITE)}  # fmt: skip
    assert one["remeasured"] == ["location_instability", "interpretability"]
    assert one["selected_on"] == {"split": "test", "first": 0, "images": 60}
    assert one["held_out"] == {"split": "test", "first": 60, "images": 940}
    assert one["heldout"]["consistency_ari_corrected"] is None  # NaN kept as JSON null
    assert one["test_acc"] == pytest.approx(0.98 - 0.01 - 1 / 1000)
    timing = json.loads((out / "meta.json").read_text())["heldout"]
    assert timing["members"] == len(fronts) and timing["threads"] == 1


def test_fill_reports_both_hypervolumes_and_leads_with_the_heldout_ones(script, tmp_path: Path) -> None:
    from syncmodel import stats

    text, _, answer = _filled(script, tmp_path)
    head = text[text.index("<!-- compare-shapes-headline"): text.index("<!-- /compare-shapes-headline")]
    section = text[text.index("<!-- compare-shapes (generated"):]
    fmt = script.fmt
    held = _expected_heldout(answer)
    for arm, hvs in held.items():
        for k, hv in enumerate(hvs):
            n = len(answer["arms"][arm]["studies"][k]["front"])
            finite = n - ((arm, k) == ("gate", 2))
            assert f"{fmt(hv)} ({finite}/{n})" in section
        mean, sd = script.mean_sd(hvs)
        assert f"{arm} {fmt(mean)} ± {fmt(sd)}" in head
    # the held-out contrast, computed here from the hypervolumes: gate − plain in the headline
    diff = stats.paired_difference(held["gate"], held["plain"])
    p_tost = stats.tost([g - p for g, p in zip(held["gate"], held["plain"])], 0.002)
    verdict = stats.verdict(diff.mean, diff.p, p_tost, better="higher")  # one pair: Holm leaves p as it is
    assert f"[{fmt(diff.low)}, {fmt(diff.high)}]" in head
    said = {"better": "larger than plain", "worse": "smaller than plain", "equivalent": "are equivalent",
            "inconclusive": "is inconclusive"}[verdict]  # fmt: skip
    assert said in head.split("As the search saw them")[0]
    # as searched: compare.json's contrast, after the held-out one
    pair = answer["pairs"][0]
    assert f"gate − plain {fmt(-pair['mean'])} [{fmt(-pair['high'])}, {fmt(-pair['low'])}]" in head.split("As the search saw them")[1]
    assert section.index("### Hypervolume on held-out test images") < section.index("### Hypervolume as searched")
    assert "selection leak" in section and "the first 60 test images" in section and "test images 60–999" in head
    # what the selection did, on blocks of its size: plain's members' instability 0.10, 0.08 (x 3
    # repeats); blocks + 0.010 and + 0.012, the whole held-out part + 0.02
    assert "| plain | `location_instability` | 6 | 0.0900 | 0.101 | +0.0110 | 0.00200 | 0.110 |" in section
    assert "test images 60–119 and 120–179" in section
    assert "validation split" in section.split("### Hypervolume on held-out")[0]


@pytest.mark.parametrize("damage", ["member-missing", "objective-changed"])
def test_fill_refuses_heldout_records_of_another_collection(script, tmp_path: Path, damage: str,
                                                            capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    out = tmp_path / "data"
    assert script.main(["--collect", str(_comparison(tmp_path)), "--data", str(out)]) == 0
    lines = (out / "heldout.jsonl").read_text().splitlines()
    if damage == "member-missing":
        lines = lines[1:]
    else:
        first = json.loads(lines[0])
        first["objectives"]["location_instability"] += 0.001
        lines[0] = json.dumps(first)
    (out / "heldout.jsonl").write_text("\n".join(lines) + "\n")
    _fill_refuses_disagreement(script, tmp_path, out, capsys, "plain r0")


# --------------------------------------------------------------------------- a real one, tiny

# A comparison of two arms of plain nets (lr searched; weight decay searched), 2 repeats x 2
# trials, whose checkpoints are real: one net trained for an epoch on 40 shapes images at 32 px,
# each trial's copy nudged by its own seeded noise, evaluated as a trial is (the first 60 test
# images) and its report and checkpoint left where a trial leaves them. epsilon_final makes the
# trained epsilon differ from `epsilon`; the folder is moved after it is written.
TINY_TRAIN = {"dataset": "shapes", "image_size": 32, "n_train": 40, "epochs": 2, "width": 4, "epsilon": 0.5,
              "epsilon_final": 0.3, "bn_stats_images": 40}  # fmt: skip
TINY_VAL_ACC = {0: 0.9, 1: 0.8}  # per trial: with instability and composite a front of 1-2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    import copy

    import torch

    from pipeline.evaluation import trained_epsilon
    from pipeline.paths import SPEC_FILE
    from pipeline.spec.load import dump_resolved
    from syncmodel.checkpoint import read_checkpoint, save_checkpoint
    from syncmodel.config import TrainConfig
    from syncmodel.data import load_data
    from syncmodel.evaluation import evaluate
    from syncmodel.training import train

    root = tmp_path_factory.mktemp("tiny")
    launched = root / "launched" / "cmp"
    comp = _launched(
        root, launched, name="tiny", train=TINY_TRAIN,
        arms={"lr": {"search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
              "wd": {"search": {"weight_decay": {"low": 1e-6, "high": 1e-3, "log": True}}}},
        samples=2, repeats=2, concurrency=1,
        reference={"val_acc": 0.0, "location_instability": 0.5, "interpretability": 0.0},
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trials (resources.cpu 1) and the re-measurement run
    try:
        base = TrainConfig.from_dict(TINY_TRAIN)
        bundle = load_data(base)
        trained = train(base, data=bundle, out_dir=root / "train")
        meta = read_checkpoint(trained.checkpoint)["meta"]
        for arm, k, spec in comp.studies():
            storage = storage_of(spec)
            (storage / EXPERIMENT_DIR).mkdir(parents=True)
            (storage / EXPERIMENT_DIR / "tuner.pkl").write_bytes(b"")
            dump_resolved(spec, storage / SPEC_FILE)
            rows = []
            for i in range(2):
                name = "lr" if arm == "lr" else "weight_decay"
                config = spec.train.replace(**{name: 10.0 ** -(i + 3)})
                model = copy.deepcopy(trained.model)
                noise = torch.Generator().manual_seed(100 * k + 10 * i + (arm == "wd"))
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.3 * p.std() * torch.randn(p.shape, generator=noise))
                trial_id = f"{arm}{k}t{i}"
                folder = storage / EXPERIMENT_DIR / trial_id / "checkpoint_000000"
                save_checkpoint(folder, model, config, meta)
                report, _ = evaluate(model, bundle, trained.layers, max_images=60, epsilon=trained_epsilon(config),
                                     seed=config.seed)  # the trial's evaluation (pipeline.evaluation)
                (folder / "report.json").write_text(json.dumps(report, allow_nan=True))
                metrics = {**report, "val_acc": TINY_VAL_ACC[i], "test_acc": 0.5}
                rows.append(TrialRow(trial_id, "ok", config.to_dict(), metrics, checkpoint=str(folder),
                                     start_time=T0 + len(rows), end_time=T0 + len(rows) + 1.0))  # fmt: skip
            write_table(trials_table(rows), storage / TRIALS)
    finally:
        torch.set_num_threads(threads)
    moved = root / "moved" / "cmp"
    moved.parent.mkdir()
    launched.rename(moved)
    return moved, bundle


def test_collect_remeasures_real_checkpoints_on_the_test_images_no_trial_saw(script, tiny, tmp_path: Path) -> None:
    import torch

    from syncmodel.checkpoint import load_checkpoint

    folder, bundle = tiny
    out = tmp_path / "data"
    assert script.main(["--collect", str(folder), "--data", str(out)]) == 0
    answer = json.loads((out / "compare.json").read_text())
    records = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    fronts = {(arm, s["repeat"], m["trial_id"]) for arm, body in answer["arms"].items() for s in body["studies"]
              for m in s["front"]}  # fmt: skip
    assert {(r["arm"], r["repeat"], r["trial_id"]) for r in records} == fronts
    rows = {(r["arm"], r["trial_id"]): r for r in map(json.loads, (out / "trials.jsonl").read_text().splitlines())}
    for rec in records:
        # the trial's evaluation, run again on the same images, gives back what it recorded: the
        # checkpoint, data, layers, epsilon and seed are the trial's
        assert rec["reproduced"] == {k: rows[rec["arm"], rec["trial_id"]]["metrics"].get(k) for k in rec["reproduced"]}
        assert rec["epsilon"] == pytest.approx(0.3) and rec["seed"] == rec["repeat"]
        assert rec["selected_on"] == {"split": "test", "first": 0, "images": 60}
        assert rec["held_out"] == {"split": "test", "first": 60, "images": len(bundle.test) - 60}
        # the held-out accuracy is the checkpoint's on test images 60..999, counted here
        model, _, _ = load_checkpoint(folder / rec["study"].removeprefix("tiny-") / rec["checkpoint"])
        with torch.no_grad():
            pred = torch.cat([model(x).argmax(1) for x in bundle.test.images[60:].split(256)])
        assert rec["heldout"]["accuracy"] == pytest.approx(float((pred == bundle.test.labels[60:]).float().mean()), abs=0.5 / 940)
        assert rec["objectives_heldout"]["location_instability"] == rec["heldout"]["location_instability"]
        assert rec["objectives_heldout"]["val_acc"] == rec["objectives"]["val_acc"]
    assert any(r["heldout"]["location_instability"] != r["reproduced"]["location_instability"] for r in records)
    timing = json.loads((out / "meta.json").read_text())["heldout"]
    assert timing["members"] == len(records) and timing["seconds_per_checkpoint"] > 0


@pytest.mark.parametrize("damage", ["symlink", "another-trial", "missing"])
def test_collect_refuses_a_checkpoint_that_is_not_the_trials(script, tiny, tmp_path: Path, damage: str,
                                                              capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    import shutil

    folder = tmp_path / "cmp"
    shutil.copytree(tiny[0], folder, symlinks=True)
    result = compare(load_comparison(folder / SAVED_FILE, overrides={"storage": str(folder)}, writable=False))
    first = result.repeats["lr"][0].front[0].trial_id  # the first member re-measured
    other = next(t for t in ("lr0t0", "lr0t1") if t != first)
    model = folder / "lr-r0" / EXPERIMENT_DIR / first / "checkpoint_000000" / "model.safetensors"
    if damage == "symlink":
        model.unlink()
        model.symlink_to(folder / "lr-r0" / EXPERIMENT_DIR / first / ".." / other / "checkpoint_000000" / "model.safetensors")
    elif damage == "another-trial":
        shutil.copyfile(folder / "lr-r0" / EXPERIMENT_DIR / other / "checkpoint_000000" / "model.safetensors", model)
    else:
        model.unlink()
    out = tmp_path / "data"
    out.mkdir()
    (out / "heldout.jsonl").write_text("kept\n")
    assert script.main(["--collect", str(folder), "--data", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(model) in err[0]
    assert ("ran with" in err[0]) == (damage == "another-trial")
    assert sorted(p.name for p in out.iterdir()) == ["heldout.jsonl"] and (out / "heldout.jsonl").read_text() == "kept\n"


def test_results_md_comparison_blocks_are_the_scripts_output(script, tmp_path: Path) -> None:
    """docs/results.md's headline and both comparisons' sections (and the composite ranking the
    fill writes with them) are what `compare_shapes.py --fill` makes from the committed files."""
    import shutil

    docs = SCRIPTS.parent
    results, design = tmp_path / "results.md", tmp_path / "design.md"
    shutil.copyfile(docs / "results.md", results)
    shutil.copyfile(docs / "design.md", design)
    assert script.main(["--fill", "--results", str(results), "--design", str(design)]) == 0
    assert results.read_text() == (docs / "results.md").read_text(), "rerun compare_shapes.py --fill"
    assert design.read_text() == (docs / "design.md").read_text(), "rerun compare_shapes.py --fill"
    assert "<!-- compare-shapes-rerun (generated" in results.read_text()


def test_fill_describes_each_fronts_accurate_end(script, tmp_path: Path) -> None:
    text, _, _ = _filled(script, tmp_path)
    assert "`val_acc` ≥ 0.95" in text[text.index("### The fronts' accurate end"):]
    # at 0.975 some members of both arms' fronts fall below: they are left out
    _, _, _, held, _ = script.load(tmp_path / "data")
    lines = script.accurate_end(held, 0.975)
    records = [json.loads(line) for line in (tmp_path / "data" / "heldout.jsonl").read_text().splitlines()]
    fmt = script.fmt
    for arm in GRID:
        mine = [r for r in records if r["arm"] == arm]
        kept = [r for r in mine if r["val_acc"] >= 0.975]
        assert 0 < len(kept) < len(mine)
        best_li, best_i = [], []
        for k in range(3):
            li = [r["heldout"]["location_instability"] for r in kept if r["repeat"] == k]
            comp = [r["heldout"]["interpretability"] for r in kept if r["repeat"] == k]
            best_li.append(min(v for v in li if v is not None and math.isfinite(v)))
            best_i.append(max(v for v in comp if v is not None and math.isfinite(v)))
        row = next(line for line in lines if line.startswith(f"| {arm} |"))
        assert row == f"| {arm} | {len(kept)} of {len(mine)} | 3 | {fmt(statistics.fmean(best_li))} | {fmt(statistics.fmean(best_i))} |"
    assert "Described, not tested" in lines[0]
