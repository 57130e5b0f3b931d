"""Issue 24 item 1b: forms of the composite screened against the primary metrics, from the
ingredients every row records, and the check of the gated composite on fresh nets.

Every composite form here is `A * guard * mix(neuron term, module ingredients)`, and every
ingredient but one is recorded in each row (syncmodel.evaluate's report): accuracy, the
modules' coverage, corrected consistency Ĉ, held-out purity, the largest module's share,
D_m (`between_module_distributedness`) and the effective number of functional units. The
one that is not, the mean neuron score `n = mean_c s_c`, follows exactly from the v2
composite the row records:

    I_v2 = A * D_m * (n + coverage * Ĉ * purity * (1 - largest)) / 2
    =>  n = 2 * I_v2 / (A * D_m) - coverage * Ĉ * purity * (1 - largest)      (A * D_m > 0)

with `A = (accuracy - chance) / (1 - chance)` and `chance` the most frequent class's share
of the images the row's evaluation measured, which this script recomputes from the data
(syncmodel.data.load_data of the run's settings: the digits test split; the shapes trial's
evaluated split, the first `images` of it). PR, the effective number of distinct modules,
is `D_m * (K - 1)` where D_m < 1 (where D_m = 1, PR >= K - 1 and every yardstick up to
K - 1 is met). Where A * D_m = 0 the v2 composite is 0 and n is not recoverable: such a
row's candidates are undefined and left out of the pairs (the count is shown). For rows
that record the gated composite themselves (scored after commit ca4f194), the recomputed
value is checked against the recorded one.

Two uses:
- **the screen** (`--screen`): the forms tried on the rows of the four committed data
  sets (the digits rerun and the digits confirmatory seeds, the searched shapes comparison
  re-measured and the confirmatory one). Exploratory: read on the data the check was then
  judged on; the form it led to was fixed and judged on fresh nets (docs/results.md §2b).
- **the fresh nets** (`--digits ROWS` / `--shapes TRIALS`): item 1b's check, as
  composite_ranking.acceptance states it, for the composite the rows record and, beside it,
  v2 on the same nets.

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/composite_candidates.py --screen [--fill]
    ... composite_candidates.py --digits ROWS --fill --block NAME
    ... composite_candidates.py --shapes TRIALS --fill --block NAME

Bad input: one line naming the file, exit 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = "composite_candidates.py"
SCREEN_BLOCK = "composite-candidates"
SCREEN_DIGITS = (HERE / "baselines_digits_rerun_872009a.jsonl", HERE / "baselines_digits_confirm.jsonl")
SCREEN_SHAPES = (HERE / "compare-shapes" / "trials_remeasured.jsonl", HERE / "compare-shapes-confirm" / "trials.jsonl")
GATED_FROM = "ca4f194"  # the commit whose composite is the gated one (rows after it record both)


def _sibling(name: str) -> Any:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


yardstick = _sibling("distributedness_yardstick")
ranking = yardstick.ranking
Refusal = ranking.Refusal
COMPOSITE, V2 = yardstick.COMPOSITE, yardstick.V2  # the row keys of the composite and of v2


# --------------------------------------------------------------------------- ingredients


@dataclass(frozen=True)
class Ingredients:
    accuracy_gain: float  # A
    neuron: float  # n = mean_c s_c (NaN: not recoverable)
    coverage: float
    consistency: float  # Ĉ
    purity: float
    largest: float
    modules_pr: float  # PR of the modules alone (inf: at least K - 1, D_m capped)
    units: float  # effective_units
    v2: float  # the v2 composite as recorded


def _unit(v: float) -> float:
    """As the composite reads a value: NaN 0, else clipped to [0, 1] (infinity: 1)."""
    return 0.0 if math.isnan(v) else min(max(v, 0.0), 1.0)


def _v2_key(values: dict) -> str:
    """Where a row records v2: under its own name since the gated composite, else as the composite."""
    return V2 if V2 in values else COMPOSITE


def readable(values: dict, where: str) -> int:
    """The number of classes K, refused (one line naming the row) unless the row records what
    `ingredients` reads."""
    recorded_v2 = _v2_key(values)
    if recorded_v2 == COMPOSITE and yardstick.D_M not in values:
        raise Refusal(f"{where}: no {yardstick.D_M}: its composite is older than v2 (re-measure it first)")
    missing = [k for k in ("accuracy", "coverage", "largest_module", "effective_units", recorded_v2) if k not in values]
    if missing:
        raise Refusal(f"{where}: no {', '.join(missing)}")
    return yardstick.num_classes(values, where)


def ingredients(values: dict, chance: float, where: str) -> Ingredients:
    """A row's recorded ingredients and its back-computed neuron term (module docstring)."""
    return _ingredients(values, chance, readable(values, where))


