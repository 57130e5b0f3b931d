"""docs/results.md's baseline tables and docs/experiments/baselines*.md are what baselines.py
makes from the committed rows (issue 24: every number in the docs comes from a script): the
legacy rows, and the digits rerun's rows of one commit (`--same-commit --block digits-rerun`)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "docs" / "experiments"


@pytest.fixture(scope="module")
def baselines():  # noqa: ANN201 (a module loaded from a path)
    spec = importlib.util.spec_from_file_location("baselines", HERE / "baselines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_md_tables_are_regenerated_from_the_rows(baselines, tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    shutil.copy(ROOT / "docs" / "results.md", doc)
    legacy, rerun = baselines.read(HERE / "baselines.jsonl"), baselines.read(HERE / "baselines_digits_rerun.jsonl")
    baselines.fill(doc, legacy)
    baselines.fill(doc, rerun, same_commit=True, block="digits-rerun")
    assert doc.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md's generated tables differ from baselines.py's output: rerun "
        "baselines.py --table --fill docs/results.md (and --block digits-rerun; docs/results.md §2b)"
    )
    assert baselines.tables(legacy) == (HERE / "baselines.md").read_text()
    assert baselines.tables(rerun, same_commit=True) == (HERE / "baselines_digits_rerun.md").read_text()


def test_the_rerun_is_one_commit_with_provenance(baselines) -> None:
    rows = baselines.read(HERE / "baselines_digits_rerun.jsonl")
    assert {baselines.commit_of(r) for r in rows} != {baselines.LEGACY}
    assert len({baselines.commit_of(r) for r in rows}) == 1
    assert all({"commit", "torch", "device", "data"} <= set(r["provenance"]) for r in rows)
    seeds = {c: sorted(r["seed"] for r in rows if r["condition"] == c) for c in baselines.CONDITIONS}
    assert all(s == list(range(16)) for s in seeds.values())  # every condition, the 16 seeds chosen


def test_unit_distributedness_table_is_the_scripts_output() -> None:
    import json

    spec = importlib.util.spec_from_file_location("unit_distributedness", HERE / "unit_distributedness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "docs" / "results.md").read_text()
    start = "<!-- unit-distributedness (output of unit_distributedness.py --table) -->\n"
    block = text[text.index(start) + len(start) : text.index("<!-- /unit-distributedness -->")]
    assert block == module.table(json.loads((HERE / "unit_distributedness.json").read_text()))
