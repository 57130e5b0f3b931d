"""Write `regularizer_reference.pt`: the regulariser's losses and gradients on fixed inputs.

`tests/syncmodel/test_regularizer_reference.py` compares the current code against this file,
so that speed work on `syncmodel.focus`, `syncmodel.sync` and `syncmodel.regularizer` can
prove it computes the same thing. Regenerate it only when the method changes on purpose
(and say so in the commit):

    PYTHONPATH=$PWD python tests/syncmodel/regularizer_reference.py

The inputs are stored too (not re-drawn from a seed), so the comparison does not depend on
the random number generator. Cases (keys of "focus", "sync", "model"):

* focus: every stateless focus kind x both focus positions x float64/float32, on maps with a
  dead filter, a relatively dead (weak) filter, a dead map, a constant map (argmax tie) and
  a one-pixel map, H != W so that a swapped axis shows: loss and d loss / d acts.
* sync: response descriptors (epsilon ball at two radii, k-NN, the "sum" reduction with
  fixed neighbours) with a constant neuron, and weight descriptors with a zero filter:
  loss, gradient, descriptors and neighbour masks.
* model: `Regularizer.loss` on simple_cnn (the benchmark's net, narrower) for the default
  objective and for each focus kind / descriptor / schedule variant: total, the parts and
  every parameter's gradient, in float64 and (default objective only) float32.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from syncmodel.config import TrainConfig
from syncmodel.focus import focus_loss
from syncmodel.nets import build_model, default_layers
from syncmodel.regularizer import Regularizer
from syncmodel.sync import descriptors, neighbourhoods, sync_loss

OUT = Path(__file__).with_name("regularizer_reference.pt")

FOCUS_CASES = {
    "spread": {},
    "template": {},
    "outside": {"radius": 0.35},
    "class_spread": {"filter_class": True},
    "class_spread_batch": {"kind": "class_spread"},  # filter_class None: this batch's argmax
    "spread_min_mass": {"kind": "spread", "min_mass": 0.6},
}

SYNC_CASES = {
    "ball": {"epsilon": 0.5},
    "wide_ball": {"epsilon": 1.2},
    "knn": {"epsilon": 0.5, "k": 3},
    "sum_fixed": {"epsilon": 0.9, "reduction": "sum", "detach_neighbours": True},
    "weight": {"epsilon": 1.3, "descriptor": "weight"},
    "weight_knn": {"epsilon": 0.5, "descriptor": "weight", "k": 2},
}

MODEL_CASES: dict[str, dict[str, object]] = {
    "default": {"epsilon": 1.1},  # the default objective; a radius at which neurons of the fresh net couple
    "two_layers_centroid_knn": {"layers": ["block2", "block3"], "focus_position": "centroid", "k": 4},
    "template_weight": {"focus_kind": "template", "descriptor": "weight", "epsilon": 1.3},
    "class_spread": {"focus_kind": "class_spread"},
    "icnn": {"focus_kind": "icnn"},
    "gate": {"focus_kind": "gate"},
    "outside": {"focus_kind": "outside"},
    "annealed": {"epsilon": 0.9, "epsilon_final": 0.4, "epochs": 5, "warmup_epochs": 1, "epoch": 2.5},
    "warmup_off": {"warmup_epochs": 2, "epoch": 1},
}


FLOAT32_CASES = {"spread/argmax", "spread/centroid", "template/argmax", "ball", "knn", "weight", "default"}
"""Cases also pinned in float32 (the training dtype); all are pinned in float64."""


def focus_maps() -> torch.Tensor:
    """(8, 10, 6, 5) post-ReLU-like maps with the edge cases listed in the module docstring."""
    g = torch.Generator().manual_seed(1)
    acts = torch.randn(8, 10, 6, 5, generator=g, dtype=torch.float64).relu()
    acts[:, 0] = 0.0  # dead filter
    acts[:, 1] *= 1e-4  # below the relative filter threshold
    acts[3, 2] = 0.0  # dead map
    acts[4, 5] = 0.7  # constant map: argmax tie, first pixel
    acts[5, 6] = 0.0
    acts[5, 6, 2, 4] = 3.0  # one-pixel map
    acts[6, 7] *= 1e-3  # a weak map of a live filter (below the relative map threshold)
    return acts


def sync_maps() -> torch.Tensor:
    """(16, 10, 3, 3) maps: neurons mixed from a few shared profiles (so that the epsilon ball
    has members), a close pair, one constant neuron (no descriptor) and one dead one."""
    g = torch.Generator().manual_seed(2)
    base = torch.randn(16, 3, 3, 3, generator=g, dtype=torch.float64)
    mix = torch.randn(3, 10, generator=g, dtype=torch.float64)
    acts = torch.einsum("bkhw,kc->bchw", base, mix) + 0.3 * torch.randn(16, 10, 3, 3, generator=g, dtype=torch.float64)
    acts[:, 3] = acts[:, 2] + 0.05 * torch.randn(16, 3, 3, generator=g, dtype=torch.float64)
    acts = acts.relu()
    acts[:, 8] = 0.5  # constant over the batch
    acts[:, 9] = 0.0  # dead
    return acts


def sync_weight() -> torch.Tensor:
    """(9, 4, 3, 3) conv weight with a close pair of filters and a zero filter."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(9, 4, 3, 3, generator=g, dtype=torch.float64)
    w[4] = w[3] + 0.05 * torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    w[7] = 0.0  # zero filter: no descriptor
    return w


