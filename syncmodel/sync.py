"""Synchronisation coupling (docs/design.md §1.2): similar neurons are pulled together, Kuramoto-style.

Neuron descriptors, adaptive epsilon / k-NN neighbourhoods, and the coupling loss in Gram form.

Loss. For descriptors V (C, D) and neighbourhoods N(c) (recomputed on detached descriptors
every call, so the interaction is local and adaptive):

    L = 1/C * sum_{c : |N(c)| > 0} 1/|N(c)| * sum_{g in N(c)} sum_d (1 - cos(v_gd - v_cd))

the Kuramoto potential, normalised per neuron: each neuron's term is the mean over its own
neighbours, and the sum is divided by the layer's neuron count C (all of them, with or
without a neighbour, with or without a descriptor). So a neuron's pull does not depend on how
many other neurons happen to be coupled (an earlier version divided by the number of neurons
with a neighbour, so a neuron's pull shrank as others got coupled). Since
sum_d cos(v_gd - v_cd) = [cos V cos V^T + sin V sin V^T]_{cg}, the inner sums are D - (two
Gram matrices). We contract the row-normalised neighbour matrix W (W_cg = 1/|N(c)| on
neighbours) with [cos V, sin V] before forming any Gram matrix:
L_c = D - <cos v_c, (W cos V)_c> - <sin v_c, (W sin V)_c>. Two matmuls in all (one for the
neighbourhoods), O(C^2 D) work, never a C×C×D tensor. The D - (~D) difference costs
float32 about 1e-6 absolute in the loss value; gradients do not suffer from it.

What the code does, exactly, and how it relates to Sync (Böhm, Plant & Shao, "Clustering by
Synchronization", KDD 2010), whose update is v_c <- v_c + 1/|N(c)| sum_{g in N(c)} sin(v_g - v_c):
  * `reduction="sum"` with `detach_neighbours=True` (each neuron pulled by fixed neighbours,
    as Sync's simultaneous update does): dL/dv_c = -1/|N(c)| sum_{g in N(c)} sin(v_g - v_c),
    so one gradient step of size 1 on the descriptors *is* the Sync update, for any
    neighbourhoods (k-NN included). Tested; training does not use these options.
  * Training (`syncmodel.regularizer`) uses `reduction="mean"` (the 1/C above) and the full
    gradient: c also appears in its neighbours' terms, adding
    -sum_{g : c in N(g)} 1/|N(g)| sin(v_g - v_c) (on symmetric, equal-size neighbourhoods this
    doubles the pull: a step of 1/2 of the summed loss is the Sync update), and the gradient
    flows on through the descriptors' standardisation into the network's weights; it is not
    a Sync step. The descriptor coordinates are small (unit norm over D = batch size, so
    about 1/sqrt(D)), where sin(x) ≈ x and 1 - cos(x) ≈ x^2 / 2: each neuron's term is about
    |v_g - v_c|^2 / 2 averaged over its ε-neighbours, which for standardised unit vectors is
    1 - corr(g, c). Training therefore acts as "raise the correlation with your
    ε-neighbours", with the neighbourhoods recomputed every step.

Scale. Each neighbour pair costs about |v_g - v_c|^2 / 2 <= epsilon^2 / 2, and after the 1/C
normalisation the layer's loss is that times the fraction of neurons that have a neighbour.
`syncmodel.regularizer` divides by epsilon^2 so that coupling strengths are O(1)-scaled.
"""

from __future__ import annotations

import torch
from torch import Tensor

from syncmodel.errors import ConfigError

DESCRIPTOR_KINDS = ("response", "weight")
# A neuron whose batch profile varies by less than this, relative to its magnitude, is treated
# as constant: float32 rounding of the batch mean alone leaves ~1e-7 relative noise.
_REL_VARIANCE_FLOOR = 1e-5


def descriptors(acts: Tensor | None, kind: str = "response", weight: Tensor | None = None) -> Tensor:
    """Per-neuron descriptors (C, D), float32 (float64 kept), unit norm; NaN rows = none.

    "response": v_c = spatial mean of `acts[:, c]` (acts (B, C, H, W)) over the batch, D = B,
    standardised over the batch and scaled to unit norm (docs/design.md §1.2). A neuron constant over
    the batch (dead ones included) has no descriptor: its row is NaN, it gets no neighbours and
    no gradient. "weight": the layer's conv weight `weight` (C, ...) flattened to (C, D) and
    scaled to unit norm; all-zero filters get NaN rows. Differentiable in acts / weight.
    """
    unit, valid = _descriptors(acts, kind, weight)
    return unit.masked_fill(~valid.unsqueeze(1), float("nan"))


