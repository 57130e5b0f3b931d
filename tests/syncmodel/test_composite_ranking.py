"""docs/experiments/composite_ranking.py (issue 24 item 1b): Kendall's tau-b between the
composite's ranking and each primary's with the directions aligned, the acceptance check line
by line, the kept-accuracy filter, the arms' best settings, and the section it writes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "composite_ranking.py"


@pytest.fixture(scope="module")
def cr():  # noqa: ANN201 (a module loaded from a path)
    spec = importlib.util.spec_from_file_location("composite_ranking", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["composite_ranking"] = module
    spec.loader.exec_module(module)
    return module


def _row(arm: str, k: int, tid: str, val: float, comp: float, inst: float, purity: float, cons: float,
         start: str = "2026-01-01T00:00:00", status: str = "ok") -> dict:  # fmt: skip
    metrics = {"val_acc": val, "interpretability": comp, "location_instability": inst, "class_purity": purity,
               "consistency_ari_corrected": cons}  # fmt: skip
    return {"arm": arm, "repeat": k, "trial_id": tid, "status": status, "start_time": start, "metrics": metrics}


def _conds(cr, rows: list[dict]) -> list:
    return [cr.condition(r, list(cr.PRIMARIES)) for r in rows]


def test_a_lower_is_better_metric_is_negated_before_tau(cr) -> None:
    # the composite rises exactly as location instability falls: the same ranking, tau +1
    rows = [_row("a", 0, f"t{i}", 0.99, 0.1 * i, 0.2 - 0.01 * i, 0.5, 0.5) for i in range(6)]
    assert cr.kendall(_conds(cr, rows), cr.COMPOSITE, "location_instability").tau == pytest.approx(1.0)


def test_tau_is_scipys_tau_b_with_ties(cr) -> None:
    comp = [0.1, 0.2, 0.2, 0.4, 0.5, 0.5, 0.7]
    purity = [0.3, 0.1, 0.3, 0.6, 0.6, 0.2, 0.9]
    rows = [_row("a", 0, f"t{i}", 0.99, c, 0.1, p, 0.5) for i, (c, p) in enumerate(zip(comp, purity))]
    t = cr.kendall(_conds(cr, rows), cr.COMPOSITE, "class_purity")
    expected = stats.kendalltau(comp, purity, variant="b")
    assert (t.n, t.tau, t.p) == (7, expected.statistic, expected.pvalue)


def test_undefined_consistency_counts_as_zero_and_undefined_instability_is_left_out(cr) -> None:
    rows = [_row("a", 0, f"t{i}", 0.99, 0.1 * i, 0.1 - 0.01 * i, 0.5, 0.1 * i) for i in range(1, 6)]
    rows.append(_row("a", 0, "t0", 0.99, 0.0, math.nan, 0.5, math.nan))  # degenerate partition, undefined LI
    conds = _conds(cr, rows)
    cons = cr.kendall(conds, cr.COMPOSITE, "consistency_ari_corrected")
    assert cons.n == 6 and cons.tau == pytest.approx(1.0)  # NaN read as 0: last, as the composite has it
    assert cr.kendall(conds, cr.COMPOSITE, "location_instability").n == 5


def test_beyond_margin_counts_only_the_pairs_the_reference_tells_apart(cr) -> None:
    # consistency's margin is 0.05: 0.96 / 0.97 / 0.98 are one value to it; 0.5 is apart
    cons = [0.96, 0.97, 0.98, 0.5]
    comp = [0.3, 0.2, 0.1, 0.05]  # reversed among the three near-equal, right against 0.5
    rows = [_row("a", 0, f"t{i}", 0.99, c, 0.1, 0.5, k) for i, (c, k) in enumerate(zip(comp, cons))]
    gamma, apart, total = cr.beyond_margin(_conds(cr, rows), cr.COMPOSITE, "consistency_ari_corrected")
    assert (gamma, apart, total) == (1.0, 3, 6)
    assert cr.kendall(_conds(cr, rows), cr.COMPOSITE, "consistency_ari_corrected").tau == 0.0  # τ-b: 3 noise pairs reversed
    # location instability is lower-is-better: a composite that falls as it rises disagrees
    rows = [_row("a", 0, f"t{i}", 0.99, 0.1 * i, 0.01 * i, 0.5, 0.5) for i in range(4)]
    assert cr.beyond_margin(_conds(cr, rows), cr.COMPOSITE, "location_instability")[0] == -1.0


def test_a_constant_ranking_has_no_tau(cr) -> None:
    rows = [_row("a", 0, f"t{i}", 0.99, 0.1 * i, 0.1, 0.5, 0.5) for i in range(4)]
    assert math.isnan(cr.kendall(_conds(cr, rows), cr.COMPOSITE, "class_purity").tau)


def test_kept_accuracy_is_val_acc_at_least_the_bar_of_finished_trials(cr) -> None:
    bar = cr.KEPT_VAL_ACC
    rows = [
        _row("a", 0, "at", bar, 0.1, 0.1, 0.5, 0.5),
        _row("a", 0, "below", math.nextafter(bar, 0.0), 0.1, 0.1, 0.5, 0.5),
        _row("a", 0, "failed", 1.0, 0.1, 0.1, 0.5, 0.5, status="error"),
        _row("a", 0, "no-composite", 1.0, math.nan, 0.1, 0.5, 0.5),
    ]
    assert [r["trial_id"] for r in cr.kept(rows)] == ["at"]


def test_best_setting_per_arm_and_repeat_is_the_highest_val_acc_ties_to_the_first_started(cr) -> None:
    rows = [
        _row("b", 0, "late", 0.99, 0.9, 0.1, 0.5, 0.5, start="2026-01-01T00:05:00"),
        _row("b", 0, "early", 0.99, 0.1, 0.1, 0.5, 0.5, start="2026-01-01T00:01:00"),
        _row("b", 0, "worse", 0.98, 0.5, 0.1, 0.5, 0.5, start="2026-01-01T00:00:00"),
        _row("a", 1, "only", 0.96, 0.5, 0.1, 0.5, 0.5),
        _row("a", 0, "zero", 0.97, 0.5, 0.1, 0.5, 0.5),
    ]
    assert [(r["arm"], r["repeat"], r["trial_id"]) for r in cr.best_settings(rows)] == [
        ("b", 0, "early"), ("a", 0, "zero"), ("a", 1, "only")]  # fmt: skip


def _tau(cr, a: str, b: str, v: float) -> object:
    return cr.Tau(a, b, 10, v, 0.01)


def _check(cr, with_c: dict[str, float], between: dict[tuple[str, str], float]) -> tuple[list, bool, bool]:
    return cr.acceptance({p: _tau(cr, cr.COMPOSITE, p, v) for p, v in with_c.items()},
                         {pq: _tau(cr, *pq, v) for pq, v in between.items()})  # fmt: skip


LI, PUR, CON = "location_instability", "class_purity", "consistency_ari_corrected"


def test_acceptance_met_when_every_tau_is_at_least_half(cr) -> None:
    lines, as_written, strict = _check(cr, {LI: 0.5, PUR: 0.7, CON: 0.6}, {(LI, PUR): 0.6, (LI, CON): 0.55, (PUR, CON): 0.5})
    assert as_written and strict and len(lines) == 6 and all(c.passed for c in lines)


def test_acceptance_lowers_the_bound_where_two_primaries_disagree(cr) -> None:
    # LI and purity disagree (0.2): the composite needs >= 0.2 with each, not 0.5, as written
    lines, as_written, strict = _check(cr, {LI: 0.3, PUR: 0.25, CON: 0.6}, {(LI, PUR): 0.2, (LI, CON): 0.6, (PUR, CON): 0.5})
    assert as_written and not strict
    assert any("must be ≥ 0.200: pass" in c.text for c in lines)
    # below the primaries' own agreement it fails either way
    lines, as_written, strict = _check(cr, {LI: 0.1, PUR: 0.25, CON: 0.6}, {(LI, PUR): 0.2, (LI, CON): 0.6, (PUR, CON): 0.5})
    assert not as_written and not strict
    assert [c.passed for c in lines[:3]] == [False, True, True]


def test_acceptance_takes_the_largest_disagreement_as_a_primarys_bound(cr) -> None:
    # LI disagrees with purity (0.3) and with consistency (0.1): both clauses hold only at >= 0.3
    lines, as_written, _ = _check(cr, {LI: 0.25, PUR: 0.6, CON: 0.6}, {(LI, PUR): 0.3, (LI, CON): 0.1, (PUR, CON): 0.6})
    assert not as_written and "bound 0.300" in lines[0].text and not lines[0].passed
    _, as_written, _ = _check(cr, {LI: 0.3, PUR: 0.6, CON: 0.6}, {(LI, PUR): 0.3, (LI, CON): 0.1, (PUR, CON): 0.6})
    assert as_written


def test_an_undefined_tau_fails_the_check(cr) -> None:
    lines, as_written, strict = _check(cr, {LI: math.nan, PUR: 0.7, CON: 0.6}, {(LI, PUR): 0.6, (LI, CON): 0.6, (PUR, CON): 0.6})
    assert not as_written and not strict and "undefined" in lines[0].text and not lines[0].passed


def test_ranks_share_their_mean_on_ties(cr) -> None:
    rows = [_row("a", 0, f"t{i}", 0.99, c, 0.1, 0.5, 0.5) for i, c in enumerate([0.3, 0.5, 0.5, 0.1])]
    ranks = cr.ranks(_conds(cr, rows), cr.COMPOSITE)
    assert ranks == {"a r0 t1": 1.5, "a r0 t2": 1.5, "a r0 t0": 3.0, "a r0 t3": 4.0}


def _rows(n: int = 8) -> list[dict]:
    out = []
    for i in range(n):
        for arm in ("plain", "sinn"):
            shift = 0.05 if arm == "sinn" else 0.0
            out.append(_row(arm, i % 2, f"{arm[0]}{i}", 0.96 + i / 400, 0.2 + i / 50 + shift, 0.1 - i / 200,
                            0.3 + ((i * 3) % 8) / 40, 0.5 + i / 40))  # fmt: skip
    out.append(_row("plain", 0, "collapsed", 0.4, 0.01, 0.15, 0.1, 0.0))
    return out


def test_section_says_what_was_measured_and_each_pair_passes_or_fails(cr) -> None:
    rows = _rows()
    text = cr.section(rows, top=5)
    conds = [cr.condition(r, list(cr.PRIMARIES)) for r in cr.kept(rows)]
    assert f"{len(conds)} of the {len(rows)} finished trials keep accuracy" in text
    for p in cr.PRIMARIES:
        t = cr.kendall(conds, cr.COMPOSITE, p)
        assert f"composite vs {cr.SHORT[p]}: τ {t.tau:.3f} (n {t.n})" in text
    assert text.count("### The check:") == 2 and "SMOKE" not in text
    table = text[text.index("### Rankings side by side"):text.index("### The arms")]
    assert table.count("\n| ") == 1 + 5  # header + top 5
    assert "| plain | 8 | 2 |" in text and "| sinn | 8 | 2 |" in text


def test_a_primary_not_recorded_per_trial_is_said_and_left_out(cr) -> None:
    rows = _rows()
    for r in rows:
        del r["metrics"]["class_purity"]
    text = cr.section(rows)
    assert "`class_purity`" in text and "not recorded in any of the" in text
    assert "composite vs held-out purity" not in text


def test_fill_places_the_section_and_the_pointer_once(cr, tmp_path: Path) -> None:
    results, design = tmp_path / "results.md", tmp_path / "design.md"
    results.write_text("# Results\n\n## 1. A\n\nx\n\n## 2. B\n\ny\n")
    design.write_text("### 1.4 Metrics\n\nm\n\n### 1.5 Inference\n\ns\n")
    for _ in range(2):
        cr.fill(results, design, _rows())
    text, pointer = results.read_text(), design.read_text()
    assert text.count("<!-- composite-ranking (generated") == 1 and text.count("<!-- /composite-ranking -->") == 1
    assert text.index("## 1. A") < text.index("## The composite against") < text.index("## 2. B")
    assert pointer.count("<!-- composite-ranking-pointer") == 1
    assert pointer.index("### 1.4") < pointer.index("docs/results.md") < pointer.index("### 1.5")


def test_fill_refuses_a_document_without_its_anchor(cr, tmp_path: Path) -> None:
    results, design = tmp_path / "results.md", tmp_path / "design.md"
    results.write_text("# Results\n\nno sections\n")
    design.write_text("### 1.5 Inference\n")
    with pytest.raises(cr.Refusal, match="## 2. "):
        cr.fill(results, design, _rows())
    assert results.read_text() == "# Results\n\nno sections\n"


def test_main_refuses_a_missing_or_broken_trials_file(cr, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cr.main(["--data", str(tmp_path)]) == 2
    (tmp_path / "trials.jsonl").write_text(json.dumps(_rows()[0]) + "\n{not json\n")
    assert cr.main(["--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "trials.jsonl" in err[0] and "trials.jsonl:2" in err[1]
