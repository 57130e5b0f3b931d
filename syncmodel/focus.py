"""Focus regulariser (docs/design.md §1.1): each activation map should surround one focus position.

Kinds ("spread", "template", ...) live in the `FOCUS_KINDS` registry; `spatial_spread` is
shared with the metrics.

Weighting (issue 10 item 5). The losses weigh a filter's images by how much the filter fires
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
from torch import Tensor

from syncmodel.errors import ConfigError
from syncmodel.registry import Registry

# A focus kind: fn(acts (B, C, H, W), *, focus="argmax"|"centroid", **opts) -> scalar tensor.
# Extra inputs a kind needs (e.g. targets for a class-conditional kind) travel in **opts.
FocusKind = Callable[..., Tensor]
FOCUS_KINDS: Registry[FocusKind] = Registry("focus kind")
FOCUS_POSITIONS = ("argmax", "centroid")
DEFAULT_MIN_MASS = 1e-6  # absolute per-map floor of the metric `spatial_spread`
DEFAULT_MIN_MASS_REL = 0.01  # the losses' relative liveness threshold (module docstring)


@functools.lru_cache(maxsize=64)
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


def _spread_num(acts: Tensor, focus: str) -> tuple[Tensor, Tensor]:
    """Per-map spread numerator sum_p A[p] |p - mu|^2 (B, C) and mass sum_p A[p] (B, C)."""
    _, _, h, w = acts.shape
    rows, cols, mass = _marginals(acts)
    ys, xs = coordinate_grid(h, w, rows.device, rows.dtype)
    mu_y, mu_x = _positions(acts, rows, cols, mass, focus)
    # |p - mu|^2 separates into a row and a column term, so sum_p A[p]|p - mu|^2 needs only the
    # marginals: no (B, C, H, W) distance tensor, and exactly 0 on a one-point map.
    dy2 = (ys - mu_y.unsqueeze(-1)) ** 2  # (B, C, H)
    dx2 = (xs - mu_x.unsqueeze(-1)) ** 2  # (B, C, W)
    return (rows * dy2).sum(-1) + (cols * dx2).sum(-1), mass


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
    total = (mass * maps).sum(0)  # (C,)
    filters = filters & (total > 0)
    per_filter = (num * maps).sum(0) / torch.where(filters, total, torch.ones_like(total))
    return _masked_mean(per_filter, filters)


@FOCUS_KINDS.register("spread")
def spread_loss(
    acts: Tensor, *, focus: str = "argmax", min_mass: float = DEFAULT_MIN_MASS_REL, **_: object
) -> Tensor:
    """Mass-weighted `spatial_spread` (module docstring), mean over live filters; float32 scalar.

    L_c = sum_b sum_p A[b, c, p] |p - mu_b|^2 / sum_b sum_p A[b, c, p] over the live maps.
    """
    with torch.autocast(acts.device.type, enabled=False):
        num, mass = _spread_num(acts, focus)
        return mass_weighted(num, mass, *live_maps(mass, min_mass))


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
CLASS_CONDITIONAL_KINDS = frozenset({"class_spread"})


def batch_class_means(acts: Tensor, targets: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Detached class-mean spatial-mean responses (K, C) and the class counts (K,) of a batch."""
    with torch.no_grad():
        resp = acts.detach().float().mean((2, 3))  # (B, C)
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
