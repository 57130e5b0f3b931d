"""docs/experiments/distributedness_yardstick.py (issue 24 item 1b, the composite with its
distributedness yardstick varied): the rescaling is the composite recomputed with the other
factor, the current yardstick reproduces the ranking checks' own numbers, bad input is one line
and exit 2 with nothing written, and docs/results.md's block is the script's output."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from syncmodel.metrics import effective_neurons, module_responses
from syncmodel.metrics.distributed import between_module_distributedness
from syncmodel.metrics.score import interpretability_v2

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "docs" / "experiments"


@pytest.fixture(scope="module")
def dy():  # noqa: ANN201 (a module loaded from a path)
    spec = importlib.util.spec_from_file_location("distributedness_yardstick", HERE / "distributedness_yardstick.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _layer(modules: int, free: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses of `modules` groups of 4 near-identical neurons plus `free` independent ones."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(300, modules, generator=g)
    cols = [base[:, i : i + 1] + 0.05 * torch.randn(300, 4, generator=g) for i in range(modules)]
    responses = torch.cat([*cols, torch.randn(300, free, generator=g)], dim=1)
    ids = torch.cat([torch.arange(modules).repeat_interleave(4), torch.full((free,), -1)])
    return responses, ids


@pytest.mark.parametrize(("modules", "k"), [(1, 10), (2, 10), (3, 4), (5, 10), (6, 4)])
@pytest.mark.parametrize("level", [1.0, 2.0, 3.0])
def test_rescaled_is_the_composite_with_the_other_yardstick(dy, modules: int, k: int, level: float) -> None:
    """I_L from the recorded I and D_m equals the composite computed afresh with
    min(1, PR / L) as its distributedness, PR the modules' participation ratio."""
    responses, ids = _layer(modules, free=6, seed=modules * 31 + k)
    if level > k - 1:
        pytest.skip("yardsticks above K - 1 are not defined by a rescaling")
    d_m = between_module_distributedness(responses, ids, k)
    pr = effective_neurons(module_responses(responses, ids))
    scores = torch.rand(responses.shape[1], generator=torch.Generator().manual_seed(k))
    terms = {"coverage": 0.7, "consistency": 0.8, "purity": 0.6, "largest_module": 0.2, "accuracy": 0.95, "chance": 1 / k}
    current = interpretability_v2(scores, distributedness=d_m, **terms)
    expected = interpretability_v2(scores, distributedness=min(1.0, pr / level), **terms)
    # Both sides are the same exact product in float64 (the float32 neuron term is the same
    # number in both): the rescaled one rounds 6 times (2 in the composite, 2 in D_m (K-1) / L,
    # the product and the quotient; D_m's own rounding cancels), the fresh one 3 times (PR / L
    # and the composite's 2); each rounding is at most a relative 2**-53
    ulps = 9 * 2.0**-53
    assert dy.rescaled(current, d_m, k, level) == pytest.approx(expected, rel=ulps, abs=0.0)
    assert dy.rescaled(current, d_m, k, k - 1) == pytest.approx(current, rel=ulps, abs=0.0)


def test_rescaled_edges(dy) -> None:
    assert dy.rescaled(0.0, 0.0, 10, 2.0) == 0.0  # no module: the factor is 0 at any yardstick
    assert math.isnan(dy.rescaled(math.nan, 0.5, 10, 2.0))
    with pytest.raises(ValueError, match="outside"):
        dy.rescaled(0.1, 0.5, 4, 3.5)  # beyond K - 1 a saturated D_m hides PR


def test_current_yardstick_gives_the_ranking_checks_own_numbers(dy) -> None:
    """L = K - 1 changes no composite: τ equal to baselines.ranking_conditions' and
    composite_ranking's on the unmodified rows."""
    cr, bl = dy.ranking, dy.baselines
    current = dy.at_level(dy.LEVELS[0][1])
    digits = dy.read_jsonl(dy.DIGITS, dy.DIGITS_KEYS)
    _, _, means, nets = bl.ranking_conditions(bl.select(digits)[0])
    shapes = dy.read_jsonl(dy.SHAPES, dy.SHAPES_KEYS)
    keep = cr.kept(shapes)
    primaries = [p for p in cr.PRIMARIES if cr.recorded(shapes)[p]]
    reference = {"condition means": means, "every net": nets,
                 "every kept trial": [cr.condition(r, primaries) for r in keep],
                 "the arms' best settings": [cr.condition(r, primaries) for r in cr.best_settings(keep)]}  # fmt: skip
    got = dict(dy.digits_sets(digits, current) + dy.shapes_sets(shapes, current))
    assert set(got) == set(reference)
    for name, conds in got.items():
        ps = [k for k in conds[0].values if k != dy.COMPOSITE]
        for p in ps:
            assert cr.kendall(conds, dy.COMPOSITE, p).tau == pytest.approx(
                cr.kendall(reference[name], dy.COMPOSITE, p).tau, abs=1e-12
            ), (name, p)


