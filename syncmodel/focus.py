"""Focus regulariser (docs/design.md §1.1): each activation map should surround one focus position.

Kinds ("spread", "template", ...) live in the `FOCUS_KINDS` registry; `spatial_spread` is
shared with the metrics.

Weighting (docs/design.md §1.1). The losses weigh a filter's images by how much the filter fires
on them. For filter c with per-map mass M[b, c] = sum_p A[b, c, p] and per-map numerator
N[b, c] = sum_p A[b, c, p] f_b(p) (f_b the kind's per-pixel cost around image b's focus):

    L_c = sum_{b live} N[b, c] / sum_{b live} M[b, c],      loss = mean_{c live} L_c

— not the mean over maps of N / M, whose gradient on map b is (f_b(p) - N/M) / M[b, c]: there
a map at 1e-3 of the typical mass got a thousand times the gradient of a strong map and each
live map counted equally. Here dL_c/dA[b, c, p] = (f_b(p) - L_c) / T_c with T_c the filter's
live mass over the batch: the same scale for every image of the filter, whatever that image's
own mass, so a near-silent map cannot dominate (a map with mass m contributes m / T_c of L_c).

Liveness is relative to the batch (`min_mass`, default 0.01): a map is live when its mass
exceeds `min_mass` × its filter's mean map mass over the batch; a filter is live when its
mean map mass exceeds `min_mass` × the layer's mean map mass (and is > 0). Dead maps and
filters get an exactly zero gradient. `spatial_spread` (a metric) keeps the absolute
`DEFAULT_MIN_MASS` per map.

Why the loss cannot kill a neuron (docs/design.md §4), stated exactly. L_c is invariant to
the scale of the filter over the batch, L_c(s A[:, c]) = L_c(A[:, c]) for s > 0 (the liveness
thresholds scale with it), so by Euler's theorem `<grad L, A[:, c]> = 0` summed over the batch:
the gradient never shrinks a filter as a whole. It is NOT invariant per image: it may move a
filter's mass between images (raise it where the map is focused, lower it where it is
spread), which is what lets a filter stay silent where its pattern is absent, and a single
map may be driven to zero. The filters still count equally (mean over live filters), so the
gradient of a weak *filter* scales as 1/T_c; the relative filter threshold bounds that at
1 / (min_mass × the layer's mean mass). The prototype's collapse (no normalisation) is most
plausibly the network's cheapest way to zero the off-focus pixels: lowering a conv bias until
the whole map falls below the ReLU, after which it sits at a zero-loss, zero-gradient fixed
point. BatchNorm before the ReLU re-centres and re-scales every channel over the batch, so
such a uniform shift is undone; the nets therefore put BN before every regularised ReLU.
The focus position is detached: the loss moves mass toward the focus, never the focus.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from syncmodel.errors import ConfigError
from syncmodel.registry import Registry

# A focus kind: fn(acts (B, C, H, W), *, focus="argmax"|"centroid", **opts) -> scalar tensor.
# Extra inputs a kind needs (e.g. targets for a class-conditional kind) travel in **opts.
FocusKind = Callable[..., Tensor]
FOCUS_KINDS: Registry[FocusKind] = Registry("focus kind")
FOCUS_POSITIONS = ("argmax", "centroid")
DEFAULT_MIN_MASS = 1e-6  # absolute per-map floor of the metric `spatial_spread`
DEFAULT_MIN_MASS_REL = 0.01  # the losses' relative liveness threshold (module docstring)


def _tensor_cache(build: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`functools.lru_cache(maxsize=64)` for the constant tables below, except while torch
    traces (torch.compile, torch.export): a table built then is a fake tensor of that trace,
    and cached it would turn every later eager use symbolic (MLflow's pt2 export of a `gate`
    net traces its forward mask, which reads the coordinate grid)."""
    cached = functools.lru_cache(maxsize=64)(build)

    @functools.wraps(build)
    def table(*args: object) -> Tensor:
        return build(*args) if torch.compiler.is_compiling() else cached(*args)

    table.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
    table.cache_info = cached.cache_info  # type: ignore[attr-defined]
    return table


@_tensor_cache
def _axis(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    # A grid first built under inference_mode must still be usable in training graphs later.
    with torch.inference_mode(False):
        # Size-1 axes sit at the centre (0) rather than at linspace's lone -1.
        if n == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)


