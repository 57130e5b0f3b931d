"""Module metrics (docs/design.md §1.4): are functional modules consistent, specific and functional?

Module labels are per-neuron ids from `syncmodel.modules.sync_clusters` (-1 = unsynchronised):
consistency across data, semantic specificity within modules, and accuracy under ablation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from syncmodel.metrics.semantic import class_means


def _singletons_apart(labels: Tensor) -> Tensor:
    """Give every -1 its own id, so unsynchronised neurons are singletons, not one module."""
    lab = torch.as_tensor(labels).long().clone()
    lone = lab < 0
    lab[lone] = int(lab.max().clamp_min(-1)) + 1 + torch.arange(int(lone.sum()))
    return lab


def is_degenerate(labels: Tensor) -> bool:
    """Whether a module partition carries no grouping: no module at all, or one block of all.

    With -1 as singletons (`_singletons_apart`), these are the partitions with one block or
    with C blocks; any two of the same kind trivially "agree", so agreement between them
    says nothing about the data (the Rand index's expectation equals its maximum and ARI is
    0/0, which scikit-learn reports as 1).
    """
    lab = _singletons_apart(labels)
    blocks = int(torch.unique(lab).numel())
    return blocks <= 1 or blocks == lab.numel()


def module_consistency(labels_a: Tensor, labels_b: Tensor) -> dict[str, float | bool]:
    """Agreement of two module partitions of the same neurons (e.g. found on two data halves).

    Adjusted Rand index (Hubert & Arabie 1985) and normalised mutual information (arithmetic
    mean, Strehl & Ghosh 2002), via scikit-learn. Unsynchronised neurons (-1) count as
    singletons. 1 for identical partitions; ARI about 0 for unrelated ones. Where either
    partition is degenerate (`is_degenerate`: no module, or every neuron in one module) both
    are NaN: ARI is 0/0 there and NMI compares nothing, so an over-synchronised layer (one
    module on both halves) gets no consistency credit instead of a perfect 1.

    Args:
        labels_a, labels_b: (C,) int module ids, -1 = unsynchronised.
    Returns:
        {"ari": float, "nmi": float, "degenerate": bool}.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if is_degenerate(labels_a) or is_degenerate(labels_b):
        return {"ari": float("nan"), "nmi": float("nan"), "degenerate": True}
    a, b = _singletons_apart(labels_a).numpy(), _singletons_apart(labels_b).numpy()
    return {
        "ari": float(adjusted_rand_score(a, b)),
        "nmi": float(normalized_mutual_info_score(a, b)),
        "degenerate": False,
    }


def largest_module_share(modules: Tensor) -> float:
    """Fraction of all C neurons in the largest module (0 with no module; 1 for one of all)."""
    mods = torch.as_tensor(modules).long()
    kept = mods[mods >= 0]
    return float(torch.bincount(kept).max()) / mods.numel() if kept.numel() else 0.0


