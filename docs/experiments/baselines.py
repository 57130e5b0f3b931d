"""Issue 11: the comparison — plain, ICNN, focus (spread) and the part-tying focus kinds, each
with and without the coupling, on the rigid-part shapes and on digits; 5 seeds; mean and 95%
t-interval of every report key of `syncmodel.evaluate`. Issue 24: verdicts from paired
differences (same seeds), Holm-corrected per table, "equivalent" only by TOST at the margins of
`syncmodel.stats.MARGINS`, seeds needed for 80% power stated; every new row carries its
provenance (commit, torch, device, data generator) and rows of another commit are marked
(or, with --same-commit, left out).

Resumable: one JSON line per finished run is appended to --out; runs already there are skipped
(several processes may share one --out: each claims a run before training it). The tables go
to --table-out (markdown) and stdout.

    PYTHONPATH=. .venv/bin/python docs/experiments/baselines.py                 # the whole thing
    PYTHONPATH=. .venv/bin/python docs/experiments/baselines.py --quick         # 1 seed, 1 epoch, small
    PYTHONPATH=. .venv/bin/python docs/experiments/baselines.py --table         # tables only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
from scipy import stats

from syncmodel import stats as st
from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.evaluation import evaluate
from syncmodel.provenance import provenance
from syncmodel.training import train

HERE = Path(__file__).parent
OUT = HERE / "baselines.jsonl"
TABLE = HERE / "baselines.md"
EPOCHS = {"shapes": 10, "shapes-hard": 10, "digits": 15}
DATASETS = ["shapes", "digits"]
SEEDS = [0, 1, 2, 3, 4]
COUPLING = {"coupling_K": 0.1}
# condition -> TrainConfig overrides; each focus condition also runs with the coupling ("+sync").
FOCUS = {
    "plain": {},
    "icnn": {"lambda_focus": 0.1, "focus_kind": "icnn"},
    "spread": {"lambda_focus": 0.1, "focus_kind": "spread"},
    "gate": {"lambda_focus": 0.1, "focus_kind": "gate"},  # part-tying reading (a)
    "outside": {"lambda_focus": 0.1, "focus_kind": "outside"},  # part-tying reading (b)
    # ICNN's loss is a sum over map pixels, not a normalised loss like the others: at 0.1 it
    # collapsed digits nets (accuracy 0.26, one module); ten and a hundred times weaker as checks
    "icnn@0.01": {"lambda_focus": 0.01, "focus_kind": "icnn"},
    "icnn@0.001": {"lambda_focus": 0.001, "focus_kind": "icnn"},
    # on shapes even 0.001 cost accuracy (0.84 against plain's 0.998): weaker still, to find
    # a strength at which ICNN keeps accuracy within a point of plain
    "icnn@0.0001": {"lambda_focus": 0.0001, "focus_kind": "icnn"},
    "icnn@0.00001": {"lambda_focus": 0.00001, "focus_kind": "icnn"},
}
CONDITIONS = {**FOCUS, **{f"{k}+sync": {**v, **COUPLING} for k, v in FOCUS.items()}}
QUICK = {"epochs": 1, "n_train": 400, "max_images": 300}


def _key(row: dict) -> tuple:
    return (row["dataset"], row["condition"], row["seed"], row["epochs"], row.get("n_train"))


def read(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def claim(out: Path, key: tuple) -> bool:
    """Whether this process may run `key`: not done in `out`, not claimed by a live process."""
    if key in {_key(r) for r in read(out)}:
        return False
    claims = out.parent / (out.name + ".claims")
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / "_".join(map(str, key)).replace("/", "-")
    if path.exists():
        try:
            os.kill(int(path.read_text()), 0)
            return False  # a live process runs it
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # its process died: take it over
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def release(out: Path, key: tuple) -> None:
    (out.parent / (out.name + ".claims") / "_".join(map(str, key)).replace("/", "-")).unlink(missing_ok=True)


def _plain(value: object) -> object:
    """JSON-able report values: numbers (NaN → None), strings, bools."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def run(dataset: str, conditions: list[str], seeds: list[int], epochs: int, out: Path,
        n_train: int | None, max_images: int, device: str = "cpu", stop_at: float | None = None) -> None:  # fmt: skip
    base = TrainConfig(dataset=dataset, epochs=epochs, device=device, n_train=n_train)
    data = None
    for seed in seeds:
        for cond in conditions:
            if stop_at is not None and time.time() >= stop_at:
                return  # out of time: the runs not started stay for a later (resumed) call
            key = (dataset, cond, seed, epochs, n_train)
            if not claim(out, key):
                continue
            try:
                data = data or load_data(base)
                cfg = TrainConfig.from_dict({**base.to_dict(), **CONDITIONS[cond], "seed": seed})
                t = time.perf_counter()
                res = train(cfg, data=data)
                row = {"dataset": dataset, "condition": cond, "seed": seed, "epochs": epochs,
                       "n_train": n_train, "status": res.status, "train_seconds": time.perf_counter() - t,
                       "device": _device_name(cfg.device),
                       "provenance": provenance(dataset, _device_name(cfg.device)),
                       "overrides": CONDITIONS[cond], "layers": res.layers,
                       "test_acc": res.metrics.get("test_acc")}  # fmt: skip
                if res.status != "diverged":
                    report, neurons = evaluate(res.model, data, layers=res.layers, seed=seed, max_images=max_images)
                    row["report"] = {k: _plain(v) for k, v in report.items()}
                    if "detector_iou" in neurons.column_names:
                        # per-unit best part IoU: the detector count is re-thresholded at the
                        # threshold calibrated on the plain nets (`calibrated_detectors`)
                        row["unit_iou"] = neurons.column("detector_iou").to_pylist()
                        row["unit_part"] = neurons.column("detector_part").to_pylist()
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            finally:
                release(out, key)
            acc = row.get("report", {}).get("accuracy")
            print(f"{dataset} {cond:<14} seed={seed} {res.status} acc={acc} ({row['train_seconds']:.0f}s)", flush=True)