def coordinate_grid(
    h: int, w: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Row and column coordinates normalised to [-1, 1]: `ys` (H,), `xs` (W,); cached."""
    device = torch.device(device)
    return _axis(h, device, dtype), _axis(w, device, dtype)


def _compute_dtype(acts: Tensor) -> torch.dtype:
    if acts.dim() != 4:
        raise ValueError(f"expected activations (B, C, H, W), got shape {tuple(acts.shape)}")
    # float32 even under bf16 autocast; float64 kept (tests).
    return torch.float64 if acts.dtype == torch.float64 else torch.float32


def _marginals(acts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Row sums (B, C, H), column sums (B, C, W) and total mass (B, C), accumulated in float32."""
    # Summing with dtype= reads bf16 maps once, without a full-size float32 copy.
    dtype = _compute_dtype(acts)
    rows = acts.sum(3, dtype=dtype)  # (B, C, H)
    cols = acts.sum(2, dtype=dtype)  # (B, C, W)
    return rows, cols, rows.sum(-1)


def _positions(
    acts: Tensor, rows: Tensor, cols: Tensor, mass: Tensor, focus: str
) -> tuple[Tensor, Tensor]:
    """Detached focus coordinates (mu_y, mu_x), each (B, C), in [-1, 1]."""
    _, _, h, w = acts.shape
    ys, xs = coordinate_grid(h, w, rows.device, rows.dtype)
    with torch.no_grad():
        if focus == "argmax":
            idx = acts.flatten(2).argmax(-1)  # (B, C); ties → first position
            return ys[idx // w], xs[idx % w]
        if focus == "centroid":
            # Normalise before the weighted sum: a one-point map then gives its pixel exactly.
            safe = torch.where(mass > 0, mass, torch.ones_like(mass)).unsqueeze(-1)
            return (rows / safe) @ ys, (cols / safe) @ xs  # (B, C) each
    raise ConfigError("focus_position", f"must be one of {', '.join(FOCUS_POSITIONS)}, got {focus!r}")


def focus_positions(acts: Tensor, focus: str = "argmax") -> Tensor:
    """Focus position of every map, (B, C, 2) as (y, x) in [-1, 1], detached.

    `argmax` is docs/design.md §1.1's default; `centroid` (activation-weighted mean position) is what
    ICNN's released code uses (Zhang, Wu & Zhu, "Interpretable Convolutional Neural Networks",
    CVPR 2018). Dead maps get (0, 0) under `centroid` and the first pixel under `argmax`.
    """
    rows, cols, mass = _marginals(acts)
    mu_y, mu_x = _positions(acts, rows, cols, mass, focus)
    return torch.stack([mu_y, mu_x], -1)


@_tensor_cache
def _marginal_matrix(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(H*W, H+W+1) 0/1: flat maps (.., H*W) @ it = their row sums, column sums, total mass."""
    with torch.inference_mode(False):
        p = torch.arange(h * w, device=device)
        m = torch.zeros(h * w, h + w + 1, device=device, dtype=dtype)
        m[p, p // w] = 1.0
        m[p, h + p % w] = 1.0
        m[:, h + w] = 1.0
        return m


@_tensor_cache
def _argmax_sq_offsets(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(H*W, H+W): row p holds (ys - ys[p // w])^2 then (xs - xs[p % w])^2, the squared offsets
    of every row and column from a focus at flat pixel p (the same float ops as from mu)."""
    with torch.inference_mode(False):
        ys, xs = coordinate_grid(h, w, device, dtype)
        p = torch.arange(h * w, device=device)
        dy2 = (ys - ys[p // w].unsqueeze(-1)) ** 2  # (H*W, H)
        dx2 = (xs - xs[p % w].unsqueeze(-1)) ** 2  # (H*W, W)
        return torch.cat([dy2, dx2], -1)


def map_marginals(acts: Tensor) -> Tensor:
    """Each map's row sums, column sums and total mass, (B, C, H+W+1), in float32 (float64 kept).

    One matmul with a 0/1 matrix where that is exact (full-precision float32 or float64 maps
    on the CPU): one pass over the maps forward and one contiguous gradient backward, where
    separate reductions cost a pass each and autograd adds up their broadcast gradients.
    Elsewhere (bf16 maps under autocast, channels_last, GPUs, where TF32 may round matmul
    inputs) the reductions, with dtype= so that bf16 maps are read once without a copy.
    The last column (each map's mass) is also what the coupling's response descriptors are
    made of (their spatial mean is mass / (H*W)): `syncmodel.regularizer` computes these
    marginals once per layer and hands them to both terms.
    """
    b, c, h, w = acts.shape
    dtype = _compute_dtype(acts)
    if (
        acts.device.type == "cpu"
        and acts.dtype == dtype
        and acts.is_contiguous()
        and (dtype == torch.float64 or torch.get_float32_matmul_precision() == "highest")
    ):
        return (acts.view(b * c, h * w) @ _marginal_matrix(h, w, acts.device, dtype)).view(b, c, h + w + 1)
    rows = acts.sum(3, dtype=dtype)  # (B, C, H)
    return torch.cat([rows, acts.sum(2, dtype=dtype), rows.sum(-1, keepdim=True)], -1)


def _sq_offsets(acts: Tensor, marg: Tensor, focus: str) -> Tensor:
    """Detached squared row and column offsets from each map's focus, (B, C, H+W).

    |p - mu|^2 separates into a row and a column term, so sum_p A[p] |p - mu|^2 is
    <marginals, offsets>: no (B, C, H, W) distance tensor, and exactly 0 on a one-point map.
    """
    _, _, h, w = acts.shape
    with torch.no_grad():
        if focus == "argmax":  # a table row per focus pixel instead of a focus position
            idx = acts.flatten(2).argmax(-1)  # (B, C); ties → first position
            table = _argmax_sq_offsets(h, w, marg.device, marg.dtype)
            return table.index_select(0, idx.view(-1)).view(*idx.shape, h + w)
        rows, cols, mass = marg[..., :h], marg[..., h : h + w], marg[..., h + w]
        mu_y, mu_x = _positions(acts, rows, cols, mass, focus)  # (B, C) each; refuses unknown kinds
        ys, xs = coordinate_grid(h, w, marg.device, marg.dtype)
        return torch.cat([(ys - mu_y.unsqueeze(-1)) ** 2, (xs - mu_x.unsqueeze(-1)) ** 2], -1)


def _spread_num(acts: Tensor, focus: str) -> tuple[Tensor, Tensor]:
    """Per-map spread numerator sum_p A[p] |p - mu|^2 (B, C) and mass sum_p A[p] (B, C)."""
    marg = map_marginals(acts)
    k = marg.shape[-1] - 1
    return (marg[..., :k] * _sq_offsets(acts, marg, focus)).sum(-1), marg[..., k]


def spatial_spread(
    acts: Tensor, focus: str = "argmax", min_mass: float = DEFAULT_MIN_MASS
) -> Tensor:
    """Activation-weighted spread around the focus, per map: (B, C), NaN for dead maps.

    spread[b, c] = sum_p A[p] * |p - mu|^2 / sum_p A[p], p and mu in [-1, 1]^2 (docs/design.md §1.1);
    0 exactly when all mass sits on one pixel, at most 8. Maps with mass <= `min_mass`
    (absolute) are dead and reported as NaN so that metrics can `nanmean` them away.
    Differentiable, but losses should use `focus_loss` (mass-weighted, module docstring).
    """
    num, mass = _spread_num(acts, focus)
    alive = mass > min_mass
    return (num / torch.where(alive, mass, torch.ones_like(mass))).masked_fill(~alive, float("nan"))


def live_maps(mass: Tensor, min_mass: float = DEFAULT_MIN_MASS_REL) -> tuple[Tensor, Tensor]:
    """Which maps (B, C) and filters (C,) count, relative to the batch (module docstring).

    A map is live when its mass exceeds `min_mass` × its filter's mean map mass over the
    batch; a filter when its mean map mass exceeds `min_mass` × the layer's mean and is > 0.
    """
    with torch.no_grad():
        m = mass.detach()
        per_filter = m.mean(0)  # (C,)
        maps = m > min_mass * per_filter
        filters = (per_filter > min_mass * per_filter.mean()) & (per_filter > 0)
        return maps, filters


def _masked_mean(values: Tensor, alive: Tensor) -> Tensor:
    # Multiplying (not indexing) keeps a grad path even when nothing is alive: loss 0, grads 0.
    return (values * alive).sum() / alive.sum().clamp_min(1)


def mass_weighted(num: Tensor, mass: Tensor, maps: Tensor, filters: Tensor) -> Tensor:
    """mean over live filters c of sum_{b live} num[b, c] / sum_{b live} mass[b, c] → scalar.

    `num`, `mass`, `maps` (B, C); `filters` (C,). A filter without a live map counts as dead.
    Dividing dead filters by 1 (not by ~0) keeps their gradient exactly 0 rather than 0 * inf.
    """
    per_filter, filters, _ = _per_filter(num, mass, maps, filters)
    return _masked_mean(per_filter, filters)


def _per_filter(num: Tensor, mass: Tensor, maps: Tensor, filters: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`mass_weighted`'s per-filter ratios (C,), the filters that count (C,) bool and the
    denominators (C,): each filter's live mass, 1 for dead filters."""
    total = (mass * maps).sum(0)  # (C,)
    filters = filters & (total > 0)
    den = torch.where(filters, total, torch.ones_like(total))
    return (num * maps).sum(0) / den, filters, den


@FOCUS_KINDS.register("spread")
def spread_loss(
    acts: Tensor,
    *,
    focus: str = "argmax",
    min_mass: float = DEFAULT_MIN_MASS_REL,
    marginals: Tensor | None = None,
    **_: object,
) -> Tensor:
    """Mass-weighted `spatial_spread` (module docstring), mean over live filters; float32 scalar.

    L_c = sum_b sum_p A[b, c, p] |p - mu_b|^2 / sum_b sum_p A[b, c, p] over the live maps.
    `marginals`: `map_marginals(acts)` when the caller has them already (the Regularizer
    shares them with the coupling term); computed here otherwise.
    """
    with torch.autocast(acts.device.type, enabled=False):
        marg = map_marginals(acts) if marginals is None else marginals
        return _MassWeightedSpread.apply(marg, _sq_offsets(acts, marg, focus), min_mass)


class _MassWeightedSpread(torch.autograd.Function):
    """`mass_weighted(num, mass, *live_maps(mass, min_mass))` of `spread_loss` from the maps'
    marginals `marg` (B, C, H+W+1) and detached squared offsets `sq` (B, C, H+W), with
    num = <marg[..., :H+W], sq> and mass = marg[..., -1], and its gradient in closed form.

    The same function as composing those steps under autograd, but one graph node instead of
    about fifteen small ones (their bookkeeping, not their arithmetic, was most of the focus
    term's cost on the CPU). The gradient is the chain rule written out (module docstring):
    d loss / d num[b, c] = s[b, c] and d loss / d mass[b, c] = -s[b, c] L_c, with
    s[b, c] = live_map[b, c] live_filter[c] / (n_live T_c), T_c the filter's live mass and L_c
    its loss; dead maps and filters get exactly 0.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, marg: Tensor, sq: Tensor, min_mass: float) -> Tensor:
        k = sq.shape[-1]
        mass = marg[..., k]  # (B, C)
        num = (marg[..., :k] * sq).sum(-1)  # (B, C)
        maps, filters = live_maps(mass, min_mass)
        per_filter, filters, den = _per_filter(num, mass, maps, filters)  # (C,) each
        counted = filters.to(mass.dtype)
        n = counted.sum().clamp_min(1)
        ctx.save_for_backward(sq, maps.to(mass.dtype) * (counted / (n * den)), per_filter)
        return _masked_mean(per_filter, filters)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        sq, scale, per_filter = ctx.saved_tensors  # (B, C, H+W), (B, C), (C,)
        coef = (grad * scale).unsqueeze(-1)  # (B, C, 1)
        return torch.cat([coef * sq, coef * -per_filter.unsqueeze(-1)], -1), None, None


@FOCUS_KINDS.register("template")
def template_loss(
    acts: Tensor,
    *,
    focus: str = "argmax",
    beta: float = 4.0,
    min_mass: float = DEFAULT_MIN_MASS_REL,
    **_: object,
) -> Tensor:
    """Positive-template agreement: `1 - sum_b sum_p A[p] T(p) / sum_b sum_p A[p]`, per filter.

    T(p) = max(1 - beta * |p - mu|_1 / n, -1) is the positive template of Zhang, Wu & Zhu
    (CVPR 2018), with |p - mu|_1 in pixels and n the map side (per axis for H != W:
    beta * (|dy|/H + |dx|/W)). It is +1 at the focus, 0 at L1 distance n/beta, -1 far away.
    The loss lies in [0, 2]: 0 exactly when all mass sits on the focus. Mass-weighted over a
    filter's images like every kind here (module docstring). This is a loose imitation of
    ICNN; the faithful one is the `icnn` kind.
    """
    with torch.autocast(acts.device.type, enabled=False):
        _, _, h, w = acts.shape
        rows, cols, mass = _marginals(acts)
        ys, xs = coordinate_grid(h, w, rows.device, rows.dtype)
        mu_y, mu_x = _positions(acts, rows, cols, mass, focus)
        # Normalised offsets → pixels: one pixel is 2 / (n - 1) in [-1, 1] coordinates.
        ady = (ys - mu_y.unsqueeze(-1)).abs() * ((h - 1) / (2 * h))  # (B, C, H)
        adx = (xs - mu_x.unsqueeze(-1)).abs() * ((w - 1) / (2 * w))  # (B, C, W)
        template = (1 - beta * (ady.unsqueeze(-1) + adx.unsqueeze(-2))).clamp_min(-1)  # (B, C, H, W)
        agreement = (acts * template).sum((2, 3))  # (B, C); promotes bf16 maps to float32
        return mass_weighted(mass - agreement, mass, *live_maps(mass, min_mass))


# Kinds that need the labels: the Regularizer passes `targets` and a per-filter `filter_class`.
CLASS_CONDITIONAL_KINDS = frozenset({"class_spread", "icnn"})


def batch_class_means(
    acts: Tensor, targets: Tensor, num_classes: int, statistic: str = "mean"
) -> tuple[Tensor, Tensor]:
    """Detached class means (K, C) of each map's spatial `statistic` ("mean" or "max", the
    latter ICNN's `sliceMag`) and the class counts (K,) of a batch."""
    with torch.no_grad():
        flat = acts.detach().float().flatten(2)
        resp = flat.amax(-1) if statistic == "max" else flat.mean(-1)  # (B, C)
        onehot = torch.nn.functional.one_hot(targets.long(), num_classes).to(resp.dtype)  # (B, K)
        counts = onehot.sum(0)  # (K,)
        return onehot.T @ resp / counts.clamp_min(1).unsqueeze(-1), counts


@FOCUS_KINDS.register("class_spread")
def class_spread_loss(
    acts: Tensor,
    *,
    targets: Tensor,
    filter_class: Tensor | None = None,
    num_classes: int | None = None,
    offclass: float = 1.0,
    focus: str = "argmax",
    min_mass: float = DEFAULT_MIN_MASS_REL,
    **_: object,
) -> Tensor:
    """Part-tied focus: spread on the filter's own class, off-class share suppressed elsewhere.

    ICNN (Zhang, Wu & Zhu, CVPR 2018) ties each filter to one category and pushes it towards
    silence on the others; that tie, not the focus alone, is what keeps a filter on one part
    (docs/design.md §4: focus alone made maps point-like but less part-stable). Here, with
    `own[b, c] = targets[b] == filter_class[c]`:

        loss = mean_{c live} sum_{b own, live} N[b, c] / sum_{b own, live} M[b, c]
             + offclass * mean_{c live} sum_{b not own} M[b, c] / sum_b M[b, c]

    M[b, c] is map (b, c)'s total mass, N[b, c] its spread numerator (module docstring). Both
    terms are scale-invariant per filter over the batch, so the gradient never shrinks a
    filter's activation as a whole (`<grad, A[:, c]> = 0`): it moves mass onto the focus and
    from other classes' images onto the own class's; dead maps and dead filters add nothing.

    Args:
        acts: post-ReLU maps (B, C, H, W).
        targets: labels (B,).
        filter_class: each filter's class (C,), detached; the Regularizer passes the argmax
            of a running average of class-mean responses. None → argmax of this batch's
            class means (needs `num_classes` or takes `targets.max() + 1`).
        offclass: weight of the off-class suppression (`TrainConfig.focus_offclass`).
    """
    with torch.autocast(acts.device.type, enabled=False):
        if filter_class is None:
            k = num_classes if num_classes is not None else int(targets.max()) + 1
            filter_class = batch_class_means(acts, targets, k)[0].argmax(0)  # (C,)
        num, mass = _spread_num(acts, focus)  # (B, C) each
        maps, filters = live_maps(mass, min_mass)
        own = targets.view(-1, 1) == filter_class.view(1, -1).to(targets.device)  # (B, C)
        loss = mass_weighted(num, mass, maps & own, filters)
        if offclass > 0:
            total = mass.sum(0)  # (C,)
            off = (mass * ~own).sum(0) / torch.where(filters, total, torch.ones_like(total))
            loss = loss + offclass * _masked_mean(off, filters)
        return loss


def focus_loss(acts: Tensor, kind: str = "spread", focus: str = "argmax", **opts: object) -> Tensor:
    """Focus regulariser on post-ReLU maps `acts` (B, C, H, W) → float32 scalar (docs/design.md §1.1).

    `kind` names a registered `FOCUS_KINDS` entry (unknown → ConfigError on "focus_kind");
    `focus` is "argmax" or "centroid" (see `focus_positions`); `opts` go to the kind (e.g.
    `beta` for "template", `min_mass`, or targets for kinds that need them).
    """
    if focus not in FOCUS_POSITIONS:
        raise ConfigError("focus_position", f"must be one of {', '.join(FOCUS_POSITIONS)}, got {focus!r}")
    return FOCUS_KINDS.get(kind, field="focus_kind")(acts, focus=focus, **opts)


# --- Kinds with a forward mask (docs/design.md §1.1) ----------------------------------------
# A mask module sits on the regularised stage's output (attached by `syncmodel.nets.build_model`
# as a forward hook, so that evaluation and checkpoints see it too): the next layer reads the
# masked map. The kind's loss reads the module's last unmasked input.


def _pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    return (torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype))


class ICNNMask(nn.Module):
    """ICNN's forward template mask on a post-ReLU map (B, C, H, W) (Zhang, Wu & Zhu, CVPR 2018).

    As in the released code (`getMu.m`, `getMask.m`, the `conv_mask` layer of
    `our_vl_simplenn.m`): the focus is the activation centroid rounded to a pixel (getMu's
    default `IsUseMax=false`); the mask is `max(1 - beta_c (|y - mu_y| + |x - mu_x|), -1)` in
    [-1, 1] map coordinates (`linspace(-1, 1, n)`); the next layer sees `max(x * mask, 0)`, and
    the gradient reaching x is the next layer's times `max(mask, 0)` — identical to
    `x * mask.clamp_min(0)` with the mask detached, for x >= 0. `beta` (C,) starts at 2
    (`alphaInit`) and follows its target `clamp(3 / sqrtvar, 1.5, 3)` (see `update_beta`).
    """

    def __init__(self, channels: int, beta_init: float = 2.0, beta_rate: float = 0.05):
        super().__init__()
        self.register_buffer("beta", torch.full((channels,), float(beta_init)))
        self.beta_rate = beta_rate
        self.last: tuple[Tensor, Tensor, Tensor] | None = None  # (x, mask, sqrtvar) of training

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            mask, sqrtvar = self.template(x.detach().float())
        if self.training:
            self.last = (x, mask, sqrtvar)
        return x * mask.clamp_min(0).to(x.dtype)

    @torch.no_grad()
    def template(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The mask (B, C, H, W) in [-1, 1] and sqrtvar (B, C) in pixels, as getMu/getMask."""
        b, c, h, w = x.shape
        py, px = _pixel_grid(h, w, x.device, x.dtype)
        rows, cols = x.sum(3), x.sum(2)  # (B, C, H), (B, C, W)
        mass = rows.sum(-1).clamp_min(1e-9)  # getMu: max(sum(x), 1e-9)
        mu_y = ((rows @ py) / mass).round().clamp(0, h - 1)  # (B, C) pixel indices
        mu_x = ((cols @ px) / mass).round().clamp(0, w - 1)
        dy2 = (py - mu_y.unsqueeze(-1)) ** 2  # (B, C, H)
        dx2 = (px - mu_x.unsqueeze(-1)) ** 2
        sqrtvar = (((rows * dy2).sum(-1) + (cols * dx2).sum(-1)) / mass).sqrt()  # pixels
        ys, xs = coordinate_grid(h, w, x.device, x.dtype)
        dy = (ys - ys[mu_y.long()].unsqueeze(-1)).abs()  # (B, C, H), [-1, 1] units
        dx = (xs - xs[mu_x.long()].unsqueeze(-1)).abs()  # (B, C, W)
        beta = self.beta.to(x.dtype).view(1, c, 1, 1)
        mask = (1 - beta * (dy.unsqueeze(-1) + dx.unsqueeze(-2))).clamp_min(-1)
        return mask, sqrtvar

    @torch.no_grad()
    def update_beta(self, strength: Tensor, sqrtvar: Tensor, own: Tensor) -> None:
        """Move beta toward ICNN's target on the filters' own-category images.

        target_c = clamp(3 / (sum_b s[b, c] sqrtvar[b, c] / sum_b s[b, c]), 1.5, 3) over the
        images b of filter c's category, s = mean_p(x * mask). ICNN applies the "gradient"
        -1e4 (target - beta) with learning rate 0.05 × the net's and momentum; here beta moves
        a fixed fraction `beta_rate` of the way per step (departure: no SGD state).
        """
        s = strength * own
        den = s.sum(0)  # (C,)
        ok = den > 0
        spread = (s * sqrtvar).sum(0) / torch.where(ok, den, torch.ones_like(den))
        target = (3.0 / spread.clamp_min(1e-12)).clamp(1.5, 3.0)
        self.beta.copy_(torch.where(ok, self.beta + self.beta_rate * (target - self.beta), self.beta))


class GaussianGate(nn.Module):
    """A Gaussian gate exp(-|p - mu|^2 / (2 sigma^2)) around the detached focus of each map.

    Part-tying reading (a) of "the activation map surrounds its focus position": the next
    layer sees only the neighbourhood of the focus (argmax, or centroid), so whatever the
    filter fires on away from its focus is invisible downstream. p and mu in [-1, 1]; the gate
    is detached (the gradient reaching x is the next layer's times the gate).
    """

    def __init__(self, channels: int, sigma: float = 0.35, focus: str = "argmax"):
        super().__init__()
        self.sigma, self.focus, self.channels = sigma, focus, channels
        self.last: tuple[Tensor, Tensor, Tensor] | None = None

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            xf = x.detach().float()
            _, _, h, w = xf.shape
            mu = focus_positions(xf, self.focus)  # (B, C, 2)
            ys, xs = coordinate_grid(h, w, xf.device, xf.dtype)
            dy2 = (ys - mu[..., 0:1]) ** 2  # (B, C, H)
            dx2 = (xs - mu[..., 1:2]) ** 2  # (B, C, W)
            gate = torch.exp(-(dy2.unsqueeze(-1) + dx2.unsqueeze(-2)) / (2 * self.sigma**2))
        if self.training:
            self.last = (x, gate, gate)
        return x * gate.to(x.dtype)


# kind -> builder (channels, **config-derived options) of its forward mask module
FORWARD_MASKS: dict[str, Callable[..., nn.Module]] = {
    "icnn": lambda channels, **opts: ICNNMask(channels, beta_rate=float(opts.get("beta_rate", 0.05))),
    "gate": lambda channels, **opts: GaussianGate(
        channels, sigma=float(opts.get("sigma", 0.35)), focus=str(opts.get("focus", "argmax"))
    ),
}
ICNN_ALPHA = 0.5


def mask_key(layer: str) -> str:
    """The `model.focus_masks` key of a layer name (ModuleDict keys cannot hold dots)."""
    return layer.replace(".", "__")


def attach_forward_masks(model: nn.Module, layers: list[str], kind: str, **opts: object) -> None:
    """Put kind's forward mask on each of `layers`' outputs (a forward hook returning the
    masked map) and register the masks as `model.focus_masks`, so state_dict carries them."""
    named = dict(model.named_modules())
    masks = nn.ModuleDict()
    for name in layers:
        module = named[name]
        bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        channels = bns[-1].num_features if bns else convs[-1].out_channels
        mask = FORWARD_MASKS[kind](channels, **opts)
        masks[mask_key(name)] = mask
        module.register_forward_hook(lambda _m, _i, out, mask=mask: mask(out))
    model.focus_masks = masks  # `alpha` of the released code's loss


def _icnn_finite(t: Tensor) -> Tensor:
    """The released code's clean-up: NaN → 0, ±inf → the largest finite entry."""
    t = torch.nan_to_num(t, nan=0.0, posinf=float("nan"), neginf=float("nan"))
    finite = t[~t.isnan()]
    return t.masked_fill(t.isnan(), finite.max().item() if finite.numel() else 0.0)


@FOCUS_KINDS.register("icnn")
def icnn_loss(
    acts: Tensor,
    *,
    targets: Tensor,
    filter_class: Tensor,
    num_classes: int,
    mask_module: ICNNMask,
    epoch: float = 0.0,
    decay: bool = True,
    **_: object,
) -> Tensor:
    """ICNN's filter loss as in its released code (`our_vl_simplenn.m`, conv_mask backward).

    The code injects a gradient into the masked layer's input x rather than computing a loss;
    this returns a surrogate whose gradient w.r.t. x is exactly that gradient (up to the
    constant that `lambda_focus` sets). With alpha = 0.5, s[b, c] = mean_p x[b, c, p] T[b, c, p]
    (T the raw mask in [-1, 1]) and, per filter c of category k(c):

      * images of category k (b in pos):  dL/dx[b, c, p] = -w_pos T[b, c, p] g⁺[b, c],
        g⁺ = e^{s/α} (s - α log Z⁺_c + α), normalised by its mean over those images;
        α log Z⁺_c = α log mean_b exp(mean_p x[b, c] T'[b, c] / α) with T' the mask flipped
        over filters and images (`mask(:,:,end:-1:1,end:-1:1)`, as the code does).
      * other images (b in neg):  dL/dx[b, c, p] = +w_neg g⁻[b, c] at every pixel,
        m = mean_p x[b, c], g⁻ = e^{-m/α} (-m - α log Z⁻_c + α) normalised by its mean,
        α log Z⁻_c = α log mean_b exp(-mean_p x[b, c] / α).

    These are the mutual-information loss's gradients (pos images pulled into the template,
    other categories' images pushed down); w_pos = 0.5 / prior_k, w_neg = 0.5 / (1 - prior_k)
    (class-balance weights), prior_k = 1/K (the code uses the data set's class frequency for
    K <= 10; our data sets are balanced, so the two agree up to ~1% on digits). With `decay`
    the strength falls as 1 / (epoch + 1), the code's `1 / iter`. Only the unmasked input x
    of `mask_module` (its last training forward) is used; `acts` (the masked output) is not.
    Departures: per-image gradients are averaged over the batch (the code sums; a constant
    folded into lambda_focus); log Z uses logsumexp (no overflow, so the code's inf clean-up
    never triggers); filter categories come from the Regularizer's running class means of the
    spatial max (the code's `sliceMag`: same statistic and momentum, updated before rather than
    after the step). Also moves each filter's beta toward its target (`ICNNMask.update_beta`).
    """
    if mask_module.last is None:
        raise RuntimeError("icnn: the mask module saw no training forward")
    x, mask, sqrtvar = mask_module.last
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        b = xf.shape[0]
        a = ICNN_ALPHA
        own = (targets.view(-1, 1) == filter_class.view(1, -1).to(targets.device)).to(xf.dtype)  # (B, C)
        with torch.no_grad():
            xd = xf.detach()
            strength = (xd * mask).mean((2, 3))  # (B, C)
            flipped = (xd * mask.flip(0, 1)).mean((2, 3))
            logb = torch.log(torch.tensor(float(b), device=xd.device))
            logz_pos = a * (torch.logsumexp(flipped / a, 0) - logb)  # (C,)
            m = xd.mean((2, 3))
            logz_neg = a * (torch.logsumexp(-m / a, 0) - logb)
            prior = 1.0 / num_classes
            w_pos, w_neg = (0.5 / prior, 0.5 / (1 - prior)) if num_classes > 1 else (1.0, 1.0)
            g_pos = _icnn_finite(torch.exp(strength / a) * (strength - logz_pos + a))
            g_neg = _icnn_finite(torch.exp(-m / a) * (-m - logz_neg + a))
            neg = 1 - own
            g_pos = _icnn_finite(g_pos / ((g_pos * own).sum(0) / own.sum(0).clamp_min(1)))
            g_neg = _icnn_finite(g_neg / ((g_neg * neg).sum(0) / neg.sum(0).clamp_min(1)))
            coef_pos = w_pos * g_pos * own  # (B, C)
            coef_neg = w_neg * g_neg * neg
            mask_module.update_beta(strength, sqrtvar, own)
        pos_term = -(coef_pos.unsqueeze(-1).unsqueeze(-1) * mask * xf).sum()
        neg_term = (coef_neg.unsqueeze(-1).unsqueeze(-1) * xf).sum()
        scale = 1.0 / (epoch + 1) if decay else 1.0
        return (pos_term + neg_term) * (scale / b)


@FOCUS_KINDS.register("gate")
def gate_loss(
    acts: Tensor,
    *,
    focus: str = "argmax",
    min_mass: float = DEFAULT_MIN_MASS_REL,
    mask_module: nn.Module | None = None,
    **_: object,
) -> Tensor:
    """Part-tying reading (a): a Gaussian gate in the forward pass (`GaussianGate`) plus the
    mass-weighted spread of the *ungated* map, so the filter also gathers its mass there."""
    x = acts if mask_module is None or mask_module.last is None else mask_module.last[0]
    return spread_loss(x, focus=focus, min_mass=min_mass)


@FOCUS_KINDS.register("outside")
def outside_loss(
    acts: Tensor,
    *,
    focus: str = "argmax",
    radius: float = 0.35,
    min_mass: float = DEFAULT_MIN_MASS_REL,
    **_: object,
) -> Tensor:
    """Part-tying reading (b): the share of a filter's mass that lies outside its focus.

    L_c = sum_b sum_{p : |p - mu_b| > radius} A[b, c, p] / sum_b sum_p A[b, c, p] (p, mu in
    [-1, 1]), mass-weighted over the batch: a compact blob of any size up to `radius` costs
    nothing (the spread kind penalises a part's extent), and a filter lowers the loss by
    staying silent on images where it would fire away from a focus. In [0, 1].
    """
    with torch.autocast(acts.device.type, enabled=False):
        _, _, h, w = acts.shape
        rows, cols, mass = _marginals(acts)
        ys, xs = coordinate_grid(h, w, rows.device, rows.dtype)
        mu_y, mu_x = _positions(acts, rows, cols, mass, focus)
        d2 = (ys - mu_y.unsqueeze(-1)).pow(2).unsqueeze(-1) + (xs - mu_x.unsqueeze(-1)).pow(2).unsqueeze(-2)
        outside = (acts * (d2 > radius**2)).sum((2, 3), dtype=mass.dtype)  # (B, C)
        return mass_weighted(outside, mass, *live_maps(mass, min_mass))