def _ingredients(values: dict, chance: float, k: int) -> Ingredients:
    """`ingredients` of a row `readable` has passed (K its number of classes)."""
    v = ranking.number
    a = _unit((v(values["accuracy"]) - chance) / (1.0 - chance))
    d_m = _unit(v(values[yardstick.D_M]))
    cov, con, pur = (_unit(ranking.value(values, key)) for key in ("coverage", "consistency_ari_corrected", "class_purity"))
    big = _unit(v(values["largest_module"]))
    i2 = v(values[_v2_key(values)])
    module_v2 = cov * con * pur * (1.0 - big)
    neuron = 2.0 * i2 / (a * d_m) - module_v2 if a * d_m > 0 and math.isfinite(i2) else math.nan
    pr = math.inf if d_m >= 1.0 else d_m * (k - 1)
    return Ingredients(a, neuron, cov, con, pur, big, pr, v(values["effective_units"]), i2)


def gated(x: Ingredients) -> float:
    """The gated composite (syncmodel.metrics.score.interpretability) from the ingredients,
    with syncmodel's own gates."""
    g, h = _gates(x)
    return x.accuracy_gain * g * 0.5 * (_unit(x.neuron) + x.coverage * x.consistency * x.purity * h)


def _gates(x: Ingredients) -> tuple[float, float]:
    from syncmodel.metrics.score import collapse_gates

    return collapse_gates(x.units, x.largest)


def _yard(x: Ingredients, level: float) -> float:
    return min(1.0, x.modules_pr / level)


def _geo(*terms: float) -> float:
    return math.prod(max(t, 0.0) for t in terms) ** (1.0 / len(terms))


# The forms screened, in the order they were tried (name, form). Every one keeps A as a factor;
# the "module term" is coverage * Ĉ * purity times the size factor named.
Form = Callable[[Ingredients], float]
SIZE_V2 = lambda x: 1.0 - x.largest  # noqa: E731
SIZE_GATE = lambda x: _gates(x)[1]  # noqa: E731
FORMS: tuple[tuple[str, Form], ...] = (
    ("v2: D_m (yardstick K − 1), 1 − largest", lambda x: x.v2),
    ("yardstick 2, 1 − largest", lambda x: x.accuracy_gain * _yard(x, 2) * 0.5 * (x.neuron + x.coverage * x.consistency * x.purity * SIZE_V2(x))),
    ("yardstick 2, geometric mean of the two terms", lambda x: x.accuracy_gain * _yard(x, 2) * _geo(x.neuron, x.coverage * x.consistency * x.purity * SIZE_V2(x))),
    ("yardstick 2, no size factor", lambda x: x.accuracy_gain * _yard(x, 2) * 0.5 * (x.neuron + x.coverage * x.consistency * x.purity)),
    ("yardstick 2, no size factor nor coverage", lambda x: x.accuracy_gain * _yard(x, 2) * 0.5 * (x.neuron + x.consistency * x.purity)),
    ("yardstick 2, mean of n, Ĉ, purity", lambda x: x.accuracy_gain * _yard(x, 2) * (x.neuron + x.consistency + x.purity) / 3),
    ("yardstick 2, geometric mean of n, Ĉ, purity", lambda x: x.accuracy_gain * _yard(x, 2) * _geo(x.neuron, x.consistency, x.purity)),
    ("yardstick 2, product of the two terms", lambda x: x.accuracy_gain * _yard(x, 2) * max(x.neuron, 0.0) * x.coverage * x.consistency * x.purity * SIZE_V2(x)),
    ("yardstick 2, size gate", lambda x: x.accuracy_gain * _yard(x, 2) * 0.5 * (x.neuron + x.coverage * x.consistency * x.purity * SIZE_GATE(x))),
    ("yardstick 3, no size factor", lambda x: x.accuracy_gain * _yard(x, 3) * 0.5 * (x.neuron + x.coverage * x.consistency * x.purity)),
    ("yardstick 2, size gate, geometric mean of n, Ĉ, purity and it", lambda x: x.accuracy_gain * _yard(x, 2) * _geo(x.neuron, x.consistency, x.purity, SIZE_GATE(x))),
    ("module gate min(1, PR − 1), size gate", lambda x: x.accuracy_gain * _unit(x.modules_pr - 1.0) * 0.5 * (x.neuron + x.coverage * x.consistency * x.purity * SIZE_GATE(x))),
    ("the gated composite: unit gate, size gate", gated),
)  # fmt: skip