def _descriptors(
    acts: Tensor | None, kind: str, weight: Tensor | None, means: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Descriptors (C, D) with zero rows where there is none, and the validity mask (C,).

    `means`: the maps' spatial means (B, C) when the caller has them (response descriptors
    are built from them alone); otherwise computed from `acts`.
    """
    if kind == "response":
        if means is None:
            if acts is None or acts.dim() != 4:
                raise ValueError("response descriptors need activations (B, C, H, W)")
            means = acts.mean((2, 3), dtype=_dtype(acts))
        v = means.t()  # (C, B)
        centred = v - v.mean(1, keepdim=True)  # (C, B)
        with torch.no_grad():  # a threshold: no gradient flows through it
            floor = v.abs().amax(1) * (_REL_VARIANCE_FLOOR * v.shape[1] ** 0.5)  # (C,)
    elif kind == "weight":
        if weight is None:
            raise ValueError("weight descriptors need the layer's conv weight (C, ...)")
        centred = weight.flatten(1).to(_dtype(weight))  # (C, D)
        floor = torch.zeros((), device=centred.device, dtype=centred.dtype)
    else:
        raise ConfigError("descriptor", f"must be one of {', '.join(DESCRIPTOR_KINDS)}, got {kind!r}")
    norm = centred.norm(dim=1)  # (C,)
    valid = norm > floor
    # Zero rows without a descriptor by dividing by inf: their gradient is then exactly 0.
    unit = centred / torch.where(valid, norm, torch.inf).unsqueeze(1)  # (C, D)
    return unit, valid


def _dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def neighbourhoods(desc: Tensor, epsilon: float, k: int | None = None) -> Tensor:
    """Neighbour mask (C, C), bool: [c, g] is True when g is in N(c); never on the diagonal.

    N_eps(c) = {g != c : |v_g - v_c| <= epsilon} (boundary inclusive, up to float rounding);
    with `k`, the k nearest other neurons instead (epsilon unused; ties broken arbitrarily;
    the relation need not be symmetric). NaN rows (neurons without a descriptor) have no
    neighbours and are nobody's neighbour. Computed on detached descriptors.
    """
    v = desc.detach().to(_dtype(desc))
    valid = torch.isfinite(v).all(1)  # (C,)
    return _neighbourhoods(v.masked_fill(~valid.unsqueeze(1), 0.0), valid, epsilon, k)


@torch.no_grad()
def _neighbourhoods(v: Tensor, valid: Tensor, epsilon: float, k: int | None) -> Tensor:
    """`neighbourhoods` on finite descriptors `v` (C, D) with validity mask `valid` (C,)."""
    n = v.shape[0]
    sq = (v * v).sum(1)  # (C,)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * v @ v.t()).clamp_min(0)  # (C, C)
    allowed = valid.unsqueeze(1) & valid.unsqueeze(0)  # (C, C)
    allowed.fill_diagonal_(False)
    if k is None:
        # The Gram form rounds to a few ulps of |v|^2; keep the boundary inclusive despite it.
        tol = 16 * torch.finfo(v.dtype).eps * (sq.max() if n else 0.0)
        return (d2 <= epsilon**2 + tol) & allowed
    kk = min(int(k), n - 1)
    if kk <= 0:
        return torch.zeros_like(allowed)
    idx = d2.masked_fill(~allowed, float("inf")).topk(kk, dim=1, largest=False).indices
    chosen = torch.zeros_like(allowed).scatter_(1, idx, True)
    return chosen & allowed  # drops the inf picks of neurons with < k valid others


def mean_neighbours(desc: Tensor, epsilon: float) -> float:
    """Average number of neighbours within `epsilon` per neuron (all C neurons): a diagnostic.

    docs/design.md §4's prototype: about 0.2 with no coupling; modules of about 8 at K = 1, eps = 0.5.
    """
    if desc.shape[0] == 0:
        return 0.0
    return neighbourhoods(desc, epsilon).sum(1).float().mean().item()


def coupling_potential(
    desc: Tensor,
    epsilon: float,
    k: int | None = None,
    reduction: str = "mean",
    detach_neighbours: bool = False,
) -> Tensor:
    """Kuramoto potential of descriptors `desc` (C, D) over their neighbourhoods → scalar.

    See the module docstring for the formula, its Gram form and the Sync correspondence.
    `reduction`: "mean" divides the sum over neurons by C, all neurons (per-neuron
    normalisation), or "sum" over neurons.
    No neuron with a neighbour → 0 (a tensor that still carries a grad path).
    """
    v = desc.to(_dtype(desc))
    valid = torch.isfinite(v).all(1)  # (C,)
    return _potential(v.masked_fill(~valid.unsqueeze(1), 0.0), valid, epsilon, k, reduction, detach_neighbours)


def _potential(
    v: Tensor, valid: Tensor, epsilon: float, k: int | None, reduction: str, detach_neighbours: bool
) -> Tensor:
    """`coupling_potential` on finite descriptors `v` (C, D) with validity mask `valid` (C,)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    with torch.autocast(v.device.type, enabled=False), torch.no_grad():
        # float32 weights whatever v's dtype, as the bool / int64 division has always given
        mask = _neighbourhoods(v.detach(), valid, epsilon, k).float()  # (C, C)
        count = mask.sum(1, keepdim=True)  # (C, 1), exact small integers
        w = (mask / count.clamp_min(1)).to(v.dtype)  # (C, C): 1/|N(c)| on neighbours
        has = (count.squeeze(1) > 0).to(v.dtype)  # (C,)
    # 1/C, not 1/(neurons with a neighbour): a neuron's pull must not depend on how many
    # others are coupled (module docstring).
    return _Kuramoto.apply(v, w, has, 1 if reduction == "sum" else max(v.shape[0], 1), detach_neighbours)


