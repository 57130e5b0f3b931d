"""Issue 24 item 1c, a diagnostic: where does the coupling's fall in `module_distributedness` come from?

`module_distributedness` (D_u, docs/design.md §1.4) is the participation ratio of the layer's
functional units over K - 1: each Sync module once, and each unsynchronised live neuron as a
unit of its own. The coupling draws neurons into modules, so it changes two things at once:
how distinct the modules are, and how many free neurons are left to count. This script trains
a base condition and its `+sync` twin on digits (the settings of `baselines.py`), evaluates
each net with `syncmodel.evaluate`, and splits D_u's participation ratio into the modules'
alone and the free neurons' alone, with the same responses and modules the evaluation used
(checked: the script's D_u must equal the report's).

    PYTHONPATH=$PWD .venv/bin/python docs/experiments/unit_distributedness.py --seeds 0 1 2 3 4 5 6 7
    PYTHONPATH=$PWD .venv/bin/python docs/experiments/unit_distributedness.py --table   # the table of docs/results.md §2b

Writes docs/experiments/unit_distributedness.json (one row per net, with provenance) and
prints the paired table (+sync − base, mean and 95% t-interval over the seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

from syncmodel import stats as st
from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.evaluation import evaluate
from syncmodel.metrics.distributed import (
    effective_neurons,
    module_distributedness,
    module_responses,
    unit_responses,
)
from syncmodel.provenance import provenance
from syncmodel.training import train

HERE = Path(__file__).resolve().parent
OUT = HERE / "unit_distributedness.json"
EPOCHS = 15  # baselines.py's digits setting
PAIRS = {
    "plain": {},
    "outside": {"lambda_focus": 0.1, "focus_kind": "outside"},
}
COUPLING = {"coupling_K": 0.1}
KEYS = ("interpretability", "module_distributedness", "units", "free_neurons", "modules", "pr_units",
        "pr_modules_only", "pr_free_only")  # fmt: skip


def responses_of(model: torch.nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """(N, C) spatial means of `layer`'s maps, as `syncmodel.evaluate` computes its responses."""
    maps: list[torch.Tensor] = []
    hook = dict(model.named_modules())[layer].register_forward_hook(
        lambda _m, _i, out: maps.append(out.detach().float().cpu())
    )
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], 256):
                model(images[start : start + 256])
    finally:
        hook.remove()
    return torch.cat(maps).mean((2, 3))


def measure(condition: str, overrides: dict, seed: int, data, base: TrainConfig) -> dict:  # noqa: ANN001
    cfg = TrainConfig.from_dict({**base.to_dict(), **overrides, "seed": seed})
    res = train(cfg, data=data)
    report, neurons = evaluate(res.model, data, layers=res.layers, seed=seed, max_images=2000)
    layer = res.layers[0]
    table = neurons.filter(neurons.column("layer").to_numpy(zero_copy_only=False) == layer) if "layer" in neurons.column_names else neurons
    modules = torch.tensor(table.column("module").to_pylist())
    responses = responses_of(res.model, data.test.images[: int(report["images"])], layer)
    d_u = module_distributedness(responses, modules, 10)
    if not math.isclose(d_u, report["module_distributedness"], rel_tol=1e-9, abs_tol=1e-12):
        raise SystemExit(f"{condition} seed {seed}: D_u {d_u} is not the report's {report['module_distributedness']}")
    units = unit_responses(responses, modules)
    mods = module_responses(responses, modules)
    free = units.shape[1] - mods.shape[1]  # unit_responses: the free live neurons, then the modules
    return {"condition": condition, "seed": seed, "interpretability": report["interpretability"],
            "module_distributedness": d_u, "units": units.shape[1], "free_neurons": free,
            "modules": mods.shape[1], "pr_units": effective_neurons(units),
            "pr_modules_only": effective_neurons(mods),
            "pr_free_only": effective_neurons(units[:, :free]),
            "provenance": provenance("digits", "cpu")}  # fmt: skip


def table(rows: list[dict]) -> str:
    """Per pair and quantity: the base's mean, the +sync mean and the paired difference."""
    lines = ["| pair | seeds | quantity | base | +sync | Δ [95% CI] |", "|---|---|---|---|---|---|"]
    for base in PAIRS:
        a = {r["seed"]: r for r in rows if r["condition"] == f"{base}+sync"}
        b = {r["seed"]: r for r in rows if r["condition"] == base}
        seeds = sorted(set(a) & set(b))
        if len(seeds) < 2:
            continue
        for k in KEYS:
            pair = st.paired_difference([a[s][k] for s in seeds], [b[s][k] for s in seeds])
            mean_b = sum(b[s][k] for s in seeds) / len(seeds)
            lines.append(f"| {base}+sync − {base} | {len(seeds)} | {k} | {mean_b:.3g} | {mean_b + pair.mean:.3g} | "
                         f"{pair.mean:+.3g} [{pair.low:+.3g}, {pair.high:+.3g}] |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="only print the table from --out")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    if not args.table:
        base = TrainConfig(dataset="digits", epochs=EPOCHS, device="cpu")
        data = load_data(base)
        done = {(r["condition"], r["seed"]) for r in rows}
        for seed in args.seeds:
            for name, overrides in PAIRS.items():
                for cond, o in ((name, overrides), (f"{name}+sync", {**overrides, **COUPLING})):
                    if (cond, seed) not in done:
                        rows.append(measure(cond, o, seed, data, base))
                        tmp = args.out.with_name(f".{args.out.name}.tmp")  # a crash keeps the old file
                        tmp.write_text(json.dumps(rows, indent=1) + "\n")
                        os.replace(tmp, args.out)
                        print(f"{cond} seed={seed} D_u={rows[-1]['module_distributedness']:.3f}", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
