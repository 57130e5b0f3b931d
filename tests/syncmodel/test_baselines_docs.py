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
    legacy = baselines.read(HERE / "baselines.jsonl")
    rerun, v2, before = (baselines.read(HERE / f"{name}.jsonl") for name in RERUNS)
    baselines.fill(doc, legacy)
    baselines.fill(doc, rerun, same_commit=True, block="digits-rerun")
    baselines.fill(doc, before, same_commit=True, block="digits-du")
    confirm = baselines.read(HERE / f"{CONFIRM}.jsonl")
    baselines.fill(doc, confirm, same_commit=True, block="digits-confirm")
    gated = baselines.read(HERE / f"{GATED}.jsonl")
    baselines.fill(doc, gated, same_commit=True, block="digits-gated")
    assert doc.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md's generated tables differ from baselines.py's output: rerun "
        "baselines.py --table --fill docs/results.md (and the --block fills of docs/results.md §2b)"
    )
    assert baselines.tables(legacy) == (HERE / "baselines.md").read_text()
    for name, rows in zip((*RERUNS, CONFIRM, GATED), (rerun, v2, before, confirm, gated), strict=True):
        assert baselines.tables(rows, same_commit=True) == (HERE / f"{name}.md").read_text()


# the 288 digits nets of seeds 0-15, scored at the current code (the gated composite), at 872009a (v2)
# and at 440a3c8 (the composite with D_u)
RERUNS = ("baselines_digits_rerun", "baselines_digits_rerun_872009a", "baselines_digits_rerun_440a3c8")
CONFIRM = "baselines_digits_confirm"  # docs/results.md §2b's confirmatory run (8 conditions, seeds 16-31)
GATED = "baselines_digits_gated"  # §2b's fresh nets for the gated composite (8 conditions, seeds 32-47)


@pytest.mark.parametrize("name", RERUNS)
def test_a_rerun_is_one_commit_with_provenance(baselines, name: str) -> None:
    rows = baselines.read(HERE / f"{name}.jsonl")
    assert {baselines.commit_of(r) for r in rows} != {baselines.LEGACY}
    assert len({baselines.commit_of(r) for r in rows}) == 1
    assert all({"commit", "torch", "device", "data"} <= set(r["provenance"]) for r in rows)
    seeds = {c: sorted(r["seed"] for r in rows if r["condition"] == c) for c in baselines.CONDITIONS}
    assert all(s == list(range(16)) for s in seeds.values())  # every condition, the 16 seeds chosen


def test_the_reruns_are_the_same_nets_scored_three_times(baselines) -> None:
    # docs/results.md §2b: the three sets of rows differ only in the composite (and the keys it
    # reads, and the evaluation's wall time): the same nets, deterministic. The current rows
    # record v2 under its own name, and it is the 872009a rows' composite to the last bit.
    gated, v2, du = ({(r["condition"], r["seed"]): r["report"] for r in baselines.read(HERE / f"{n}.jsonl")} for n in RERUNS)
    assert gated.keys() == v2.keys() == du.keys()
    for key, report in gated.items():
        assert report["interpretability_v2"] == v2[key]["interpretability"], key
        apart = {"interpretability", "interpretability_v2", "eval_seconds"}
        assert {k: v for k, v in report.items() if k not in apart} == {k: v for k, v in v2[key].items() if k not in apart}, key
    apart = {"interpretability", "between_module_distributedness", "eval_seconds"}
    for key, report in v2.items():
        assert {k: v for k, v in report.items() if k not in apart} == {
            k: v for k, v in du[key].items() if k not in apart
        }, key


def test_unit_distributedness_table_is_the_scripts_output() -> None:
    import json

    spec = importlib.util.spec_from_file_location("unit_distributedness", HERE / "unit_distributedness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (ROOT / "docs" / "results.md").read_text()
    start = "<!-- unit-distributedness (output of unit_distributedness.py --table) -->\n"
    block = text[text.index(start) + len(start) : text.index("<!-- /unit-distributedness -->")]
    assert block == module.table(json.loads((HERE / "unit_distributedness.json").read_text()))