def test_bad_input_is_one_line_and_exit_2(dy, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(f"x\n<!-- {dy.BLOCK} (generated by {dy.SCRIPT} --fill) -->\nold\n<!-- /{dy.BLOCK} -->\n")
    before = doc.read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"arm": "plain", "status": "ok"}) + "\n")
    notjson = tmp_path / "notjson.jsonl"
    notjson.write_text("{\n")
    runs = [
        ["--digits", str(tmp_path / "nowhere.jsonl")],
        ["--shapes", str(bad)],
        ["--shapes", str(notjson)],
        ["--results", str(tmp_path / "none.md"), "--fill"],
        # the comparison's trials as recorded: the composite before D_m, not rescalable
        ["--shapes", str(HERE / "compare-shapes" / "trials.jsonl"), "--only", "shapes"],
    ]
    for argv in runs:
        assert dy.main([*argv, "--results", str(doc)] if "--results" not in argv else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == len(runs) and all(line.startswith("error: ") for line in err)
    assert "nowhere.jsonl" in err[0] and "bad.jsonl:1" in err[1] and "trial_id" in err[1] and "notjson.jsonl:1" in err[2]
    assert "between_module_distributedness" in err[4] and "compare-shapes/trials.jsonl" in err[4]  # the file given
    assert doc.read_text() == before  # nothing written


def test_fill_needs_the_block(dy, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\n## 2. B\n")
    assert dy.main(["--results", str(doc), "--fill"]) == 2
    assert "no block" in capsys.readouterr().err and doc.read_text() == "# Results\n\n## 2. B\n"


def test_results_md_block_is_the_scripts_output(dy, tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text((ROOT / "docs" / "results.md").read_text())
    dy.fill(doc, dy.read_jsonl(dy.DIGITS, dy.DIGITS_KEYS), dy.read_jsonl(dy.SHAPES, dy.SHAPES_KEYS))
    dy.fill(doc, dy.read_jsonl(CONFIRM, dy.DIGITS_KEYS), None, CONFIRM_BLOCK)
    dy.fill(doc, None, dy.read_jsonl(SHAPES_CONFIRM, dy.SHAPES_KEYS), SHAPES_CONFIRM_BLOCK)
    assert doc.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md's distributedness-yardstick blocks differ from distributedness_yardstick.py --fill's output"
    )


CONFIRM = HERE / "baselines_digits_confirm.jsonl"
CONFIRM_BLOCK = "distributedness-yardstick-confirm"
SHAPES_CONFIRM = HERE / "compare-shapes-confirm" / "trials.jsonl"
SHAPES_CONFIRM_BLOCK = "distributedness-yardstick-shapes-confirm"


def test_the_confirmatory_rows_are_new_nets_of_one_commit(dy) -> None:
    """The confirmatory run is what results.md fixed before it ran: seeds 16-31, never among
    the rerun's, of the 8 conditions kept there, every row of one clean commit."""
    rows = dy.read_jsonl(CONFIRM, dy.DIGITS_KEYS)
    first = dy.read_jsonl(dy.DIGITS, dy.DIGITS_KEYS)
    conditions = ["plain", "spread", "gate", "outside", "icnn@0.00001", "plain+sync", "spread+sync", "outside+sync"]
    assert sorted((r["condition"], r["seed"]) for r in rows) == sorted((c, s) for c in conditions for s in range(16, 32))
    assert not {r["seed"] for r in rows} & {r["seed"] for r in first}
    assert len({r["provenance"]["commit"] for r in rows}) == 1 and not any(r["provenance"]["dirty"] for r in rows)


def test_the_confirmatory_shapes_trials_are_a_fresh_comparison_of_one_commit(dy) -> None:
    """What results.md fixed before the launch: compare-shapes with seeds 100-101 (the first
    comparison ran 0-2), 4 arms x 2 repeats x 24 trials, every trial of one clean commit and
    with the composite with D_m."""
    rows = dy.read_jsonl(SHAPES_CONFIRM, dy.SHAPES_KEYS)
    first = dy.read_jsonl(dy.SHAPES, dy.SHAPES_KEYS)
    assert len(rows) == 4 * 2 * 24 and {r["params"]["seed"] for r in rows} == {100, 101}
    assert not {r["params"]["seed"] for r in rows} & {r["params"]["seed"] for r in first}
    assert len({r["commit"] for r in rows}) == 1 and not any(r["dirty"] for r in rows)
    assert all(dy.D_M in r["metrics"] for r in rows if r["status"] == "ok")
