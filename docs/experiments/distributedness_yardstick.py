"""Issue 24 item 1b, a sensitivity analysis: how much of the composite's disagreement with the
primary metrics comes from its distributedness factor's yardstick.

The composite is `I = A * D_m * (neuron term + module term) / 2` with
`D_m = min(1, PR / (K - 1))`, PR the effective number of distinct Sync modules and K the
number of classes (syncmodel/metrics/score.py, docs/design.md §1.4). Because D_m is a factor,
the composite with another yardstick L is exact arithmetic on a row's recorded values:

    I_L = I * min(1, PR / L) / D_m,   PR / L = D_m * (K - 1) / L   (D_m > 0; I_L = 0 if D_m = 0)

which holds for every L <= K - 1 (where D_m is 1, PR >= K - 1 >= L and the factor stays 1).
`L = K - 1` is v2 as recorded; `L = 2` keeps the factor only below two distinct units
(collapse onto one module, clones, a constant layer); `L = 1` leaves only "no module at all"
at 0 among these nets, i.e. the composite without a distributedness factor. For each L the
script runs item 1b's check (composite_ranking.acceptance) on the two comparisons whose rows
carry v2 (`interpretability` before commit ca4f194, `interpretability_v2` after): the digits rerun at commit 872009a (docs/experiments/baselines_digits_rerun_872009a.jsonl;
conditions at kept accuracy as baselines.py --table has them, condition means and every net)
and the searched shapes comparison re-measured
(docs/experiments/compare-shapes/trials_remeasured.jsonl; every kept trial and the arms' best
settings, as composite_ranking.py).

It is exploratory: it reads the same rows the check is judged on, so a yardstick picked from it
would be tuned on its own test. It says where the disagreement comes from; it does not change
the composite (docs/results.md §2b says what would have to be run to do that).

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/distributedness_yardstick.py          # print
    PYTHONPATH=$PWD .venv/bin/python docs/experiments/distributedness_yardstick.py --fill   # + docs
    ... distributedness_yardstick.py --digits ROWS --only digits --fill --block NAME          # other rows
    ... distributedness_yardstick.py --shapes TRIALS --only shapes --fill --block NAME        # (trials.jsonl)

Bad input: one line naming the file, exit 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DIGITS = HERE / "baselines_digits_rerun_872009a.jsonl"  # the digits rerun scored with v2
SHAPES = HERE / "compare-shapes" / "trials_remeasured.jsonl"
SCRIPT = "distributedness_yardstick.py"
BLOCK = "distributedness-yardstick"
COMPOSITE = "interpretability"
V2 = "interpretability_v2"  # what COMPOSITE was while the composite had D_m as a factor
D_M = "between_module_distributedness"
# the yardsticks: the current one, the least that is not collapse (two distinct units), and
# none. Not chosen blind: a first look at these rows had also tried 1.5 and 2.5 (shapes; they
# fall between their neighbours here)
LEVELS: tuple[tuple[str, Callable[[int], float]], ...] = (
    ("K − 1 (v2)", lambda k: float(k - 1)),
    ("2", lambda k: 2.0),
    ("1 (no factor)", lambda k: 1.0),
)


def _sibling(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ranking = _sibling("composite_ranking")
baselines = _sibling("baselines")
Refusal = ranking.Refusal


def _finite(v: Any) -> bool:
    return math.isfinite(ranking.number(v))


def rescaled(composite: float, d_m: float, num_classes: int, level: float) -> float:
    """The composite with yardstick `level` in place of K - 1 (module docstring), from the
    recorded composite and D_m. `level` must lie in [1, K - 1]."""
    if not 1.0 <= level <= max(num_classes - 1, 1):
        raise ValueError(f"yardstick {level} outside [1, K - 1 = {num_classes - 1}]")
    if not (_finite(composite) and _finite(d_m)):
        return math.nan
    if d_m <= 0.0:
        return 0.0
    return composite * min(1.0, d_m * (num_classes - 1) / level) / d_m


def num_classes(values: dict, where: str) -> int:
    """K from the per-class accuracies a row carries (`accuracy_class_<k>`, one per class)."""
    k = sum(1 for name in values if name.startswith("accuracy_class_"))
    if k < 2:
        raise Refusal(f"{where}: no per-class accuracies to read the number of classes from")
    return k


Transform = Callable[[dict, str], dict]  # a row's metrics (and where it is) -> the metrics ranked


def _with_level(values: dict, level: Callable[[int], float], where: str) -> dict:
    """A copy of a row's metrics with the composite at yardstick `level` (undefined composites
    or D_m kept as they are: the checks leave them out as before). A row without D_m scored the
    composite of before it (D between neurons or over units), which no rescaling turns into
    this one: refused."""
    if V2 in values:  # a row of the gated composite: v2, the one with D_m, under its own name
        values = {**values, COMPOSITE: values[V2]}
    if COMPOSITE in values and D_M not in values:
        raise Refusal(f"{where}: no {D_M}: its composite is not the one with D_m (re-measure it first)")
    if not (_finite(values.get(COMPOSITE)) and _finite(values.get(D_M))):
        return values
    k = num_classes(values, where)
    return {**values, COMPOSITE: rescaled(values[COMPOSITE], values[D_M], k, level(k))}


# what each file's rows must carry for the checks to read them
DIGITS_KEYS = ("dataset", "condition", "seed", "epochs", "status")
SHAPES_KEYS = ranking.TRIAL_KEYS


def read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """The rows of `path`, each a JSON object with `keys` (composite_ranking.read_rows), and at
    least one."""
    rows = ranking.read_rows(path, keys)
    if not rows:
        raise Refusal(f"{path}: no rows")
    return rows


def at_level(level: Callable[[int], float]) -> Transform:
    """The composite at yardstick `level`."""
    return lambda values, where: _with_level(values, level, where)


def alone(key: str) -> Transform:
    """One ingredient ranked in the composite's place (for reference: what drives its order)."""
    return lambda values, where: {**values, COMPOSITE: values.get(key, math.nan)}


