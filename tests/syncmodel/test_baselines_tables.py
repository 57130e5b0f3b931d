"""docs/experiments/baselines.py's tables (issue 24): paired, Holm-corrected verdicts with
intervals, "equivalent" only by TOST, provenance marks, and the legacy composite renamed."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from syncmodel import stats

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "experiments" / "baselines.py"


@pytest.fixture(scope="module")
def baselines():  # noqa: ANN201 (a module loaded from a path)
    spec = importlib.util.spec_from_file_location("baselines", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SEED_EFFECT = [0.0, 0.004, -0.003, 0.002, -0.001]  # shared by both conditions of a seed: paired


def _row(condition: str, seed: int, acc: float, commit: str | None = "abc") -> dict:
    row = {"dataset": "digits", "condition": condition, "seed": seed, "epochs": 15, "n_train": None,
           "status": "ok", "test_acc": acc, "report": {"accuracy": acc, "interpretability": 0.1 + acc / 10}}  # fmt: skip
    if commit is not None:
        row["provenance"] = {"commit": commit, "dirty": False, "torch": "x", "device": "cpu", "data": "d"}
    return row


def _rows(offset: float, commit: str | None = "abc") -> list[dict]:
    """plain, and spread+sync = plain + offset + a small per-seed wobble (sd about 0.0003)."""
    wobble = [0.0002, -0.0003, 0.0004, -0.0001, -0.0002]
    out = []
    for seed, effect in enumerate(SEED_EFFECT):
        out.append(_row("plain", seed, 0.95 + effect, commit))
        out.append(_row("spread+sync", seed, 0.95 + effect + offset + wobble[seed], commit))
    return out


def _verdict_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| spread+sync vs plain |"))


def test_a_paired_difference_is_called_and_an_equal_one_is_equivalent(baselines, tmp_path: Path) -> None:
    better = _verdict_line(baselines.headline(_rows(0.02)))
    # the interval printed is the paired one: the per-seed effect both conditions share
    # (sd 0.003) cancels, leaving mean 0.020 and a half-width of a few 1e-4
    assert "| better +0.020 [" in better
    same = _verdict_line(baselines.headline(_rows(0.0)))
    assert "equivalent" in same.split("|")[4]  # accuracy, margin 0.01 (stats.MARGINS)
    # with an interval wider than the margin nothing can be said: inconclusive, never "tie"
    noisy = _rows(0.0)
    for r, d in zip(noisy[1::2], [0.03, -0.03, 0.02, -0.02, 0.0]):
        r["report"]["accuracy"] += d
    cell = _verdict_line(baselines.headline(noisy)).split("|")[4]
    assert "inconclusive" in cell and "tie" not in baselines.headline(noisy)


def test_power_table_states_the_seeds_needed(baselines) -> None:
    text = baselines.headline(_rows(0.0))
    power = [line for line in text.splitlines() if line.startswith("| spread+sync vs plain |")][1]
    sd = stats.paired_difference(
        [r["report"]["accuracy"] for r in _rows(0.0)[1::2]], [r["report"]["accuracy"] for r in _rows(0.0)[::2]]
    ).sd
    need = (stats.seeds_for_power(sd, 0.01, kind="tost"), stats.seeds_for_power(sd, 0.01, kind="difference"))
    assert power.split("|")[2].strip() == f"{need[0]} / {need[1]}"


def test_rows_of_another_commit_are_marked_or_refused(baselines, tmp_path: Path) -> None:
    rows = _rows(0.0) + [_row("plain", 5, 0.9, commit="other")]
    text = baselines.tables(rows)
    assert "| plain † | 6 |" in text and "1 of 11 runs come from a commit other than abc" in text
    refused = baselines.tables(rows, same_commit=True)
    assert "†" not in refused and "| plain | 5 |" in refused
    out = tmp_path / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert baselines.read(out) == rows  # what run() appends is what the tables read


def test_legacy_rows_keep_their_composite_apart(baselines) -> None:
    legacy = baselines.upgrade(_row("plain", 0, 0.95, commit=None))
    assert "interpretability" not in legacy["report"]
    assert legacy["report"]["interpretability_v1"] == pytest.approx(0.195)
    current = _row("plain", 0, 0.95)
    assert baselines.upgrade(current) is current
    assert baselines.commit_of(legacy) == baselines.LEGACY


def test_holm_family_is_the_table(baselines) -> None:
    # one clear difference among many null contrasts keeps its verdict only if it survives
    # Holm over every contrast of the table: m = contrasts x metrics
    rows = _rows(0.02)
    text = baselines.headline(rows)
    m = int(text.split("Holm over the ")[1].split(" ")[0])
    pair = stats.paired_difference(
        [r["report"]["accuracy"] for r in rows[1::2]], [r["report"]["accuracy"] for r in rows[::2]]
    )
    assert m >= 2 and (pair.p * m < stats.ALPHA) == ("better" in _verdict_line(text).split("|")[4])
    assert not math.isnan(pair.p)


def _coupled(composite_shift: float, purity_shift: float = 0.0, acc_shift: float = 0.0) -> list[dict]:
    """plain and plain+sync over 8 seeds: purity and corrected consistency equal up to a tiny
    per-seed wobble (well inside their margins, 0.02 and 0.05), unless `purity_shift`; the
    composite of plain+sync = plain's + `composite_shift` (per-seed sd of the composite 0.01)."""
    wobble = [0.001, -0.002, 0.0015, -0.001, 0.0005, -0.0005, 0.002, -0.0015]
    composite = [0.20, 0.21, 0.19, 0.205, 0.195, 0.215, 0.185, 0.20]
    out = []
    for seed, (w, c) in enumerate(zip(wobble, composite)):
        for cond, dc, dp in (("plain", 0.0, 0.0), ("plain+sync", composite_shift, purity_shift)):
            row = _row(cond, seed, 0.95 + (w if cond == "plain" else -w) + acc_shift * (cond != "plain"))
            row["report"].update({"class_purity": 0.6 + dp + (w if dc or dp else 0.0),
                                  "consistency_ari_corrected": 0.9 + (w if cond == "plain" else -w),
                                  "interpretability": c + dc + w})  # fmt: skip
            out.append(row)
    return out