def _device_name(device: str) -> str:
    """The card's name for CUDA runs (figures are reported with it), else "cpu"."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    return "cpu"


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (NaN half-width for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    sem = statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(stats.t.ppf(0.975, len(values) - 1)) * sem


def _cell(values: list) -> str:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and v is not None and math.isfinite(v)]  # fmt: skip
    if not nums:
        return "–"
    mean, half = interval(nums)
    digits = 4 if abs(mean) < 0.1 else 3
    return f"{mean:.{digits}f}" if math.isnan(half) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def _group(row: dict) -> tuple:
    return (row["dataset"], row["epochs"], row.get("n_train") or 0)


def _title(group: tuple) -> str:
    dataset, epochs, n_train = group
    return f"{dataset}, {epochs} epochs" + (f", n_train {n_train}" if n_train else "")


# the headline columns of docs/results.md (issue 11's list), with the direction that is better
HEADLINE = {
    "accuracy": "higher", "location_instability": "lower", "location_instability_heldout": "lower",
    "location_instability_part_heldout": "lower", "detectors_calibrated": "higher",
    "unique_parts_calibrated": "higher", "detector_iou": "higher", "selectivity": "higher",
    "mis_above_chance": "higher", "modules": None, "consistency_ari": "higher",
    "consistency_ari_corrected": "higher", "class_purity": "higher", "largest_module": None,
    "distributedness": "higher", "module_distributedness": "higher", "between_module_distributedness": "higher",
    "ablation_own_drop_beyond_random": "higher", "spread": "lower", "interpretability": "higher",
    "interpretability_v2": "higher", "interpretability_v1": "higher",
}  # fmt: skip
CALIBRATION_QUANTILE = 0.99
# (candidate, reference) pairs of the verdict table: SINN = a focus kind with the coupling; each
# ICNN strength is also compared with itself plus the coupling
ICNN_REFS = ("icnn", "icnn@0.01", "icnn@0.001", "icnn@0.0001", "icnn@0.00001")
VERDICTS = [
    (c, ref) for ref in ICNN_REFS for c in ("spread+sync", "gate+sync", "outside+sync", f"{ref}+sync")
] + [(c, "plain") for c in ("spread+sync", "gate+sync", "outside+sync", *ICNN_REFS, "icnn+sync")]
# issue 24 (c): what switching the coupling on does to each base condition
VERDICTS += [(f"{k}+sync", k) for k in ("plain", "spread", "gate", "outside") if (f"{k}+sync", k) not in VERDICTS]


def calibrated_threshold(rows: list[dict], quantile: float = CALIBRATION_QUANTILE) -> float | None:
    """The part-detector IoU threshold calibrated on the plain nets of `rows` (one group).

    Issue 11: not Network Dissection's 0.04 (tuned for Broden's segmentations, where almost
    every unit of ours passes it), but the `quantile` of the per-unit best part IoU over all
    units of the plain condition's runs (all its seeds pooled): a unit counts as a detector
    when it is more part-aligned than 99% of a normally trained net's units. None without
    plain runs that carry per-unit IoUs.
    """
    ious = [v for r in rows if r["condition"] == "plain" for v in r.get("unit_iou") or [] if v is not None]
    return float(torch.tensor(ious).quantile(quantile)) if ious else None


def _values(rows: list[dict], key: str, threshold: float | None) -> list[float]:
    out = []
    for r in rows:
        if key in ("detectors_calibrated", "unique_parts_calibrated"):
            if threshold is None or not r.get("unit_iou"):
                continue
            hits = [i for i, v in enumerate(r["unit_iou"]) if v is not None and v > threshold]
            out.append(len(hits) if key == "detectors_calibrated" else len({r["unit_part"][i] for i in hits}))
            continue
        v = r.get("report", {}).get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


LEGACY = "none"  # the commit of a row written before rows carried provenance


def upgrade(row: dict) -> dict:
    """A row as the current code names its keys. Rows without provenance were written before
    issue 24, when `interpretability` was the first composite: there it is renamed
    `interpretability_v1`, so the two composites are never mixed in one column."""
    if "provenance" in row or "interpretability" not in row.get("report", {}):
        return row
    report = dict(row["report"])
    report.setdefault("interpretability_v1", report.pop("interpretability"))
    return {**row, "report": report}


def commit_of(row: dict) -> str:
    return (row.get("provenance") or {}).get("commit") or LEGACY


def reference_commit(rows: list[dict]) -> str:
    """The commit most rows carry (rows without provenance count as LEGACY)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[commit_of(r)] = counts.get(commit_of(r), 0) + 1
    return max(sorted(counts), key=counts.get) if counts else LEGACY


