"""The tables of docs/benchmarks.md's "Sample efficiency" section, from the JSON files
`bench/sampler_efficiency.py --json` wrote (one per space, or one with both).

    python bench/sampler_efficiency_table.py docs/experiments/sampler_efficiency_digits.json \
        docs/experiments/sampler_efficiency_shapes.json

Per space and sampler: mean ± sd over the seeds of the hypervolume after 8, 16, 24 and 48
finished trials, the distinct table rows a 48-trial replay touched, the trials the mean curve
needs to reach random's 48-trial mean, the seeds that reach it by 16, HV(16) / random HV(48);
then every sampler's paired difference of HV(16) against the best one (same seeds, 95%
t-interval, syncmodel.stats).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from syncmodel.stats import paired_difference  # noqa: E402


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def space_table(name: str, sp: dict, budgets: list[int]) -> list[str]:
    runs = sp["runs"]
    lines = [
        f"**{name}** — table: {sp['table']['rows']} real trials ({', '.join(f'{k} {v}' for k, v in sp['table']['statuses'].items())}), "
        f"objectives {', '.join(o['metric'] + ' (' + o['mode'] + ')' for o in sp['objectives'])}, reference "
        + ", ".join(f"{k} {v:g}" for k, v in sp["reference"].items())
        + f"; {len(next(iter(runs.values())))} seeds per sampler; the study's own sampler when measured: `{sp['default']}`.",
        "",
        "| sampler | " + " | ".join(f"HV@{b}" for b in budgets) + " | rows touched (48) | trials to random's HV@48 | seeds by 16 | HV@16 / random HV@48 |",
        "|---|" + "---|" * (len(budgets) + 4),
    ]
    for label, rs in runs.items():
        hv = [_ms([r["hypervolume"][b - 1] for r in rs]) for b in budgets]
        rows = statistics.fmean(r["distinct_rows"]["48"] for r in rs)
        reach = sp.get("reach", {}).get(label, {})
        n = reach.get("trials_to_random_final_mean")
        ratio = reach.get("hv_at_by_over_random_final")
        tag = " (the study's sampler when measured)" if label == sp["default"] else ""
        lines.append(
            f"| `{label}`{tag} | " + " | ".join(hv) + f" | {rows:.1f} | {n if n is not None else '> 48'} | "
            f"{reach.get('seeds_reaching_by', '?')}/{len(rs)} | " + (f"{ratio:.3f}" if ratio is not None else "n/a") + " |"
        )
    best = max(runs, key=lambda k: statistics.fmean(r["hypervolume"][15] for r in runs[k]))
    lines += ["", f"Paired HV@16 differences against the best mean at 16 trials, `{best}` (same seeds, 95% t-interval):", ""]
    for label, rs in runs.items():
        if label == best:
            continue
        a = [r["hypervolume"][15] for r in runs[best]]
        b = [r["hypervolume"][15] for r in rs]
        d = paired_difference(a, b)
        lines.append(f"- `{best}` − `{label}`: {d.mean:+.4f} [{d.low:+.4f}, {d.high:+.4f}], p {d.p:.2g}")
    return lines


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: sampler_efficiency_table.py RESULT.json [RESULT.json ...]", file=sys.stderr)
        return 2
    out: list[str] = []
    for arg in argv:
        path = Path(arg)
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"sampler_efficiency_table: {path}: {exc}", file=sys.stderr)
            return 2
        for name, sp in result["spaces"].items():
            out += space_table(name, sp, result["budgets"]) + [""]
        out.append(f"({path.name}: {result['method']}; Optuna {result['optuna']}; {result['machine']}; replay {result['seconds']} s)")
        out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