def _check_line(baselines, rows: list[dict]) -> list[str]:
    line = next(x for x in baselines.coupling_check(rows).splitlines() if x.startswith("| plain |"))
    return [cell.strip() for cell in line.split("|")[1:-1]]


def test_coupling_check_1c(baselines) -> None:
    # primaries shown unchanged (TOST) and the composite unmoved: met
    same = _check_line(baselines, _coupled(0.0))
    assert all(same[i].startswith("equivalent") for i in (2, 3, 4)) and same[-1] == "met"  # accuracy, 2 primaries
    spread = float(same[-2])
    assert 0.008 < spread < 0.012  # the pooled seed-to-seed sd of the composite (0.0099)
    # the same primaries, the composite lower by twice its spread: the check fails
    fell = _check_line(baselines, _coupled(-2 * spread))
    assert fell[-1].startswith("**NOT MET**")
    # ... but by half its spread only: met (a fall inside the seed spread is allowed)
    assert _check_line(baselines, _coupled(-0.5 * spread))[-1] == "met"
    # a primary that is better keeps the pair in the check (a fortiori), one that is worse
    # takes it out, one that is inconclusive leaves it undecided
    better = _check_line(baselines, _coupled(-2 * spread, purity_shift=0.1))
    assert better[3].startswith("better") and better[-1].startswith("**NOT MET**")
    worse = _check_line(baselines, _coupled(-2 * spread, purity_shift=-0.1))
    assert worse[3].startswith("worse") and worse[-1] == "n/a (a primary worse); **fell beyond its spread**"
    # accuracy lost: the composite's accuracy factor may fall with it, so no check
    lost = _check_line(baselines, _coupled(-2 * spread, acc_shift=-0.05))
    assert lost[2].startswith("worse") and lost[-1] == "n/a (accuracy worse); **fell beyond its spread**"
    unsure = _coupled(-2 * spread)
    for r, d in zip(unsure[1::2], [0.04, -0.04, 0.03, -0.03, 0.02, -0.02, 0.01, -0.01]):
        r["report"]["class_purity"] += d
    assert _check_line(baselines, unsure)[-1] == "n/a (a primary inconclusive); **fell beyond its spread**"
    # legacy rows (first composite only) give no check, not a wrong one
    legacy = [baselines.upgrade({k: v for k, v in r.items() if k != "provenance"}) for r in _coupled(0.0)]
    assert "No group" in baselines.coupling_check(legacy)


def test_ranking_check_1b_over_the_kept_conditions(baselines) -> None:
    # four conditions that keep accuracy, ranked alike by the composite and both primaries,
    # and one that loses it (left out, whatever its values)
    rows = []
    for rank, cond in enumerate(["plain", "spread", "gate", "outside", "icnn"]):
        for seed in range(3):
            row = _row(cond, seed, 0.95 if cond != "icnn" else 0.5)
            v = 0.1 * (4 - rank) + 0.001 * seed
            row["report"].update({"interpretability": v, "class_purity": v, "consistency_ari_corrected": v})
            rows.append(row)
    text = baselines.ranking_check(rows)
    assert "plain, spread, gate, outside." in text  # icnn's mean accuracy misses plain's − 0.01
    assert "| condition means | 4 | 1.000 (n 4" in text and "| every net of them | 12 |" in text
    assert text.count("as written **pass**, strictly (τ ≥ 0.5 with every primary) **pass**") == 2
    # the composite reversed: the check fails, and the ranks say why
    for r in rows:
        r["report"]["interpretability"] = 1 - r["report"]["interpretability"]
    text = baselines.ranking_check(rows)
    assert "| condition means | 4 | -1.000 (n 4" in text and "**FAIL**" in text
    # an undefined consistency (a degenerate partition) ranks as 0, as composite_ranking.py does
    rows[0]["report"]["consistency_ari_corrected"] = None
    assert "No group" not in baselines.ranking_check(rows)