def _by_seed(rows: list[dict], key: str, threshold: float | None) -> dict[int, float]:
    return {r["seed"]: v[0] for r in rows if (v := _values([r], key, threshold))}


def contrast(rows_a: list[dict], rows_b: list[dict], key: str, threshold: float | None) -> tuple[st.Paired, float]:
    """Paired difference a - b of `key` over the seeds both conditions have (one group), and
    its TOST p at the metric's margin (NaN without a margin)."""
    a, b = _by_seed(rows_a, key, threshold), _by_seed(rows_b, key, threshold)
    seeds = sorted(set(a) & set(b))
    pair = st.paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    margin = st.MARGINS.get(key)
    p_eq = st.tost([a[s] - b[s] for s in seeds], margin) if margin is not None else math.nan
    return pair, p_eq


def _num(x: float) -> str:
    return f"{x:+.2g}" if abs(x) < 0.01 and x != 0 else f"{x:+.3f}"


def headline(rows: list[dict], commit: str | None = None) -> str:
    """Per group: the HEADLINE columns (mean ± 95% t half-width over seeds), then a verdict
    per (candidate, reference) pair and column from the paired difference over the seeds
    both have: "better" / "worse" where the paired t-test's p, Holm-corrected over the
    table (every pair and column: one family), is < 0.05; else "equivalent" where the TOST at
    the column's margin (`syncmodel.stats.MARGINS`), Holm-corrected over the same family, is
    < 0.05; else "inconclusive" — each with the mean difference and its 95% interval. Then
    the seeds each contrast needs for 80% power at its margin, from the observed sd of its
    paired differences. Rows from a commit other than `commit` (default: the one most rows
    carry) are marked †."""
    parts = []
    commit = commit or reference_commit(rows)
    for group in sorted({_group(r) for r in rows}):
        rs = [r for r in rows if _group(r) == group and r["status"] != "diverged"]
        thr = calibrated_threshold(rs)
        keys = [k for k in HEADLINE if _values(rs, k, thr)]
        foreign = {r["condition"] for r in rs if commit_of(r) != commit}
        mark = {c: (c + " †" if c in foreign else c) for c in CONDITIONS}
        lines = [f"### {_title(group)}", ""]
        if thr is not None:
            lines += [f"Part-detector IoU threshold calibrated on plain: {thr:.4f} "
                      f"({CALIBRATION_QUANTILE:.0%} of the plain nets' unit IoUs).", ""]  # fmt: skip
        lines += ["| condition | seeds | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 2)]
        by_cond, stats_ = {}, {}
        for cond in CONDITIONS:
            cr = [r for r in rs if r["condition"] == cond]
            if not cr:
                continue
            by_cond[cond] = cr
            stats_[cond] = {k: _values(cr, k, thr) for k in keys}
            lines.append(f"| {mark[cond]} | {len(cr)} | " + " | ".join(_cell(stats_[cond][k]) for k in keys) + " |")
        if foreign:
            n_foreign = sum(commit_of(r) != commit for r in rs)
            lines += ["", f"† {n_foreign} of {len(rs)} runs come from a commit other than {commit[:12]} "
                          "(or carry no provenance): their code may differ."]  # fmt: skip
        plain_acc = statistics.fmean(stats_["plain"]["accuracy"]) if "plain" in stats_ else None
        pairs = [(a, b) for a, b in VERDICTS if a in stats_ and b in stats_]
        if pairs:
            vkeys = [k for k in keys if HEADLINE[k]]
            results = {(a, b, k): contrast(by_cond[a], by_cond[b], k, thr) for a, b in pairs for k in vkeys}
            cells = list(results)
            p_diff, _ = st.holm([results[c][0].p for c in cells])
            p_eq, _ = st.holm([results[c][1] for c in cells])
            adjusted = {c: (p_diff[i], p_eq[i]) for i, c in enumerate(cells)}
            lines += ["", f"Verdicts: candidate − reference, paired by seed; Holm over the {len(cells)} "
                      "contrasts of this table; equivalence by TOST at the margins of docs/design.md §1.5.", "",
                      "| candidate vs reference | seeds | acc within 1 pt of plain | " + " | ".join(vkeys) + " |",
                      "|" + "---|" * (len(vkeys) + 3)]  # fmt: skip
            power_lines = ["", "Seeds for 80% power at the margin (TOST / difference), from the observed sd of "
                           "the paired differences:", "",
                           "| candidate vs reference | " + " | ".join(vkeys) + " |", "|" + "---|" * (len(vkeys) + 1)]  # fmt: skip
            for a, b in pairs:
                acc_a = statistics.fmean(stats_[a]["accuracy"])
                kept = "–" if plain_acc is None else ("yes" if acc_a >= plain_acc - 0.01 else "NO")
                row_cells, power_cells = [], []
                n = 0
                for k in vkeys:
                    pair, _ = results[(a, b, k)]
                    n = max(n, pair.n)
                    word = st.verdict(pair.mean, *adjusted[(a, b, k)], HEADLINE[k])
                    row_cells.append(word if pair.n < 2 else f"{word} {_num(pair.mean)} [{_num(pair.low)}, {_num(pair.high)}]")
                    margin = st.MARGINS.get(k)
                    if margin is None or pair.n < 2:
                        power_cells.append("–")
                    else:
                        need = [st.seeds_for_power(pair.sd, margin, kind=kind) for kind in ("tost", "difference")]
                        power_cells.append(" / ".join(str(x) if x <= 1000 else ">1000" for x in need))
                name = f"{mark[a]} vs {mark[b]}"
                lines.append(f"| {name} | {n} | {kept} | " + " | ".join(row_cells) + " |")
                power_lines.append(f"| {name} | " + " | ".join(power_cells) + " |")
            lines += power_lines
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# issue 24's primary metrics (docs/experiments/composite_ranking.py names them): location
# instability needs part annotations, so digits has the other two only
PRIMARY = {"location_instability": "lower", "class_purity": "higher", "consistency_ari_corrected": "higher"}
COMPOSITE = "interpretability"


def _seed_sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else math.nan


def coupling_check(rows: list[dict], commit: str | None = None) -> str:
    """Issue 24 item 1c: switching the coupling on where it leaves the primary metrics unchanged
    must not lower the composite beyond its own seed-to-seed spread.

    Per group and base condition with a `+sync` twin: the paired difference (+sync − base) of
    accuracy and of each primary, with its 95% interval and verdict (`syncmodel.stats.verdict`:
    paired t-test and TOST at the metric's margin, both Holm-corrected over this table's
    cells); the composite's paired difference; and its seed-to-seed spread, the pooled
    within-condition standard deviation over seeds, sqrt((sd_base² + sd_sync²) / 2). The
    check applies where the coupling keeps accuracy (shown "equivalent" or "better": the
    composite's accuracy factor is meant to fall with accuracy, and the issue's comparisons
    are at kept accuracy) and every primary is shown unchanged ("equivalent": inside its
    margin by the TOST) or "better" — a fortiori: a score that falls where the metrics it
    summarises hold or improve is the fault the issue names. It is met where the composite's
    mean paired difference is ≥ −spread. Otherwise the row says "n/a", why, and still whether
    the composite fell beyond its spread."""
    rows, commit = select(rows, commit)
    parts = []
    for group in sorted({_group(r) for r in rows}):
        rs = [r for r in rows if _group(r) == group and r["status"] != "diverged"]
        by_cond = {c: [r for r in rs if r["condition"] == c] for c in CONDITIONS}
        keys = [k for k in PRIMARY if _values(rs, k, None)]
        pairs = [(f"{b}+sync", b) for b in FOCUS if by_cond[b] and by_cond[f"{b}+sync"]]
        if not pairs or not keys or not _values(rs, COMPOSITE, None):
            continue
        keys = ["accuracy", *keys]
        results = {(a, b, k): contrast(by_cond[a], by_cond[b], k, None) for a, b in pairs for k in keys}
        cells = list(results)
        p_diff, _ = st.holm([results[c][0].p for c in cells])
        p_eq, _ = st.holm([results[c][1] for c in cells])
        words = {c: st.verdict(results[c][0].mean, p_diff[i], p_eq[i], HEADLINE[c[2]]) for i, c in enumerate(cells)}
        lines = [f"### {_title(group)}", "",
                 f"Verdicts: +sync − base, paired by seed; Holm over the {len(cells)} cells of this table "
                 "(difference and TOST); spread = the composite's pooled seed-to-seed sd.", "",
                 "| base | seeds | " + " | ".join(keys) + f" | {COMPOSITE} Δ [95% CI] | spread | check (1c) |",
                 "|" + "---|" * (len(keys) + 5)]  # fmt: skip
        for a, b in pairs:
            comp, _ = contrast(by_cond[a], by_cond[b], COMPOSITE, None)
            sd = math.sqrt((_seed_sd(_values(by_cond[a], COMPOSITE, None)) ** 2
                            + _seed_sd(_values(by_cond[b], COMPOSITE, None)) ** 2) / 2)  # fmt: skip
            lowered = comp.mean < -sd
            fell = "**fell beyond its spread**" if lowered else "did not fall beyond its spread"
            acc, verdicts = words[(a, b, "accuracy")], [words[(a, b, k)] for k in keys[1:]]
            if acc not in ("equivalent", "better"):
                check = f"n/a (accuracy {acc}); {fell}"
            elif all(w in ("equivalent", "better") for w in verdicts):
                check = "**NOT MET**: fell beyond its spread" if lowered else "met"
            elif "worse" in verdicts or "–" in verdicts:
                check = f"n/a (a primary {'worse' if 'worse' in verdicts else 'undefined'}); {fell}"
            else:
                check = f"n/a (a primary inconclusive); {fell}"
            cells_ = [f"{words[(a, b, k)]} {_num(results[(a, b, k)][0].mean)} "
                      f"[{_num(results[(a, b, k)][0].low)}, {_num(results[(a, b, k)][0].high)}]" for k in keys]  # fmt: skip
            n = min(results[(a, b, k)][0].n for k in keys)
            lines.append(f"| {b} | {n} | " + " | ".join(cells_)
                         + f" | {_num(comp.mean)} [{_num(comp.low)}, {_num(comp.high)}] | {sd:.4f} | {check} |")  # fmt: skip
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else "No group has both a base condition and its +sync twin with the composite.\n"


def _ranking_module():  # noqa: ANN202 (a script beside this one; docs/experiments is no package)
    import importlib.util
    import sys

    if "composite_ranking" not in sys.modules:
        spec = importlib.util.spec_from_file_location("composite_ranking", HERE / "composite_ranking.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["composite_ranking"] = module  # before running it: its dataclasses look it up
        spec.loader.exec_module(module)
    return sys.modules["composite_ranking"]


def ranking_conditions(rs: list[dict]) -> tuple[list[str], float, list, list] | None:
    """One group's rows as item 1b's two sets of conditions: the conditions at kept accuracy
    (mean accuracy at least plain's mean − 0.01, the tables' "acc within 1 pt of plain"), each
    condition's mean over its seeds, and every net of those conditions (composite_ranking's
    `Condition`s, with the composite and the primaries the rows carry). None when the group has
    no plain runs, no composite or no primary. A primary's undefined value (NaN: a degenerate
    partition) counts as 0, as in composite_ranking.py."""
    cr = _ranking_module()
    rs = [r for r in rs if r["status"] != "diverged" and "report" in r]
    keys = [k for k in PRIMARY if _values(rs, k, None)]
    plain = _values([r for r in rs if r["condition"] == "plain"], "accuracy", None)
    if not keys or not plain or not _values(rs, COMPOSITE, None):
        return None
    bar = statistics.fmean(plain) - 0.01
    metrics = [COMPOSITE, *keys]

    def value(r: dict, k: str) -> float:
        return cr.value(r["report"], k)

    kept_conds = [c for c in CONDITIONS
                  if (acc := _values([r for r in rs if r["condition"] == c], "accuracy", None))
                  and statistics.fmean(acc) >= bar]  # fmt: skip
    means, nets = [], []
    for c in kept_conds:
        cr_rows = [r for r in rs if r["condition"] == c]
        vals = {k: statistics.fmean(value(r, k) for r in cr_rows) for k in metrics}
        means.append(cr.Condition(c, c, 0, c, statistics.fmean(_values(cr_rows, "accuracy", None)), vals))
        nets += [cr.Condition(f"{c} seed {r['seed']}", c, r["seed"], str(r["seed"]), value(r, "accuracy"),
                              {k: value(r, k) for k in metrics}) for r in cr_rows]  # fmt: skip
    return kept_conds, bar, means, nets


def ranking_check(rows: list[dict], commit: str | None = None) -> str:
    """Issue 24 item 1b on this comparison: Kendall's τ-b between the composite's ranking and
    each primary's (and between the primaries) over the conditions at kept accuracy
    (`ranking_conditions`), two ways: each condition's mean over its seeds, and every net of
    those conditions. The check and its two readings are composite_ranking.py's
    (`acceptance`)."""
    cr = _ranking_module()
    rows, commit = select(rows, commit)
    parts = []
    for group in sorted({_group(r) for r in rows}):
        found = ranking_conditions([r for r in rows if _group(r) == group])
        if found is None:
            continue
        kept_conds, bar, means, nets = found
        keys = [k for k in means[0].values if k != COMPOSITE]
        metrics = [COMPOSITE, *keys]
        lines = [f"### {_title(group)}", "",
                 f"Conditions at kept accuracy (mean ≥ plain's {bar + 0.01:.4f} − 0.01): {', '.join(kept_conds)}.", "",
                 *cr.tau_table([("condition means", means), ("every net of them", nets)], keys), ""]  # fmt: skip
        for title, conds in (("condition means", means), ("every net", nets)):
            checks, as_written, strict = cr.acceptance(*cr.taus(conds, keys))
            lines += [f"The check over the {title} (n {len(conds)}): as written **{cr._word(as_written)}**, "
                      f"strictly (τ ≥ {cr.TAU} with every primary) **{cr._word(strict)}**.", ""]  # fmt: skip
            lines += [f"- {c.text}" for c in checks] + [""]
        head = ["condition", *(cr.SHORT.get(k, k) for k in metrics)]
        lines += ["Condition means and their ranks (1 = best):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        rank = {k: cr.ranks(means, k) for k in metrics}
        lines += [f"| {c.label} | " + " | ".join(f"{cr._v(c.values[k])} ({cr._r(rank[k].get(c.label))})" for k in metrics) + " |"
                  for c in sorted(means, key=lambda c: rank[COMPOSITE].get(c.label, math.inf))]  # fmt: skip
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n" if parts else "No group has plain runs and the composite with a primary metric.\n"


def spread(rows: list[dict]) -> str:
    """Run-to-run spread of the final test accuracy per group and condition (issue 15's
    measure, as `seed_spread.py`): mean, std, min, 95% t-interval; target std <= 0.01 and
    min >= mean - 0.02 wherever the mean is >= 0.95."""
    lines = ["| group | condition | seeds | mean | std | min | 95% CI (t) | target |", "|---|---|---|---|---|---|---|---|"]
    for group in sorted({_group(r) for r in rows}):
        for cond in CONDITIONS:
            accs = [r["test_acc"] for r in rows if _group(r) == group and r["condition"] == cond
                    and r["status"] == "ok" and r.get("test_acc") is not None]  # fmt: skip
            if len(accs) < 2:
                continue
            mean, half = interval(accs)
            std = statistics.stdev(accs)
            target = "n/a (mean < 0.95)" if mean < 0.95 else (
                "met" if std <= 0.01 and min(accs) >= mean - 0.02 else "MISSED")  # fmt: skip
            lines.append(f"| {_title(group)} | {cond} | {len(accs)} | {mean:.4f} | {std:.4f} | {min(accs):.4f} | "
                         f"[{mean - half:.4f}, {mean + half:.4f}] | {target} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def select(rows: list[dict], commit: str | None = None, same_commit: bool = False) -> tuple[list[dict], str]:
    """Rows as the current code names them (`upgrade`) and the reference commit; with
    `same_commit` only the rows of that commit (the others are refused, not mixed in)."""
    rows = [upgrade(r) for r in rows]
    commit = commit or reference_commit(rows)
    return ([r for r in rows if commit_of(r) == commit] if same_commit else rows), commit


def tables(rows: list[dict], commit: str | None = None, same_commit: bool = False) -> str:
    """The headline tables, then one markdown table per group (dataset, epochs, n_train):
    conditions as rows, every numeric report key as a column (mean ± 95% t half-width over
    seeds); diverged runs counted apart. Rows of another commit than `commit` (default: the
    one most rows carry) are marked in the headline, or left out with `same_commit`."""
    rows, commit = select(rows, commit, same_commit)
    parts = ["## Headline\n\n" + headline(rows, commit), "## Seed spread of test accuracy\n\n" + spread(rows),
             "## Switching the coupling on (issue 24 item 1c)\n\n" + coupling_check(rows, commit),
             "## The composite's ranking against the primaries' (issue 24 item 1b)\n\n" + ranking_check(rows, commit),
             "## Every report key"]
    for group in sorted({_group(r) for r in rows}):
        rs = [r for r in rows if _group(r) == group]
        keys = sorted({k for r in rs for k, v in r.get("report", {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)})  # fmt: skip
        head = ["condition", "seeds", "diverged", *keys]
        lines = [f"### {_title(group)}", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]  # fmt: skip
        for cond in CONDITIONS:
            cr = [r for r in rs if r["condition"] == cond]
            if not cr:
                continue
            ok = [r for r in cr if r["status"] != "diverged"]
            cells = [_cell([r["report"].get(k) for r in ok]) for k in keys]
            lines.append(f"| {cond} | {len(ok)} | {len(cr) - len(ok)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


OPTIONAL_BLOCKS = ("coupling", "ranking")


def _subsections(text: str) -> str:
    return text.replace("\n### ", "\n#### ").replace("### ", "#### ", 1)


def fill(doc: Path, rows: list[dict], commit: str | None = None, same_commit: bool = False, block: str = "") -> None:
    """Rewrite the generated blocks of `doc` (docs/results.md) from `rows`: the text between
    `<!-- NAME (generated by baselines.py --table) -->` and `<!-- /NAME -->` for NAME in
    headline, spread, coupling (issue 24 item 1c) and ranking (item 1b), each prefixed
    `block-` when `block` is given (one set of rows per set of blocks: a rerun's rows beside
    the earlier ones). Unprefixed, the headline and spread blocks must be there and the others
    (`OPTIONAL_BLOCKS`) are written where they are; prefixed, each is written where it is and
    at least one must be there.
    Everything else in `doc` (the prose that reads the tables) is kept."""
    text = doc.read_text()
    rows, commit = select(rows, commit, same_commit)
    blocks = {"headline": _subsections(headline(rows, commit)), "spread": spread(rows),
              "coupling": _subsections(coupling_check(rows, commit)),
              "ranking": _subsections(ranking_check(rows, commit))}  # fmt: skip
    written = 0
    for name, body in blocks.items():
        optional = bool(block) or name in OPTIONAL_BLOCKS
        name = f"{block}-{name}" if block else name
        start, end = f"<!-- {name} (generated by baselines.py --table) -->\n", f"<!-- /{name} -->"
        i, j = text.find(start), text.find(end)
        if (i < 0 or j < i) and optional:
            continue
        if i < 0 or j < i:
            raise SystemExit(f"{doc}: no generated block {name!r} (markers {start.strip()} ... {end})")
        text = text[: i + len(start)] + body + text[j:]
        written += 1
    if not written:
        raise SystemExit(f"{doc}: no generated block {block}-headline, -spread, -coupling or -ranking")
    doc.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=DATASETS, choices=sorted(EPOCHS))
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    p.add_argument("--seeds", type=int, nargs="+", default=SEEDS)
    p.add_argument("--epochs", type=int, default=None, help="default: per data set (EPOCHS)")
    p.add_argument("--n-train", type=int, default=None,
                   help="training images (default: the data set's own; shapes 4000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N; the card is recorded per run")
    p.add_argument("--stop-at", type=float, default=None, metavar="UNIX_TIME",
                   help="start no run after this time (a bounded slot on a lent GPU); resume later")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--table-out", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 400 images: checks it runs")
    p.add_argument("--table", action="store_true", help="only write the tables from --out")
    p.add_argument("--commit", default=None,
                   help="the reference commit of the tables (default: the one most rows carry)")
    p.add_argument("--same-commit", action="store_true",
                   help="leave out rows of another commit instead of marking them")
    p.add_argument("--fill", type=Path, default=None, metavar="DOC",
                   help="also rewrite DOC's generated blocks (docs/results.md) from --out")
    p.add_argument("--block", default="", metavar="NAME",
                   help="with --fill: the blocks NAME-headline, NAME-spread, NAME-coupling instead of headline, ...")
    args = p.parse_args()
    suffix = "_quick" if args.quick else ""
    out = args.out or OUT.with_name(f"baselines{suffix}.jsonl")
    table_out = args.table_out or TABLE.with_name(f"baselines{suffix}.md")
    if not args.table:
        torch.set_num_threads(args.threads)
        seeds = args.seeds[:1] if args.quick else args.seeds
        for dataset in args.datasets:
            epochs = QUICK["epochs"] if args.quick else (args.epochs or EPOCHS[dataset])
            run(dataset, args.conditions, seeds, epochs, out,
                QUICK["n_train"] if args.quick else args.n_train, QUICK["max_images"] if args.quick else 2000,
                args.device, args.stop_at)  # fmt: skip
    text = tables(read(out), args.commit, args.same_commit)
    table_out.write_text(text)
    if args.fill:
        fill(args.fill, read(out), args.commit, args.same_commit, args.block)
    print(text)


if __name__ == "__main__":
    main()