# --------------------------------------------------------------------------- chance


class Chances:
    """The chance level of the images each row's evaluation measured (most frequent class's
    share), from the data, one bundle at a time."""

    def __init__(self) -> None:
        self.memo: dict[tuple, float] = {}
        self.cache: dict = {}

    def _labels_chance(self, labels: Any, images: int, where: str) -> float:
        import torch

        if images < 1 or images > len(labels):
            raise Refusal(f"{where}: {images} images evaluated, its split has {len(labels)}")
        return float(torch.bincount(labels[:images].long()).max()) / images

    def digits(self, row: dict, where: str) -> float:
        from syncmodel.config import TrainConfig
        from syncmodel.data import load_data

        images = int(ranking.number(row["report"].get("images")))
        key = ("baselines", row["dataset"], row.get("n_train"), images)
        if key not in self.memo:
            data = load_data(TrainConfig(dataset=row["dataset"], n_train=row.get("n_train")))
            self.memo[key] = self._labels_chance(data.test.labels, images, where)
        return self.memo[key]

    def shapes(self, row: dict, where: str) -> float:
        from pipeline.trial import DATA_FIELDS
        from syncmodel.config import TrainConfig

        heldout = yardstick._sibling("compare_shapes_heldout")
        config = TrainConfig(**{k: v for k, v in row.get("params", {}).items() if k in TrainConfig.field_names()})
        split = (row.get("remeasured") or {}).get("split", "val")  # a trial evaluates val unless re-measured on test
        images = int(ranking.number(row["metrics"].get("images")))
        key = ("trial", split, images, *(None if (f == "seed" and split == "test") else getattr(config, f) for f in DATA_FIELDS))
        if key not in self.memo:
            bundle, _, _ = heldout.data_for(config, split, self.cache)
            self.memo[key] = self._labels_chance(getattr(bundle, split).labels, images, where)
        return self.memo[key]


# --------------------------------------------------------------------------- the checks


@dataclass
class Scored:
    transform: Callable[[dict, str], dict]
    undefined: int = 0  # rows whose neuron term could not be recovered
    worst: float = 0.0  # largest |recomputed - recorded| of the gated composite


def scorer(form: Form, chance_of: Callable[[dict, str], float], recorded: bool = False) -> Scored:
    """A Transform (distributedness_yardstick's) that puts `form`'s value in the composite's
    place; with `recorded`, the row's own composite (checked against the recomputed one)."""
    def transform(values: dict, where: str) -> dict:
        if not math.isfinite(ranking.number(values.get(COMPOSITE))):
            return values  # an undefined composite stays undefined (the checks leave it out)
        if recorded and V2 not in values:
            raise Refusal(f"{where}: no {V2}: scored before the gated composite (commit {GATED_FROM})")
        k = readable(values, where)  # before the data for the chance level is built
        x = _ingredients(values, chance_of(values, where), k)
        if recorded:
            if math.isfinite(x.neuron):
                out.worst = max(out.worst, abs(gated(x) - ranking.number(values[COMPOSITE])))
            return values
        if not math.isfinite(x.neuron) and form is not FORMS[0][1]:
            out.undefined += 1
            return {**values, COMPOSITE: math.nan}
        return {**values, COMPOSITE: form(x)}

    out = Scored(transform)  # the transform reads and writes out's counters when it runs
    return out


