"""studies/compare-shapes.yaml's smoke form, launched for real (2 arms x 2 repeats x 2 trials,
1 epoch) on the session's Ray, then `syncstudy compare` on it: every study ran, the trials
carry their arm and repeat, the comparison's parent run holds the answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.spec.arms import load_comparison

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "studies" / "compare-shapes.yaml"


@pytest.mark.slow
def test_comparison_smoke_form_runs_and_compares(ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline import cli
    from pipeline.comparison import ROLE, TAG_ARM, TAG_REPEAT, comparison_tracker, find_parent
    from pipeline.record.tracking import TAG_PARENT, Tracker

    storage = tmp_path / "cmp"
    assert cli.main(["launch", str(SPEC), "--smoke", "--storage", str(storage), "--quiet"]) == 0
    comp = load_comparison(SPEC, smoke=True, overrides={"storage": str(storage)})
    assert len(comp.studies()) == 4  # 2 arms x 2 repeats
    capsys.readouterr()
    assert cli.main(["compare", str(SPEC), "--smoke", "--storage", str(storage), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["arms"]) == ["plain", "gate"]
    for body in data["arms"].values():
        assert [s["trials"] for s in body["studies"]] == [2, 2]
        for hv in body["hypervolume"]:
            assert hv is not None and math.isfinite(hv) and hv >= 0.0
    (pair,) = data["pairs"]
    assert (pair["a"], pair["b"], pair["n"]) == ("plain", "gate", 2)
    assert pair["verdict"] in ("better", "worse", "equivalent", "inconclusive", "–")

    tracker = comparison_tracker(comp)
    parent = find_parent(tracker, comp.name)
    assert parent is not None and parent.data.tags["syncstudy.role"] == ROLE
    files = {f.path for f in tracker.client.list_artifacts(parent.info.run_id)}
    assert {"comparison.json", "pairs.json", "importances.json", "fronts.png"} <= files
    for arm, k, spec in comp.studies():
        study = Tracker(tracker.target, spec.name)
        assert study.parent().data.tags[TAG_PARENT] == parent.info.run_id
        trials = study.trials()
        assert len(trials) == 2
        assert all(t.tags[TAG_ARM] == arm and t.tags[TAG_REPEAT] == str(k) for t in trials)
    # a second launch without --resume is refused; with it, the finished studies are skipped
    assert cli.main(["launch", str(SPEC), "--smoke", "--storage", str(storage), "--quiet"]) == 2
    assert cli.main(["launch", str(SPEC), "--smoke", "--storage", str(storage), "--quiet", "--resume"]) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 4
