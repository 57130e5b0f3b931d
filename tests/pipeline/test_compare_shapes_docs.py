"""docs/experiments/compare_shapes.py (issue 25 item 5): --collect copies a finished comparison
folder's trials, `compare --json --no-log` answer, fronts and wall time into the repository and
refuses anything else; --fill writes the results sections from those files alone, every number
from them. A synthetic comparison (tables written with the tables module; no training, no Ray)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.paths import EXPERIMENT_DIR, storage_of
from pipeline.record.compare import compare
from pipeline.record.tables import PARTS, TRIALS, TrialRow, trials_table, write_table
from pipeline.spec.arms import SAVED_FILE, load_comparison, saved_form

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


def _comparison(tmp_path: Path, smoke: bool = False) -> Path:
    """A finished comparison folder as `syncstudy launch` leaves it: the saved spec, and per
    arm x repeat a compacted trials.parquet and Tune's experiment folder."""
    folder = tmp_path / "runs" / "cmp"
    doc = {
        "name": "cmp",
        "train": {"dataset": "shapes", "image_size": 32, "n_train": 200, "epochs": 2},
        "arms": {
            "plain": {"train": {"lambda_focus": 0.0}, "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}},
            "gate": {"train": {"focus_kind": "gate"}, "search": {"lambda_focus": {"low": 1e-3, "high": 1.0, "log": True}}},
        },
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "location_instability", "mode": "min"},
                       {"metric": "interpretability", "mode": "max"}],
        "samples": 3, "repeats": 3, "concurrency": 2,
        "reference": {"val_acc": 0.0, "location_instability": 0.2, "interpretability": 0.0},
        "equivalence_margin": {"hypervolume": 0.002},
        "evaluation": {"enabled": True, "max_images": 60, "pictures": False},
        "storage": str(folder),
    }  # fmt: skip
    spec_path = tmp_path / "cmp.yaml"
    spec_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    comp = load_comparison(spec_path)
    folder.mkdir(parents=True)
    header = f"# the comparison as launched{' (smoke form)' if smoke else ''}, from {spec_path}\n"
    (folder / SAVED_FILE).write_text(header + yaml.safe_dump(saved_form(comp), sort_keys=False))
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
    for arm, body in answer["arms"].items():
        mean, sd = script.mean_sd(body["hypervolume"])
        assert f"{arm} {fmt(mean)} ± {fmt(sd)}" in text[head:section]
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


def test_fill_marks_a_smoke_collection(script, tmp_path: Path) -> None:
    text, _, _ = _filled(script, tmp_path, smoke=True)
    assert "Smoke form: a check that the pipeline runs, not a result" in text
    assert text.count("SMOKE FORM, not a result") == 2  # both sections' titles


def test_fill_refuses_an_answer_that_does_not_match_the_trials(script, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    out = tmp_path / "data"
    assert script.main(["--collect", str(_comparison(tmp_path)), "--data", str(out)]) == 0
    answer = json.loads((out / "compare.json").read_text())
    answer["arms"]["gate"]["studies"][1]["hypervolume"] += 0.01
    (out / "compare.json").write_text(json.dumps(answer))
    results, design = _docs(tmp_path)
    before = results.read_text()
    rc = script.main(["--fill", "--data", str(out), "--results", str(results), "--design", str(design),
                      "--baselines", str(_baselines(tmp_path))])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagree" in err[0] and "gate r1" in err[0]
    assert results.read_text() == before


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