def module_specificity(
    responses: Tensor, modules: Tensor, labels: Tensor, num_classes: int | None = None
) -> dict[str, float | Tensor]:
    """Semantic specificity of modules (docs/design.md §1.4; our operationalisation of the abstract).

    - within_corr: mean Pearson correlation of responses over neuron pairs in the same module;
    - between_corr: the same over pairs of neurons in different modules (NaN with < 2 modules);
    - specificity: within_corr - between_corr;
    - class_purity per module: the module's mean response (mean over its neurons) per class,
      `(K p - 1) / (K - 1)` with `p = max_k mu_k / sum_k mu_k`: 0 when it responds to all
      classes alike, 1 when to one class only; its mean over modules is `class_purity`.

    Args:
        responses: (N, C) non-negative responses.
        modules: (C,) module ids, -1 = unsynchronised (left out).
        labels: (N,) class of each image.
        num_classes: K; default labels.max() + 1.
    Returns:
        dict of floats (within_corr, between_corr, specificity, class_purity) and tensors
        module_purity (M,) and module_class (M,) (the module's top class).
    """
    r = torch.as_tensor(responses).to(torch.float64)  # (N, C)
    mods = torch.as_tensor(modules).long()
    m = int(mods.max()) + 1 if mods.numel() and mods.max() >= 0 else 0
    z = r - r.mean(0)
    z = z / z.norm(dim=0).clamp_min(1e-12)
    corr = z.T @ z  # (C, C)
    same = (mods[:, None] == mods[None, :]) & (mods[:, None] >= 0)
    same.fill_diagonal_(False)
    both = (mods[:, None] >= 0) & (mods[None, :] >= 0)
    diff = both & (mods[:, None] != mods[None, :])
    nan = float("nan")
    within = float(corr[same].mean()) if same.any() else nan
    between = float(corr[diff].mean()) if diff.any() else nan
    mu = class_means(r, labels, num_classes)  # (K, C)
    k = mu.shape[0]
    onehot = torch.zeros(mu.shape[1], max(m, 1), dtype=r.dtype)
    if m:
        keep = mods >= 0
        onehot[keep.nonzero().squeeze(1), mods[keep]] = 1.0
    mod_mu = (mu @ onehot / onehot.sum(0).clamp_min(1))[:, :m]  # (K, M)
    share = mod_mu.max(0).values / mod_mu.sum(0).clamp_min(1e-30)
    purity = torch.where(
        mod_mu.sum(0) > 0, (k * share - 1) / max(k - 1, 1), torch.zeros_like(share)
    )
    return {
        "within_corr": within,
        "between_corr": between,
        "specificity": within - between,
        "class_purity": float(purity.mean()) if m else nan,
        "module_purity": purity.float(),
        "module_class": mod_mu.argmax(0) if m else torch.zeros(0, dtype=torch.long),
    }


def heldout_specificity(
    responses: Tensor,
    labels: Tensor,
    halves: tuple[Tensor, Tensor],
    modules: tuple[Tensor, Tensor],
    num_classes: int | None = None,
) -> dict[str, float]:
    """`module_specificity` of modules measured on images they were not found on.

    Modules found on half A are scored on half B's responses and the other way round; each
    float is the mean of the two directions (NaN ones left out). Found and scored on the same
    images, within- minus between-module correlation is what Sync clustered on and is high by
    construction; held out, it is high only if the grouping generalises to new data.

    Args:
        responses: (N, C) responses of all images.
        labels: (N,) class of each image.
        halves: two disjoint index tensors into the N images (A, B).
        modules: (C,) module ids found on half A and on half B.
        num_classes: K; default labels.max() + 1.
    Returns:
        {"within_corr", "between_corr", "specificity", "class_purity"}: floats, NaN where
        undefined in both directions (e.g. no module).
    """
    r, y = torch.as_tensor(responses), torch.as_tensor(labels)
    k = int(y.max()) + 1 if num_classes is None else num_classes
    keys = ("within_corr", "between_corr", "specificity", "class_purity")
    runs = [
        module_specificity(r[scored], found, y[scored], k)
        for found, scored in ((modules[0], halves[1]), (modules[1], halves[0]))
    ]
    out = {}
    for key in keys:
        vals = [float(run[key]) for run in runs if not math.isnan(float(run[key]))]
        out[key] = sum(vals) / len(vals) if vals else float("nan")
    return out


def _layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    return model.get_submodule(layer) if isinstance(layer, str) else layer


_STACK_ELEMENTS = 1 << 24  # elements of stacked layer outputs held at once (64 MiB float32)
_CHECK_IMAGES = 8