def _chance_for(kind: str, rows: list[dict], chances: Chances) -> Callable[[dict, str], float]:
    """The chance of a row's metrics (the transforms see the metrics only): by identity."""
    key = "report" if kind == "digits" else "metrics"
    by_metrics = {id(r[key]): r for r in rows if key in r}

    def chance(values: dict, where: str) -> float:
        row = by_metrics.get(id(values))
        if row is None:
            raise Refusal(f"{where}: no row for these metrics")
        return chances.digits(row, where) if kind == "digits" else chances.shapes(row, where)

    return chance


def _sets(kind: str, rows: list[dict], transform: Callable, source: str) -> list[tuple[str, list]]:
    if kind == "digits":
        return yardstick.digits_sets(rows, transform, source)
    return yardstick.shapes_sets(rows, transform, source)


def _title(kind: str, rows: list[dict], source: str) -> str:
    return yardstick.digits_title(rows, source) if kind == "digits" else yardstick.shapes_title(rows, source)


def screen_table(kind: str, rows: list[dict], source: str, chances: Chances,
                 forms: tuple[tuple[str, Form], ...] = FORMS) -> list[str]:  # fmt: skip
    """One data set: per form, for each set of conditions, τ-b with each primary and item 1b
    as written / strictly."""
    chance = _chance_for(kind, rows, chances)
    lines: list[str] = []
    between_of: dict[str, str] = {}
    undefined = 0
    for name, form in forms:
        scored = scorer(form, chance)
        cells = []
        sets = _sets(kind, rows, scored.transform, source)
        for set_name, conds in sets:
            primaries = [k for k in conds[0].values if k != COMPOSITE]
            with_c, between = ranking.taus(conds, primaries)
            _, as_written, strict = ranking.acceptance(with_c, between)
            between_of.setdefault(set_name, ", ".join(f"{ranking.SHORT[p]} vs {ranking.SHORT[q]} {ranking._t(t.tau)}"
                                                      for (p, q), t in between.items()))  # fmt: skip
            cells.append(" / ".join(ranking._t(with_c[p].tau) for p in primaries) + f" | {ranking._word(as_written)} | {ranking._word(strict)}")
        if not lines:
            head = ["form"]
            for set_name, conds in sets:
                primaries = [ranking.SHORT[k] for k in conds[0].values if k != COMPOSITE]
                head += [f"{set_name} (n {len(conds)}): τ with {' / '.join(primaries)}", "as written", "strictly"]
            lines = [f"#### {_title(kind, rows, source)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        undefined = max(undefined, scored.undefined)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The primaries between themselves: " + "; ".join(f"{k}: {v}" for k, v in between_of.items()) + "."]
    if undefined:
        lines += ["", f"{undefined} row(s) with A · D_m = 0: their neuron term is not recoverable, so every form but v2 leaves them out."]
    return [*lines, ""]