def digits_sets(rows: list[dict], transform: Transform, source: str = DIGITS.name) -> list[tuple[str, list]]:
    """The digits rows' two sets of conditions (baselines.ranking_conditions), ranked by
    `transform`'s composite; `source` names their file in a refusal."""
    rows, _ = baselines.select(rows)
    if len({baselines._group(r) for r in rows}) != 1:
        raise Refusal(f"{source}: rows of more than one group (dataset, epochs, n_train)")
    moved = [{**r, "report": transform(r["report"], f"{source} {r['condition']} seed {r['seed']}")}
             if "report" in r else r for r in rows]  # fmt: skip
    found = baselines.ranking_conditions(moved)
    if found is None:
        raise Refusal(f"{source}: no plain runs with the composite and a primary metric")
    _, _, means, nets = found
    return [("condition means", means), ("every net", nets)]


def shapes_sets(rows: list[dict], transform: Transform, source: str = SHAPES.name) -> list[tuple[str, list]]:
    """The shapes comparison's two sets (composite_ranking: every kept trial, the arms' best
    settings), ranked by `transform`'s composite. Which trials are kept does not depend on it
    (validation accuracy; the recorded composite defined). `source` names their file in a
    refusal."""
    keep_ids = {id(r) for r in ranking.kept(rows)}
    moved = [{**r, "metrics": transform(r["metrics"], f"{source} trial {r.get('trial_id')}")}
             if r.get("status") == "ok" else r for r in rows]  # fmt: skip
    keep = [m for m, r in zip(moved, rows, strict=True) if id(r) in keep_ids]
    if not keep:
        raise Refusal(f"{source}: no trial at kept accuracy")
    counts = ranking.recorded(moved)
    primaries = [p for p in ranking.PRIMARIES if counts[p]]
    return [("every kept trial", [ranking.condition(r, primaries) for r in keep]),
            ("the arms' best settings", [ranking.condition(r, primaries) for r in ranking.best_settings(keep)])]  # fmt: skip


# what drives the composite's order, ranked in its place (rows marked "for reference")
REFERENCES = (("D_m alone", D_M), ("position information alone", "position_information"))


def table(title: str, sets_by: Callable[[Transform], list[tuple[str, list]]]) -> list[str]:
    """One comparison: per yardstick and set of conditions, τ-b of the composite with each
    primary and item 1b's two readings; then, for reference, the same τ for D_m and for
    position information (the neuron term's focus) ranked alone; then the primaries' τ between
    themselves per set (the bounds of the check as written; nothing here changes them)."""
    lines: list[str] = []
    between_of: dict[str, str] = {}
    runs = [(name, at_level(level), True) for name, level in LEVELS]
    runs += [(f"for reference: {name}", alone(key), False) for name, key in REFERENCES]
    for name, transform, is_composite in runs:
        for set_name, conds in sets_by(transform):
            primaries = [k for k in conds[0].values if k != COMPOSITE]
            with_composite, between = ranking.taus(conds, primaries)
            _, as_written, strict = ranking.acceptance(with_composite, between)
            if not lines:
                head = ["composite with yardstick L", "conditions", "n", *(f"τ with {ranking.SHORT[p]}" for p in primaries),
                        "1b as written", "1b strictly"]  # fmt: skip
                lines = [f"#### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            between_of.setdefault(set_name, ", ".join(f"{ranking.SHORT[p]} vs {ranking.SHORT[q]} {ranking._t(t.tau)}"
                                                      for (p, q), t in between.items()))  # fmt: skip
            verdicts = f"{ranking._word(as_written)} | {ranking._word(strict)}" if is_composite else "– | –"
            lines.append(f"| {name} | {set_name} | {len(conds)} | "
                         + " | ".join(ranking._t(with_composite[p].tau) for p in primaries) + f" | {verdicts} |")  # fmt: skip
    lines += ["", "The primaries between themselves: " + "; ".join(f"{k}: {v}" for k, v in between_of.items()) + ".", ""]
    return lines


