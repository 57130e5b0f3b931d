"""The regulariser computes what it computed when `regularizer_reference.pt` was written.

The reference (losses, gradients, descriptors, neighbour masks; see `regularizer_reference.py`
for the cases and how to regenerate it) was produced by the code before the speed work on
focus / sync / regularizer; these tests hold the current code to it.

**float64** cases must agree with the stored float64 results to rounding (1e-9 relative):
that is the check that the same function is computed, values and gradients alike.

**float32** cases (the training dtype) are *not* compared with the stored float32 results:
two CPUs round the same float32 computation differently (another summation order, FMA or
not), so the distance between two float32 runs has no bound that one machine can pick (a
1e-6 bound picked on the writer's CPU failed on another at 1.22e-6). Instead each float32
loss is compared, on the machine running the test, with the float64 computation of the
*same* inputs (the float32-rounded inputs, widened exactly), against a bound derived from
float32 rounding for that computation:

    |f32(x) - f(x)| <= gamma(n, lam) * sum_i |x_i * df/dx_i|

- Backward stability (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
  §1.5): the float32 result is the exact result for inputs each perturbed relatively by at
  most `gamma`, the accumulated relative error of the longest chain of `n` roundings from
  an input to the output. To first order the output then moves by at most
  `gamma * sum_i |x_i df/dx_i|` — the componentwise condition of `f` at `x` times `|f|`,
  computed here exactly in float64 by autograd (inputs = maps, weights, images and every
  parameter of the net).
- `gamma(n, lam) = exp(lam * sqrt(n) * u + n * u**2 / (1 - u)) - 1`, u = 2**-24: the
  probabilistic bound of Higham & Mary (SIAM J. Sci. Comput. 41(5), 2019, Thm 2.4) for
  rounding errors that are mean-independent; it holds with probability at least
  `1 - 2n exp(-lam**2 (1-u)**2 / 2)`, and `lam` is chosen so that this failure probability
  is at most 1e-6 per comparison (`_lam`). The worst-case `n * u` would be looser by
  sqrt(n) and never bind.
- `n`, the roundings along the longest chain, is counted from the shapes of the inputs
  (`_chain_length`): every reduction a value passes through adds its length (a conv's
  C_in * k * k, a BatchNorm's batch statistics over B * H * W, twice, the map sums over
  H * W, the means over B * C maps, the Gram products over the descriptor length, the
  neighbour sums), every elementwise stage adds a small constant.

Vectors (gradients, descriptors) are compared in float64 only, where the stored results pin
them; neighbour masks (booleans, decided by comparisons well away from epsilon for these
inputs) are compared exactly in both dtypes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from regularizer_reference import (
    SYNC_CASES,
    cast,
    compute,
    focus_case,
    model_config,
    sync_case,
)

REFERENCE = Path(__file__).with_name("regularizer_reference.pt")
_REF = torch.load(REFERENCE, weights_only=True)
U32 = 2.0**-24  # float32 unit roundoff
FAILURE = 1e-6  # allowed probability that a correct float32 result exceeds its bound
ELEMENTWISE = 16  # roundings a value meets between two reductions (products, divisions, exp, ...)


@pytest.fixture(scope="module")
def now() -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    return compute(_REF["inputs"])


def _close64(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, what
    if not ref.is_floating_point():
        assert torch.equal(got, ref), what
        return
    assert torch.equal(got.isnan(), ref.isnan()), f"{what}: NaN rows differ"
    got, ref = got.nan_to_num(), ref.nan_to_num()
    scale = ref.abs().max().item()
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12 * scale, msg=what)


def _lam(n: int) -> float:
    """lambda with 2n exp(-lambda^2 (1-u)^2 / 2) = FAILURE (Higham & Mary 2019, Thm 2.4)."""
    return math.sqrt(2.0 * math.log(2.0 * n / FAILURE)) / (1.0 - U32)


def gamma(n: int) -> float:
    """Probabilistic bound on the relative error of a chain of `n` float32 roundings."""
    lam = _lam(n)
    return math.expm1(lam * math.sqrt(n) * U32 + n * U32**2 / (1.0 - U32))


def _sensitivity(value: torch.Tensor, inputs: list[torch.Tensor]) -> float:
    """sum_i |x_i * d value / d x_i| over every element of every input (float64, exact)."""
    grads = torch.autograd.grad(value, inputs, retain_graph=True, allow_unused=True)
    return sum(float((x.detach() * g).abs().sum()) for x, g in zip(inputs, grads) if g is not None)


def _assert_within(f32: torch.Tensor, f64: torch.Tensor, sens: float, n: int, what: str) -> None:
    err = abs(float(f32) - float(f64))
    bound = gamma(n) * sens
    assert err <= bound, f"{what}: |f32 - f64| = {err:.3e} > bound {bound:.3e} (n = {n}, sum|x df/dx| = {sens:.3e})"
    # The bound must bind: a bound above |f| could not tell a wrong function from rounding.
    assert bound < 1e-2 * max(abs(float(f64)), 1e-30), f"{what}: bound {bound:.3e} too loose for |f| = {float(f64):.3e}"


# float64: the stored results pin values, gradients, descriptors and masks.


def _keys(section: str, dtype: str) -> list[str]:
    return sorted(k for k in _REF[section] if k.endswith("/" + dtype))


@pytest.mark.parametrize("key", _keys("focus", "float64"))
def test_focus_loss_and_gradient_match_the_reference(key: str, now: dict) -> None:
    for name, ref in _REF["focus"][key].items():
        _close64(now["focus"][key][name], ref, f"focus {key} {name}")


@pytest.mark.parametrize("key", _keys("sync", "float64"))
def test_sync_loss_gradient_and_neighbours_match_the_reference(key: str, now: dict) -> None:
    for name, ref in _REF["sync"][key].items():
        _close64(now["sync"][key][name], ref, f"sync {key} {name}")


@pytest.mark.parametrize("key", _keys("model", "float64"))
def test_regularised_step_matches_the_reference(key: str, now: dict) -> None:
    assert set(now["model"][key]) == set(_REF["model"][key])
    for name, ref in _REF["model"][key].items():
        _close64(now["model"][key][name], ref, f"model {key} {name}")


# float32: each loss against float64 on the same inputs, within its derived bound.


def _widened(value: torch.Tensor) -> torch.Tensor:
    """float64 holding exactly the float32-rounded value (the float32 run's inputs)."""
    return value.to(torch.float32).to(torch.float64)


@pytest.mark.parametrize("key", _keys("focus", "float32"))
def test_float32_focus_loss_within_its_rounding_bound(key: str, now: dict) -> None:
    name, position, _ = key.split("/")
    acts = _widened(_REF["inputs"]["focus_maps"])
    exact = focus_case(name, position, acts)
    b, c, h, w = acts.shape
    n = h * w + b * c + ELEMENTWISE
    sens = float((acts * exact["grad"]).abs().sum())
    _assert_within(now["focus"][key]["loss"], exact["loss"], sens, n, f"focus {key}")


@pytest.mark.parametrize("key", _keys("sync", "float32"))
def test_float32_sync_loss_within_its_rounding_bound(key: str, now: dict) -> None:
    name = key.split("/")[0]
    weight = SYNC_CASES[name].get("descriptor") == "weight"
    x = _widened(_REF["inputs"]["sync_weight" if weight else "sync_maps"])
    exact = sync_case(name, x)
    c = x.shape[0] if weight else x.shape[1]
    # descriptor: spatial mean (or the filter's weights) and batch standardisation and norm
    # over its length d; then the Gram products (length d, twice: cos and sin) and the
    # neighbour sums and the mean over neurons (c each).
    d = x[0].numel() if weight else x.shape[0]
    spatial = 0 if weight else x.shape[2] * x.shape[3]
    n = spatial + 3 * d + 2 * d + 2 * c + 4 * ELEMENTWISE
    sens = float((x * exact["grad"]).abs().sum())
    got = now["sync"][key]
    _assert_within(got["loss"], exact["loss"], sens, n, f"sync {key}")
    assert torch.equal(got["neighbours"], _REF["sync"][key]["neighbours"]), f"sync {key} neighbours"


def _chain_length(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Roundings along the longest input → loss chain of one regularised step, from shapes:
    each conv adds C_in*k*k, each BatchNorm its two batch statistics over B*H*W, the head its
    in_features, the losses their reductions (classes and batch; the focus and sync terms'
    map, batch and neuron reductions), every stage ELEMENTWISE more."""
    n = 0

    def count(module: torch.nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal n
        inp = args[0]
        if isinstance(module, torch.nn.Conv2d):
            n += module.in_channels * module.kernel_size[0] * module.kernel_size[1] + ELEMENTWISE
        elif isinstance(module, torch.nn.BatchNorm2d):
            b, c, h, w = inp.shape
            n += 2 * b * h * w + ELEMENTWISE
            last[:] = [b, c, h, w]
        elif isinstance(module, torch.nn.Linear):
            n += module.in_features + ELEMENTWISE

    last: list[int] = []
    handles = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        logits = model(x)
    for hnd in handles:
        hnd.remove()
    b, c, h, w = last
    losses = logits.shape[1] + b + (h * w + b * c) + (h * w + 5 * b + 2 * c)
    return n + losses + 4 * ELEMENTWISE


def test_float32_regularised_step_within_its_rounding_bound(now: dict) -> None:
    """The default objective's total and its three parts, each against float64 on the same
    inputs. A part's sensitivity needs its own gradient; the step detaches the parts, so
    they come from three float64 runs: CE alone, CE + focus (coupling off) and the whole."""
    from syncmodel.nets import build_model, default_layers
    from syncmodel.regularizer import Regularizer

    inp = _REF["inputs"]
    state = cast(cast(inp["model_state"], torch.float32), torch.float64)
    x = _widened(inp["model_x"]).requires_grad_()
    y = inp["model_y"]
    cfg, epoch = model_config("default")
    results = {}
    for variant, overrides in (("whole", {}), ("no_sync", {"coupling_K": 0.0})):
        cfg_v = dataclasses.replace(cfg, **overrides)
        model = build_model(cfg_v, 1, 10, 16).double().train()
        model.load_state_dict(state, strict=False)
        leaves = [x, *model.parameters()]
        with Regularizer(model, cfg_v, cfg_v.layers or default_layers(cfg_v.backbone)) as reg:
            logits = model(x)
            total, parts = reg.loss(logits, y, epoch)
        ce = torch.nn.functional.cross_entropy(logits, y)
        g_total = torch.autograd.grad(total, leaves, retain_graph=True)
        g_ce = torch.autograd.grad(ce, leaves)
        results[variant] = (total.detach(), parts, g_total, g_ce, leaves)
    n = _chain_length(model, x.detach())

    total, parts, g_whole, g_ce, leaves = results["whole"]
    _, _, g_no_sync, _, leaves_ns = results["no_sync"]

    def sens(grads: list[torch.Tensor], leaf_values: list[torch.Tensor]) -> float:
        return sum(float((v.detach() * g).abs().sum()) for v, g in zip(leaf_values, grads))

    g_focus = [(a - b) / cfg.lambda_focus for a, b in zip(g_no_sync, g_ce)]
    g_sync = [(a - b) / cfg.coupling_K for a, b in zip(g_whole, g_no_sync)]
    got = now["model"]["default/float32"]
    checks = {
        "total": (total, g_whole),
        "part/ce": (parts["ce"], g_ce),
        "part/focus": (parts["focus"], g_focus),
        "part/sync": (parts["sync"], g_sync),
    }
    assert float(parts["sync"]) > 0 and float(parts["focus"]) > 0  # both terms are on
    for name, (exact, grads) in checks.items():
        _assert_within(got[name], exact, sens(grads, leaves), n, f"model default {name}")


def test_reference_covers_coupled_and_uncoupled_steps() -> None:
    """Guards the reference itself: a pin of a zero sync term would not pin the coupling."""
    syncs = {key: res["part/sync"].item() for key, res in _REF["model"].items()}
    assert syncs["default/float64"] > 0 and syncs["default/float32"] > 0
    assert syncs["warmup_off/float64"] == 0
    assert all(res["loss"].item() > 0 for res in _REF["sync"].values())


@pytest.mark.parametrize("position", ["argmax", "centroid"])
def test_marginals_by_reductions_match_the_matmul_path(position: str) -> None:
    """`focus.map_marginals` takes the matmul on contiguous CPU maps and two reductions otherwise
    (channels_last here, bf16 or GPU maps in training); both give the same loss and gradient."""
    from syncmodel.focus import focus_loss

    acts = _REF["inputs"]["focus_maps"]
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = acts.to(memory_format=layout).requires_grad_()
        loss = focus_loss(x, "spread", position)
        (grad,) = torch.autograd.grad(loss, x)
        results.append((loss, grad.contiguous()))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)