def fresh_section(kind: str, rows: list[dict], source: str, chances: Chances) -> str:
    """Fresh nets that record the gated composite: item 1b's check for it, line by line, at
    both sets of conditions; v2 on the same nets beside it; the recomputation check."""
    chance = _chance_for(kind, rows, chances)
    check = scorer(gated, chance, recorded=True)
    out = [f"#### {_title(kind, rows, source)}", ""]
    summary: list[str] = []
    details: list[str] = []
    side: list[str] = []
    for name, transform in (("the composite (gated), as recorded", check.transform),
                            ("v2, as recorded on the same nets", _v2_transform)):  # fmt: skip
        sets = _sets(kind, rows, transform, source)
        if transform is check.transform:  # the smaller set's rankings, side by side
            small_name, small = min(sets, key=lambda named: len(named[1]))
            primaries = [k for k in small[0].values if k != COMPOSITE]
            side = [f"Rankings side by side, {small_name} (rank 1 is best; the composite is the gated one):", "",
                    *ranking.side_by_side(small, primaries, len(small)), ""]  # fmt: skip
        for set_name, conds in sets:
            primaries = [k for k in conds[0].values if k != COMPOSITE]
            with_c, between = ranking.taus(conds, primaries)
            lines, as_written, strict = ranking.acceptance(with_c, between)
            if not summary:
                head = ["composite", "conditions", "n", *("τ with " + ranking.SHORT[p] for p in primaries),
                        "1b as written", "1b strictly"]  # fmt: skip
                summary = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            summary.append(f"| {name} | {set_name} | {len(conds)} | " + " | ".join(ranking._t(with_c[p].tau) for p in primaries)
                           + f" | {ranking._word(as_written)} | {ranking._word(strict)} |")  # fmt: skip
            if transform is check.transform:
                details += [f"The check for the gated composite over {set_name} (n {len(conds)}): as written "
                            f"**{ranking._word(as_written)}**, strictly **{ranking._word(strict)}**.", ""]  # fmt: skip
                details += [f"- {c.text}" for c in lines] + [""]
    out += summary + [""] + details + side
    out.append(f"Recomputed from the recorded ingredients (this script's arithmetic, as the screen uses it), the gated "
               f"composite differs from the recorded one by at most {check.worst:.1e} over these rows.")  # fmt: skip
    return "\n".join(out) + "\n"


def _v2_transform(values: dict, where: str) -> dict:
    if V2 not in values:
        raise Refusal(f"{where}: no {V2}: scored before the gated composite (commit {GATED_FROM})")
    return {**values, COMPOSITE: values[V2]}


def screen(chances: Chances) -> str:
    intro = (f"Forms of the composite screened on the rows of the four committed data sets (`docs/experiments/{SCRIPT} "
             "--screen`): each form recomputed from the ingredients the rows record, the neuron term from the recorded v2 "
             "composite (exact; the script's docstring), A from the chance level of the evaluated images. Exploratory: "
             "read on the data the check was judged on; τ with each primary separated by \" / \" in the order of the "
             "column head.")  # fmt: skip
    out = [intro, ""]
    for path in SCREEN_DIGITS:
        out += screen_table("digits", yardstick.read_jsonl(path, yardstick.DIGITS_KEYS), path.name, chances)
    for path in SCREEN_SHAPES:
        out += screen_table("shapes", yardstick.read_jsonl(path, yardstick.SHAPES_KEYS), str(path.relative_to(HERE)), chances)
    return "\n".join(out)


def fill(results: Path, block: str, body: str) -> None:
    ranking.fill_block(results, block, body, SCRIPT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--screen", action="store_true", help="the forms on the four committed data sets")
    what.add_argument("--digits", type=Path, help="fresh digits rows (baselines.py's JSON lines) that record the gated composite")
    what.add_argument("--shapes", type=Path, help="fresh shapes trials (compare_shapes.py's trials.jsonl) that record it")
    p.add_argument("--fill", action="store_true", help="write the section into --results")
    p.add_argument("--block", help=f"with --fill: the block to write (default for --screen: {SCREEN_BLOCK})")
    p.add_argument("--results", type=Path, default=ranking.RESULTS)
    args = p.parse_args(argv)
    try:
        if args.fill and not args.screen and not args.block:
            raise Refusal("--fill with --digits or --shapes needs --block NAME")
        chances = Chances()
        if args.screen:
            body, block = screen(chances), args.block or SCREEN_BLOCK
        else:
            kind, path = ("digits", args.digits) if args.digits else ("shapes", args.shapes)
            rows = yardstick.read_jsonl(path, yardstick.DIGITS_KEYS if kind == "digits" else yardstick.SHAPES_KEYS)
            body, block = fresh_section(kind, rows, str(path), chances), args.block
        if args.fill:
            fill(args.results, block, body)
        print(body)
    except Refusal as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
