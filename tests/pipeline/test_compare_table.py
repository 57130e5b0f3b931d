"""The answer of a comparison from its studies' trials tables (written with the tables
module, no training): hypervolume per arm x repeat, the paired differences over repeats,
Holm over the table, TOST at the spec's margin, the verdicts; `syncstudy compare --json`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.paths import storage_of
from pipeline.record.compare import compare, fronts_png, report
from pipeline.record.tables import TRIALS, TrialRow, trials_table, write_table
from pipeline.spec.arms import load_comparison
from syncmodel import stats

EPS = sys.float_info.epsilon
MARGIN = 0.01
ACC = 0.9  # every front trial's val_acc: its hypervolume is 0.9 x (0.2 - instability)
# The hypervolume of each arm's repeats. b is a clearly lower (~0.05 below a, pair by pair);
# c equals a within +-0.001 (inside the margin); d scatters +-0.05 around a (no answer).
HV = {
    "a": [0.10, 0.11, 0.12, 0.13],
    "b": [0.050, 0.061, 0.069, 0.080],
    "c": [0.101, 0.109, 0.1205, 0.1295],
    "d": [0.15, 0.06, 0.16, 0.09],
}


def _spec(tmp_path: Path) -> Path:
    doc = {
        "name": "cmp",
        "train": {"dataset": "shapes", "image_size": 32, "n_train": 200, "epochs": 1},
        "arms": {arm: {"train": {"lr": 0.001 * (i + 1)}, "search": {"weight_decay": {"low": 1e-6, "high": 1e-3, "log": True}}}
                 for i, arm in enumerate(HV)},
        "objectives": [{"metric": "val_acc", "mode": "max"}, {"metric": "location_instability", "mode": "min"}],
        "samples": 3,
        "repeats": 4,
        "reference": {"val_acc": 0.0, "location_instability": 0.2},
        "equivalence_margin": {"hypervolume": MARGIN},
        "storage": str(tmp_path / "cmp"),
    }  # fmt: skip
    path = tmp_path / "cmp.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _row(tid: str, status: str, acc: float, inst: float, wd: float = 1e-4) -> TrialRow:
    metrics = {"val_acc": acc, "location_instability": inst, "test_acc": acc - 0.01}
    return TrialRow(tid, status, {"weight_decay": wd, "lr": 0.001}, metrics)


def _write_tables(path: Path) -> None:
    comp = load_comparison(path)
    for arm, k, spec in comp.studies():
        hv = HV[arm][k]
        rows = [
            _row("t0", "ok", ACC, 0.2 - hv / ACC),  # the front
            _row("t1", "ok", ACC - 0.1, 0.2 - hv / ACC + 0.01),  # dominated by t0
            _row("t2", "error", 1.0, 0.0),  # better on both, but not finished: never counts
        ]
        folder = storage_of(spec)
        folder.mkdir(parents=True)
        write_table(trials_table(rows), folder / TRIALS)


def test_hypervolumes_pairs_holm_and_verdicts(tmp_path: Path) -> None:
    path = _spec(tmp_path)
    _write_tables(path)
    result = compare(load_comparison(path), importances=False)
    for arm, rs in result.repeats.items():
        for k, r in enumerate(rs):
            assert [row.trial_id for row in r.front] == ["t0"] and r.finished == 2
            # 0.9 x (0.2 - (0.2 - hv / 0.9)): two subtractions and a division and a product,
            # each off by at most u = eps/2 relative of values <= 0.2: within 8 u of hv
            assert abs(r.hypervolume - HV[arm][k]) <= 8 * (EPS / 2)
    pairs = {(p.a, p.b): p for p in result.pairs}
    assert list(pairs) == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    hv = {arm: result.arm_hypervolumes(arm) for arm in HV}
    for (a, b), p in pairs.items():
        expected = stats.paired_difference(hv[a], hv[b])
        assert p.diff == expected and p.diff.n == 4
        assert p.p_tost == stats.tost([x - y for x, y in zip(hv[a], hv[b])], MARGIN)
        assert p.diff.low <= p.diff.mean <= p.diff.high
    # Holm over the table: the adjusted p of each family as syncmodel.stats computes them
    adjusted, _ = stats.holm([p.diff.p for p in result.pairs])
    assert [p.p_holm for p in result.pairs] == adjusted
    adjusted, _ = stats.holm([p.p_tost for p in result.pairs])
    assert [p.p_tost_holm for p in result.pairs] == adjusted
    assert pairs[("a", "b")].verdict == "better"
    assert pairs[("b", "c")].verdict == "worse"
    assert pairs[("a", "c")].verdict == "equivalent"
    assert pairs[("a", "d")].verdict == "inconclusive"
    assert pairs[("a", "b")].diff.mean == pytest.approx(0.05, abs=0.002)
    text = "\n".join(report(result))
    assert "equivalent" in text and "inconclusive" in text and f"±{MARGIN:g}" in text
    png = fronts_png(result, tmp_path / "fronts.png")
    assert png is not None and png.stat().st_size > 0


def test_a_study_not_launched_counts_as_missing(tmp_path: Path) -> None:
    path = _spec(tmp_path)
    _write_tables(path)
    comp = load_comparison(path)
    (storage_of(comp.arms["d"][3]) / TRIALS).unlink()
    storage_of(comp.arms["d"][3]).rmdir()
    result = compare(comp, importances=False)
    assert math.isnan(result.repeats["d"][3].hypervolume)
    pair = next(p for p in result.pairs if (p.a, p.b) == ("a", "d"))
    assert pair.diff.n == 3  # the pair with a missing side dropped


def test_compare_command_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _spec(tmp_path)
    _write_tables(path)
    assert main(["compare", str(path), "--json", "--no-log"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["arms"]) == set(HV)
    assert data["reference"] == {"val_acc": 0.0, "location_instability": 0.2}
    verdicts = {(p["a"], p["b"]): p["verdict"] for p in data["pairs"]}
    assert verdicts[("a", "b")] == "better" and verdicts[("a", "c")] == "equivalent"
    front = data["arms"]["a"]["front"]
    # the pooled front over 4 repeats: every repeat's t0 has val_acc 0.9, so the one with the
    # lowest instability (the largest hypervolume, repeat 3) dominates the rest
    assert [(m["repeat"], m["trial_id"]) for m in front] == [(3, "t0")]
    assert front[0]["test"] == {"test_acc": pytest.approx(ACC - 0.01)}
    assert front[0]["params"] == {"weight_decay": 1e-4}


def test_compare_refuses_a_comparison_never_launched(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["compare", str(_spec(tmp_path)), "--no-log"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "launch it first" in err[0]


@pytest.mark.parametrize(("split", "heading"), [("val", "validation split;"), ("test", "test split's first images")])
def test_the_front_heading_names_the_split_that_selected_it(tmp_path: Path, split: str, heading: str) -> None:
    path = _spec(tmp_path)
    doc = yaml.safe_load(path.read_text())
    doc["evaluation"] = {"split": split}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    _write_tables(path)
    text = "\n".join(report(compare(load_comparison(path), importances=False)))
    assert text.count(heading) == len(HV), text