def model_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 16 single-channel 16x16 images in [0, 16] (the digits range) and labels."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(16, 1, 16, 16, generator=g, dtype=torch.float64) * 16.0
    y = torch.randint(0, 10, (16,), generator=g)
    return x, y


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    (g,) = torch.autograd.grad(loss, x)
    return g


TARGETS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # (8,) labels of the focus maps' images
FILTER_CLASS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])  # (10,)


def focus_case(name: str, position: str, acts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss and d loss / d acts of focus case `name` at `position` on `acts`."""
    spec = dict(FOCUS_CASES[name])
    kind = str(spec.pop("kind", name))
    if spec.pop("filter_class", False):
        spec["filter_class"] = FILTER_CLASS
    if kind == "class_spread":
        spec["targets"] = TARGETS
        spec["num_classes"] = 3
    acts = acts.detach().clone().requires_grad_()
    loss = focus_loss(acts, kind, position, **spec)
    return {"loss": loss.detach(), "grad": _grad(loss, acts)}


def sync_case(name: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss, gradient, descriptors and neighbour mask of sync case `name` on maps / weight `x`."""
    spec = dict(SYNC_CASES[name])
    eps = float(spec.pop("epsilon"))
    kind = str(spec.get("descriptor", "response"))
    x = x.detach().clone().requires_grad_()
    acts, weight = (None, x) if kind == "weight" else (x, None)
    loss = sync_loss(acts, eps, weight=weight, **spec)
    desc = descriptors(acts, kind, weight).detach()
    return {
        "loss": loss.detach(),
        "grad": _grad(loss, x),
        "descriptors": desc,
        "neighbours": neighbourhoods(desc, eps, spec.get("k")),  # type: ignore[arg-type]
    }


def model_config(name: str) -> tuple[TrainConfig, float]:
    spec = dict(MODEL_CASES[name])
    epoch = float(spec.pop("epoch", 0))
    cfg = TrainConfig(
        dataset="digits", backbone="simple_cnn", width=8, batch_size=16, lambda_focus=0.1, coupling_K=0.1, **spec
    )
    return cfg, epoch


def model_case(name: str, state: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One `Regularizer.loss` + backward on simple_cnn (width 8) with weights `state`: the total,
    the parts and every parameter's gradient. The dtype is that of `x`."""
    cfg, epoch = model_config(name)
    model = build_model(cfg, 1, 10, 16).to(x.dtype).train()
    # kinds with forward masks add their buffers (beta, a constant at the start): keep them
    model.load_state_dict(state, strict=False)
    with Regularizer(model, cfg, cfg.layers or default_layers(cfg.backbone)) as reg:
        total, parts = reg.loss(model(x), y, epoch)
    total.backward()
    res = {"total": total.detach(), **{f"part/{k}": v for k, v in parts.items()}}
    res.update({f"grad/{k}": p.grad.clone() for k, p in model.named_parameters()})
    return res


def inputs() -> dict[str, object]:
    torch.manual_seed(5)
    model = build_model(model_config("default")[0], 1, 10, 16).double()
    x, y = model_inputs()
    return {
        "focus_maps": focus_maps(),
        "sync_maps": sync_maps(),
        "sync_weight": sync_weight(),
        "model_x": x,
        "model_y": y,
        "model_state": model.state_dict(),
    }


def dtypes(case: str) -> tuple[torch.dtype, ...]:
    return (torch.float64, torch.float32) if case in FLOAT32_CASES else (torch.float64,)


def cast(value: object, dtype: torch.dtype) -> object:
    """Floating tensors (and those of a state dict) to `dtype`; the rest unchanged."""
    if isinstance(value, dict):
        return {k: cast(v, dtype) for k, v in value.items()}
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def compute(inp: dict[str, object]) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """Every case's results with the code now on the path: {"focus"|"sync"|"model": {key: results}}."""
    out: dict[str, dict[str, dict[str, torch.Tensor]]] = {"focus": {}, "sync": {}, "model": {}}
    for name in FOCUS_CASES:
        for position in ("argmax", "centroid"):
            for dtype in dtypes(f"{name}/{position}"):
                acts = cast(inp["focus_maps"], dtype)
                out["focus"][f"{name}/{position}/{str(dtype)[6:]}"] = focus_case(name, position, acts)  # type: ignore[arg-type]
    for name, spec in SYNC_CASES.items():
        for dtype in dtypes(name):
            x = cast(inp["sync_weight" if spec.get("descriptor") == "weight" else "sync_maps"], dtype)
            out["sync"][f"{name}/{str(dtype)[6:]}"] = sync_case(name, x)  # type: ignore[arg-type]
    for name in MODEL_CASES:
        for dtype in dtypes(name):
            state, x = cast(inp["model_state"], dtype), cast(inp["model_x"], dtype)
            out["model"][f"{name}/{str(dtype)[6:]}"] = model_case(name, state, x, inp["model_y"])  # type: ignore[arg-type]
    return out


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=OUT.parent).stdout.strip()
    inp = inputs()
    torch.save({"commit": commit, "torch": str(torch.__version__), "inputs": inp, **compute(inp)}, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB) from {commit[:10]}")


if __name__ == "__main__":
    main()
