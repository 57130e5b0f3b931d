"""Every study in studies/ runs in its smoke form (issue 11: the studies keep running in CI as
their kinds and metrics change). studies/digits.yaml's smoke form is launched by the shared
`smoke_study` fixture and read by test_e2e.py; the others are launched here, in-process on the
session's Ray, and each must finish every trial with its objectives recorded."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.spec import load_spec
from pipeline.spec.arms import is_comparison

ROOT = Path(__file__).resolve().parents[2]
# A comparison (`arms:`, pipeline.spec.arms) is many studies: tests/pipeline/test_compare_smoke.py
# launches its smoke form.
COMPARISONS = sorted(p for p in (ROOT / "studies").glob("*.yaml") if is_comparison(p))
OTHERS = sorted(p for p in (ROOT / "studies").glob("*.yaml") if p.name != "digits.yaml" and p not in COMPARISONS)


def test_every_study_but_digits_is_launched_here() -> None:
    """A new study file is picked up by the parametrisation below (and digits by test_e2e)."""
    names = {p.name for p in (ROOT / "studies").glob("*.yaml")}
    assert names == {"digits.yaml", *(p.name for p in OTHERS + COMPARISONS)} and OTHERS


@pytest.mark.slow
@pytest.mark.parametrize("study", OTHERS, ids=lambda p: p.stem)
def test_study_smoke_form_runs(study: Path, ray_cluster: str, tmp_path: Path) -> None:
    from pipeline import cli

    spec = load_spec(study, smoke=True)
    storage = tmp_path / spec.name
    assert cli.main(["launch", str(study), "--smoke", "--storage", str(storage), "--quiet"]) == 0
    rows = pq.read_table(storage / "trials.parquet").to_pylist()
    assert len(rows) == spec.samples
    assert {r["status"] for r in rows} == {"ok"}, [(r["trial_id"], r["status"]) for r in rows]
    for row in rows:
        for objective in spec.objectives:
            value = row[f"metrics.{objective.metric}"]
            assert value is not None and math.isfinite(value), (row["trial_id"], objective.metric, value)
