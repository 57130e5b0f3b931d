"""docs/experiments/composite_remeasure.py (issue 24 item 1b with the current composite): its
section sits beside composite_ranking.py's and says the composite was re-measured; bad input is
one line and exit 2; docs/results.md's block is what the script makes from the committed rows."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "docs" / "experiments"
sys.path.insert(0, str(Path(__file__).parent))
from test_composite_ranking import _rows  # noqa: E402  (the synthetic trials of the ranking tests)


@pytest.fixture(scope="module")
def rm():  # noqa: ANN201 (a module loaded from a path)
    spec = importlib.util.spec_from_file_location("composite_remeasure", HERE / "composite_remeasure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


META = {"largest_difference_from_recorded": {"accuracy": 0.0, "class_purity": 2e-9}, "tolerance": 1e-4}


def _remeasured() -> list[dict]:
    return [{**r, "remeasured": {"commit": "abcdef1234", "split": "test", "images": 300}} for r in _rows()]


def test_fill_places_a_block_of_its_own_that_says_what_was_remeasured(rm, tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    results.write_text("# Results\n\n## 1. A\n\nx\n\n## 2. B\n\ny\n")
    design = tmp_path / "design.md"
    design.write_text("### 1.4 Metrics\n\nm\n\n### 1.5 Inference\n")
    rm.ranking.fill(results, design, _rows())  # the section on the recorded composite, first
    for _ in range(2):
        rm.fill(results, _remeasured(), META)
    text = results.read_text()
    assert text.count(f"<!-- {rm.BLOCK} (generated") == 1
    assert text.index("## The composite against") < text.index("## The second composite (v2) against") < text.index("## 2. B")
    assert "at commit abcdef1" in text and "class_purity 2.0e-09" in text


def test_bad_input_is_one_line_and_exit_2(rm, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert rm.main(["--data", str(tmp_path)]) == 2  # nothing to do
    assert rm.main(["--data", str(tmp_path), "--fill"]) == 2  # no rows measured
    assert rm.main([str(tmp_path / "nowhere"), "--data", str(tmp_path)]) == 2  # no comparison folder
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert not (tmp_path / rm.OUT_FILE).exists()  # nothing written


def test_results_md_block_is_the_scripts_output(rm, tmp_path: Path) -> None:
    data = HERE / "compare-shapes"
    doc = tmp_path / "results.md"
    doc.write_text((ROOT / "docs" / "results.md").read_text())
    rm.fill(doc, rm.ranking.read_trials(data / rm.OUT_FILE), json.loads((data / "remeasured_meta.json").read_text()))
    assert doc.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md's re-measured ranking differs from composite_remeasure.py --fill's output"
    )