@torch.no_grad()
def module_ablation(
    model: nn.Module,
    layer: str | nn.Module,
    modules: Tensor,
    loader: Iterable[tuple[Tensor, Tensor]],
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    cached: Tensor | None = None,
    controls: int = 0,
    pool: Tensor | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Per-module, per-class accuracy drop when a module's channels are zeroed (docs/design.md §1.4).

    A forward hook on `layer` zeroes the module's channels of its output. All modules are
    ablated together: the hook stacks one copy of the output per module (plus the intact one)
    along the batch, so the layers before `layer` run once per batch. With `cached` (the
    layer's intact outputs on the loader's images, in order) they do not run at all: the model
    sees a 2-image stub whose `layer` output the hook replaces. The intact copy is checked
    against a plain forward on the first batch; where stacking does not reproduce it or fails
    (the network mixes tensors from before the layer into later ones, e.g. a residual across
    it), the next mode is used: cached → stacked → one pass per module. Eval mode, no grad;
    the model's training flag is restored.

    Size-matched random control: with `controls` = R > 0, each module of m neurons is matched
    by R random sets of m neurons drawn without replacement from `pool` (seeded), ablated in
    the same stacked pass; `random_drop` is their mean drop. Zeroing more channels costs more
    accuracy whatever they are, so a module matters beyond its size only by `drop -
    random_drop` (the random-ablation baseline of Morcos et al., ICLR 2018, §3.3, matched here
    per module size).

    Args:
        model: classifier returning logits (B, K).
        layer: name (as in `model.named_modules()`) or module whose output (B, C, ...) to ablate.
        modules: (C,) module ids, -1 = never ablated.
        loader: iterable of (images, labels) batches.
        num_classes: K; default from the logits.
        device: where to run; default the model's device.
        cached: optional (N, C, ...) intact outputs of `layer` on the loader's images.
        controls: random size-matched sets per module (R). Default 0 (none).
        pool: (C,) bool, the neurons random sets are drawn from; default all.
        seed: seed of the random sets.
    Returns:
        {"base": (K,) per-class accuracy intact, "drop": (M, K) base - ablated accuracy,
        "count": (K,) images per class}, and with controls "random_drop": (M, K) the mean
        drop of the module's R random size-matched sets.
    """
    mods = torch.as_tensor(modules).long()
    c = mods.numel()
    m = int(mods.max()) + 1 if c and mods.max() >= 0 else 0
    # row 0 intact, row i+1 without module i, then R rows per module of its random sets
    masks = torch.ones(1 + m * (1 + controls), c)
    pool_idx = (torch.ones(c, dtype=torch.bool) if pool is None else pool.bool()).nonzero()[:, 0]
    gen = torch.Generator().manual_seed(seed)
    for i in range(m):
        masks[i + 1, mods == i] = 0.0
        size = min(int((mods == i).sum()), pool_idx.numel())
        for r in range(controls):
            pick = pool_idx[torch.randperm(pool_idx.numel(), generator=gen)[:size]]
            masks[1 + m + i * controls + r, pick] = 0.0
    target = _layer(model, layer)
    dev = torch.device(device) if device else next(model.parameters()).device
    masks = masks.to(dev)
    modes = ["cached", "stacked", "single"] if cached is not None else ["stacked", "single"]
    was_training = model.training
    model.eval()
    correct = count = None
    offset = 0
    try:
        for i, (x, y) in enumerate(loader):
            x, y = x.to(dev), y.to(dev)
            part = None if cached is None else cached[offset : offset + x.shape[0]].to(dev)
            offset += x.shape[0]
            if i == 0:  # a few images suffice to check that the fast modes are exact
                reference, per_image = _reference(model, target, x[:_CHECK_IMAGES])
            while True:
                try:
                    logits = _ABLATE[modes[0]](model, target, masks, x, part, per_image)
                    if i == 0 and modes[0] != "single":
                        ok = torch.allclose(
                            logits[0, : reference.shape[0]], reference, rtol=1e-3, atol=1e-3
                        )
                        logits = logits if ok else None
                except RuntimeError:
                    if modes[0] == "single":
                        raise
                    logits = None
                if logits is not None:
                    break
                modes.pop(0)
            k = max(logits.shape[-1], num_classes or 0)
            if correct is None:
                correct, count = torch.zeros(masks.shape[0], k), torch.zeros(k)
            hits = (logits.argmax(-1) == y[None]).float().cpu()  # (rows, B)
            correct.index_add_(1, y.cpu(), hits)
            count += torch.bincount(y.cpu(), minlength=k).float()
    finally:
        model.train(was_training)
    assert correct is not None and count is not None, "empty loader"
    acc = correct / count.clamp_min(1)
    drop = acc[0][None] - acc[1:]  # (M + M R, K)
    out = {"base": acc[0], "drop": drop[:m], "count": count}
    if controls:
        out["random_drop"] = drop[m:].view(m, controls, -1).mean(1)
    return out


def _with_output(model: nn.Module, target: nn.Module, x: Tensor, fn: Callable) -> Tensor:
    """Logits of `model(x)` with `target`'s output replaced by `fn(output)`."""
    handle = target.register_forward_hook(lambda _m, _i, out: fn(out))
    try:
        return model(x)
    finally:
        handle.remove()


def _reference(model: nn.Module, target: nn.Module, x: Tensor) -> tuple[Tensor, int]:
    """Plain logits (B, K) and the layer's output size per image."""
    size: list[int] = []
    logits = _with_output(model, target, x, lambda out: size.append(out[0].numel()))
    return logits, size[0]


def _stack(out: Tensor, masks: Tensor) -> Tensor:
    """(B, C, ...) → (copies B, C, ...): one masked copy of the batch per mask row."""
    view = masks.view(masks.shape[0], 1, masks.shape[1], *(1,) * (out.dim() - 2))
    return (out[None] * view.to(out.dtype)).reshape(-1, *out.shape[1:])


def _checked(logits: Tensor, copies: int, b: int) -> Tensor:
    if logits.shape[0] != copies * b:  # the forward did not keep the stacked batch apart
        raise RuntimeError("ablation copies were not kept apart")
    return logits.view(copies, b, -1)


def _ablate_cached(
    model: nn.Module, target: nn.Module, masks: Tensor, x: Tensor, part: Tensor, per_image: int
) -> Tensor:
    copies = masks.shape[0]
    step = max(1, _STACK_ELEMENTS // (copies * per_image))
    outs = []
    for s in range(0, part.shape[0], step):
        sub = part[s : s + step]
        # a stub batch of 2 (3 if the stack is 2): never equal to, nor broadcastable with, it
        stub = x[[0] * (3 if copies * sub.shape[0] == 2 else 2)]
        logits = _with_output(model, target, stub, lambda _out, sub=sub: _stack(sub, masks))
        outs.append(_checked(logits, copies, sub.shape[0]))
    return torch.cat(outs, 1)  # (copies, B, K)


def _ablate_stacked(
    model: nn.Module, target: nn.Module, masks: Tensor, x: Tensor, _part: Tensor, per_image: int
) -> Tensor:
    b = x.shape[0]
    xx = x if b > 1 else x[[0, 0]]  # a batch of 1 would broadcast silently against the stack
    group = max(1, _STACK_ELEMENTS // (xx.shape[0] * per_image))
    outs = []
    for g in range(0, masks.shape[0], group):
        rows = masks[g : g + group]
        logits = _with_output(model, target, xx, lambda out, rows=rows: _stack(out, rows))
        outs.append(_checked(logits, rows.shape[0], xx.shape[0])[:, :b])
    return torch.cat(outs)  # (copies, B, K)


def _ablate_single(
    model: nn.Module, target: nn.Module, masks: Tensor, x: Tensor, _part: Tensor, _n: int
) -> Tensor:
    return torch.stack(
        [
            _with_output(model, target, x, lambda out, row=row: _stack(out, row[None]))
            for row in masks
        ]
    )  # (copies, B, K)


_ABLATE = {"cached": _ablate_cached, "stacked": _ablate_stacked, "single": _ablate_single}


CONSISTENCY_PERMUTATIONS = 200  # draws of the size-preserving null (module_consistency_corrected)
CONSISTENCY_QUANTILE = 0.95  # the null's quantile that chance-corrected consistency must exceed


def _comb2(x: np.ndarray) -> np.ndarray:
    return x * (x - 1) / 2.0


def _contingency_ari(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ARI of each row of `a` (R, C) against `b` (C,), both 0-based labels; vectorised.

    Hubert & Arabie (1985): `(sum_ij C(n_ij, 2) - E) / (max - E)` with `E = sum_i C(a_i, 2)
    sum_j C(b_j, 2) / C(n, 2)` and `max` the mean of the two marginal sums. Every row of `a`
    must have the same block sizes (a permutation of one labelling), so E and max are shared.
    """
    rows, c = a.shape
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    cells = (np.arange(rows)[:, None] * na + a) * nb + b[None, :]
    table = np.bincount(cells.ravel(), minlength=rows * na * nb).reshape(rows, na * nb)
    index = _comb2(table.astype(np.float64)).sum(1)
    sum_a = _comb2(np.bincount(a[0]).astype(np.float64)).sum()
    sum_b = _comb2(np.bincount(b).astype(np.float64)).sum()
    expected = sum_a * sum_b / _comb2(np.float64(c))
    top = (sum_a + sum_b) / 2.0
    return (index - expected) / (top - expected)


def module_consistency_corrected(
    labels_a: Tensor,
    labels_b: Tensor,
    permutations: int = CONSISTENCY_PERMUTATIONS,
    quantile: float = CONSISTENCY_QUANTILE,
    seed: int = 0,
) -> dict[str, float]:
    """Module consistency beyond what partitions of the same module sizes reach by chance.

    The null: `labels_a` with its neurons shuffled (seeded), i.e. a random partition with
    exactly the module sizes of A (and B as found), compared with B by ARI, `permutations`
    times (the permutation model under which Hubert & Arabie 1985 adjust the Rand index).

    Why not ARI alone: ARI is already 0 *on average* under this null, but its spread is not
    fixed: with few, large modules two unrelated partitions reach ARI 0.2–0.5 by chance,
    with many small ones almost never. A score that credits `max(0, ARI)` (as the first
    composite did, `interpretability_v1`) therefore gives chance credit about
    `sd_null / sqrt(2 pi)`, which grows as modules get fewer and larger: consistency rose
    "trivially" with coarser partitions. Subtracting the null mean (`(ARI - m) / (1 - m)`)
    cannot fix that, since m is already about 0. So the corrected value is the ARI in excess
    of the null's upper `quantile` point q, rescaled so that identical partitions stay 1:

        corrected = max(0, (ARI - q) / (1 - q))

    Unrelated partitions of any sizes get 0 in at least `quantile` of draws (that is what q
    is), so their mean credit is at most `1 - quantile` times their mean excess, whatever the
    module sizes; agreement earns credit only where chance could not have produced it. The
    Monte Carlo quantile of 200 draws is the 190th order statistic. Where q reaches 1 (so
    few, large modules that chance agreement is certain) nothing beyond chance can be shown:
    0.

    Args:
        labels_a, labels_b: (C,) int module ids, -1 = unsynchronised (a singleton each).
        permutations: null draws R. Default 200 (≈ a millisecond per layer: one bincount).
        quantile: the null quantile to exceed. Default 0.95.
        seed: seed of the shuffles.
    Returns:
        {"ari": raw ARI, "null_mean": mean null ARI, "null_quantile": q, "corrected": the
        corrected consistency in [0, 1]}; all NaN where either partition is degenerate
        (`is_degenerate`), as `module_consistency`.
    """
    nan = float("nan")
    if is_degenerate(labels_a) or is_degenerate(labels_b):
        return {"ari": nan, "null_mean": nan, "null_quantile": nan, "corrected": nan}
    a = np.unique(_singletons_apart(labels_a).numpy(), return_inverse=True)[1].ravel()
    b = np.unique(_singletons_apart(labels_b).numpy(), return_inverse=True)[1].ravel()
    ari = float(_contingency_ari(a[None, :], b)[0])
    rng = np.random.default_rng(seed)
    shuffled = np.stack([a[rng.permutation(a.size)] for _ in range(permutations)])
    null = _contingency_ari(shuffled, b)
    q = float(np.quantile(null, quantile, method="inverted_cdf"))
    corrected = 0.0 if q >= 1.0 else min(max((ari - q) / (1.0 - q), 0.0), 1.0)
    return {"ari": ari, "null_mean": float(null.mean()), "null_quantile": q, "corrected": corrected}