def digits_title(rows: list[dict], source: str = DIGITS.name) -> str:
    """What the digits rows are: epochs, seeds, commit(s), K."""
    rows, _ = baselines.select(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    commits = sorted({baselines.commit_of(r)[:7] for r in rows})
    k = {num_classes(r["report"], source) for r in rows if "report" in r}
    epochs = sorted({r["epochs"] for r in rows})
    return (f"digits, {', '.join(map(str, epochs))} epochs, seeds {seeds[0]}–{seeds[-1]} ({len(seeds)} seeds), "
            f"commit {', '.join(commits)} (K = {', '.join(map(str, sorted(k)))})")  # fmt: skip


def shapes_title(rows: list[dict], source: str = SHAPES.name) -> str:
    """What the shapes trials are: the comparison, trials and repeats, the commit whose
    composite they carry (the re-measurement's where they were re-measured), K."""
    ok = [r for r in rows if r.get("status") == "ok"]
    names = sorted({str(r.get("study", "")).removesuffix(f"-{r['arm']}-r{r['repeat']}") for r in rows})
    remeasured = any("remeasured" in r for r in ok)
    commits = sorted({str((r.get("remeasured") or {}).get("commit") or r.get("commit") or "none")[:7] for r in ok})
    k = {num_classes(r["metrics"], source) for r in ok}
    return (f"shapes, {', '.join(names)}{' re-measured' if remeasured else ''}: {len(rows)} trials, "
            f"{len({(r['arm'], r['repeat']) for r in rows})} arm × repeat studies, composite of commit "
            f"{', '.join(commits)} (K = {', '.join(map(str, sorted(k)))})")  # fmt: skip


def section(digits_rows: list[dict] | None, shapes_rows: list[dict] | None,
            sources: tuple[str, str] = (DIGITS.name, SHAPES.name)) -> str:  # fmt: skip
    """The tables of the rows given: both comparisons (the exploratory analysis), or one of
    them (a confirmatory run's). `sources`: the digits and shapes files' names, for refusals."""
    digits_source, shapes_source = sources
    ident = f"`docs/experiments/{SCRIPT}`: `I_L = I · min(1, PR/L) / D_m`, exact because D_m is a factor"
    if digits_rows is None or shapes_rows is None:
        intro = (f"The same check on the rows given ({ident}). `L = K − 1` is v2, the composite these rows were "
                 "scored with; `L = 1` is v2 without its distributedness factor.")  # fmt: skip
    else:
        intro = ("Item 1b's check with the composite's distributedness yardstick varied, on the rows of the two "
                 f"comparisons that carry v2, the composite with D_m ({ident}). `L = K − 1` is v2 as recorded and "
                 "reproduces the blocks above; `L = 1` is v2 without its distributedness factor. Exploratory: "
                 "read on the data the check is judged on, not used to pick L.")  # fmt: skip
    out = [intro, ""]
    if digits_rows is not None:
        out += table(digits_title(digits_rows, digits_source), lambda t: digits_sets(digits_rows, t, digits_source))
    if shapes_rows is not None:
        out += table(shapes_title(shapes_rows, shapes_source), lambda t: shapes_sets(shapes_rows, t, shapes_source))
    return "\n".join(out)


def fill(results: Path, digits_rows: list[dict] | None, shapes_rows: list[dict] | None, block: str = BLOCK,
         sources: tuple[str, str] = (DIGITS.name, SHAPES.name)) -> None:  # fmt: skip
    """docs/results.md's block `block` (placed where it is; it must be there)."""
    ranking.fill_block(results, block, section(digits_rows, shapes_rows, sources), SCRIPT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", type=Path, default=DIGITS, help="the digits rows (default: %(default)s)")
    p.add_argument("--shapes", type=Path, default=SHAPES, help="shapes trials, compare_shapes.py's trials.jsonl form (default: %(default)s)")
    p.add_argument("--only", choices=("digits", "shapes"), help="one comparison's rows alone (a confirmatory run's)")
    p.add_argument("--fill", action="store_true", help="write the section into --results")
    p.add_argument("--block", default=BLOCK, help="with --fill: the block to write (default: %(default)s)")
    p.add_argument("--results", type=Path, default=ranking.RESULTS)
    args = p.parse_args(argv)
    try:
        digits_rows = None if args.only == "shapes" else read_jsonl(args.digits, DIGITS_KEYS)
        shapes_rows = None if args.only == "digits" else read_jsonl(args.shapes, SHAPES_KEYS)
        sources = (str(args.digits), str(args.shapes))
        body = section(digits_rows, shapes_rows, sources)
        if args.fill:
            ranking.fill_block(args.results, args.block, body, SCRIPT)
        print(body)
    except Refusal as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