class _Kuramoto(torch.autograd.Function):
    """sum_c (has_c D - <phase_c, (W phase)_c>) / divisor, phase = [cos V, sin V], and its gradient.

    The same arithmetic as composing the steps under autograd (the loss is bit-identical), in
    one graph node instead of about ten small ones. Gradient, with M = W phase:
    d/d phase = -(M + W^T phase) / divisor (-M / divisor with fixed neighbours), and through
    phase = [cos v, sin v]: d/dv = -sin v * d/d cos v + cos v * d/d sin v.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, v: Tensor, w: Tensor, has: Tensor, divisor: int, fixed: bool
    ) -> Tensor:
        cos, sin = v.cos(), v.sin()
        phase = torch.cat([cos, sin], 1)  # (C, 2D)
        # Neighbourhood mean field; <cos v_c, (W cos V)_c> = sum_g W_cg [cos V cos V^T]_cg.
        field = w @ phase  # (C, 2D)
        per_neuron = has * v.shape[1] - (phase * field).sum(1)  # (C,)
        ctx.save_for_backward(cos, sin, phase, field, w)
        ctx.divisor, ctx.fixed = divisor, fixed
        return per_neuron.sum() / divisor

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
        cos, sin, phase, field, w = ctx.saved_tensors
        pull = field if ctx.fixed else field + w.t() @ phase  # (C, 2D)
        d = cos.shape[1]
        g = -grad / ctx.divisor
        return g * (cos * pull[:, d:] - sin * pull[:, :d]), None, None, None, None


def sync_loss(
    acts: Tensor | None,
    epsilon: float,
    descriptor: str = "response",
    k: int | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    detach_neighbours: bool = False,
    means: Tensor | None = None,
) -> Tensor:
    """Synchronisation coupling loss of one layer (docs/design.md §1.2) → float32 scalar.

    `acts` (B, C, H, W) post-ReLU maps for descriptor "response"; `weight` (C, ...) the
    layer's conv weight for descriptor "weight" (acts may then be None). Neighbourhoods are
    the epsilon ball, or the `k` nearest neurons when `k` is given. `means` (B, C): the
    maps' spatial means, float32 (float64 kept), when the caller has them already (the
    Regularizer takes them from the focus term's marginals); "response" then reads nothing
    else of `acts`.
    """
    unit, valid = _descriptors(acts, descriptor, weight, means)
    return _potential(unit, valid, epsilon, k, reduction, detach_neighbours)
