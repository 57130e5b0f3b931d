"""`evaluate`: every interpretability metric of docs/design.md §1.4 on a model and held-out data.

One forward pass collects the named layers' activations; the metrics, Sync modules, module
ablation and (optionally) the pictures follow → a flat report and a per-neuron table.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from syncmodel.data import DataBundle, Split
from syncmodel.errors import ConfigError
from syncmodel.metrics import (
    between_module_distributedness,
    class_means,
    class_selectivity,
    distributedness,
    effective_neurons,
    effective_units,
    heldout_specificity,
    inference_positions,
    interpretability,
    interpretability_v1,
    interpretability_v2,
    largest_module_share,
    location_instability,
    location_instability_heldout,
    location_instability_part_heldout,
    mis,
    mis_chance,
    module_ablation,
    module_consistency,
    module_consistency_corrected,
    module_distributedness,
    module_specificity,
    neuron_scores,
    part_detectors,
    peak_mass,
    position_information,
    spatial_entropy,
    spatial_spread,
)
from syncmodel.modules import find_modules

if TYPE_CHECKING:
    import pyarrow as pa

# Report keys per layer (docs/design.md §1.4). With one layer they appear as is; with several, each
# as "{layer}/{key}" and unprefixed as the mean over layers (counts: the sum).
LAYER_KEYS = (
    "neurons", "dead_fraction", "spread", "entropy", "peak_mass", "position_information",
    "selectivity", "mis", "mis_chance", "mis_above_chance", "effective_neurons", "distributedness",
    "modules", "coverage", "module_size", "largest_module", "sync_steps", "epsilon",
    "consistency_ari", "consistency_ari_null", "consistency_ari_corrected", "consistency_nmi",
    "effective_units", "module_distributedness", "between_module_distributedness", "within_corr",
    "between_corr", "specificity", "class_purity", "ablation_own_drop", "ablation_other_drop",
    "ablation_own_drop_beyond_random", "ablation_other_drop_beyond_random", "interpretability",
    "interpretability_v2", "interpretability_v1",
)  # fmt: skip
# with landmarks; docs/design.md §1.4: ICNN's protocol, and two variants chosen on held-out images
LOCATION_KEYS = (
    "location_instability", "location_instability_heldout", "location_instability_part_heldout",
)  # fmt: skip
DETECTOR_KEYS = ("detectors", "detector_fraction", "unique_parts", "detector_iou")  # with masks
COUNT_KEYS = {"neurons", "modules", "detectors", "unique_parts", "sync_steps"}
ABLATION_CONTROLS = 8  # random size-matched sets per module (module_ablation's controls)
_CHUNK = 256  # images per chunk for the per-map metrics
ESTIMATE_IMAGES = 256  # images of the per-epoch interpretability estimate


@torch.no_grad()
def _collect(
    model: nn.Module, images: Tensor, layers: list[str], batch_size: int, device: torch.device
) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits (N, K) and each layer's activations (N, C, h, w) on CPU, float32, eval mode."""
    modules = dict(model.named_modules())
    captured: dict[str, list[Tensor]] = {name: [] for name in layers}
    hooks = []
    for name in layers:
        if name not in modules:
            known = ", ".join(n for n, m in model.named_children())
            raise ConfigError("layers", f"the model has no layer {name!r}; top-level: {known}")
        hooks.append(
            modules[name].register_forward_hook(
                lambda _m, _i, out, name=name: captured[name].append(out.detach().float().cpu())
            )
        )
    logits = []
    try:
        for start in range(0, images.shape[0], batch_size):
            logits.append(model(images[start : start + batch_size].to(device)).float().cpu())
    finally:
        for h in hooks:
            h.remove()
    acts = {name: torch.cat(parts) for name, parts in captured.items()}
    for name, a in acts.items():
        if a.dim() != 4:
            raise ConfigError(
                "layers", f"layer {name!r} outputs shape {tuple(a.shape)}, not (B, C, H, W)"
            )
    return torch.cat(logits), acts


def _per_map(acts: Tensor) -> dict[str, Tensor]:
    """spread, entropy, peak_mass per map (N, C), computed in chunks of images."""
    out: dict[str, list[Tensor]] = {"spread": [], "entropy": [], "peak_mass": []}
    for start in range(0, acts.shape[0], _CHUNK):
        a = acts[start : start + _CHUNK]
        out["spread"].append(spatial_spread(a))
        out["entropy"].append(spatial_entropy(a))
        out["peak_mass"].append(peak_mass(a))
    return {k: torch.cat(v) for k, v in out.items()}


def _layer(
    name: str,
    acts: Tensor,
    split: Split,
    model: nn.Module,
    num_classes: int,
    image_size: int,
    opts: dict[str, Any],
) -> tuple[dict[str, float], dict[str, Any]]:
    """Report entries and neuron-table columns of one layer."""
    n, c = acts.shape[:2]
    labels = split.labels
    peak = acts.flatten(2).amax(-1)  # (N, C)
    responses = acts.mean((2, 3))  # (N, C)
    active = (peak > 0).float().mean(0)  # (C,) fraction of images where the neuron fires
    sel = class_selectivity(responses, labels, num_classes)
    pos_info = position_information(acts)  # (C,) NaN if never fires
    scores = neuron_scores(pos_info, sel, active, num_classes)
    if opts.get("composite_only"):
        # only what the composite reads (interpretability_estimate): no per-map focus
        # metrics, MIS, location, detectors or neuron-table columns
        rep: dict[str, float] = {"neurons": c, "distributedness": distributedness(responses)}
        cols: dict[str, Any] = {}
    else:
        rep, cols = _layer_details(acts, split, num_classes, image_size, opts, peak, responses, active, sel, pos_info, scores)
    rep, cols = _layer_modules(name, acts, split, model, num_classes, opts, rep, cols, responses, active, scores)
    return rep, cols


def _layer_details(
    acts: Tensor,
    split: Split,
    num_classes: int,
    image_size: int,
    opts: dict[str, Any],
    peak: Tensor,
    responses: Tensor,
    active: Tensor,
    sel: Tensor,
    pos_info: Tensor,
    scores: Tensor,
) -> tuple[dict[str, float], dict[str, Any]]:
    """The layer's metrics outside the composite, and its neuron-table columns."""
    c = acts.shape[1]
    labels = split.labels
    maps = _per_map(acts)  # (N, C) each, NaN for dead maps
    per_neuron = {k: v.nanmean(0) for k, v in maps.items()}  # (C,) NaN if never fires
    mis_c, mis_class = mis(responses, labels, num_classes)
    # the plug-in MIS is biased upward: its value with permuted labels is the chance level
    mis_0 = mis_chance(responses, labels, num_classes, seed=opts["seed"])
    rep: dict[str, float] = {
        "neurons": c,
        "dead_fraction": int((active == 0).sum()) / c,
        # mean over live maps, as the focus loss and train.inspect average it (docs/design.md §1.1)
        **{k: float(v.nanmean()) for k, v in maps.items()},
        "position_information": float(pos_info.nanmean()),
        "selectivity": float(sel.mean()),
        "mis": float(mis_c.mean()),
        "mis_chance": float(mis_0.mean()),
        "mis_above_chance": float((mis_c - mis_0).mean()),
        "effective_neurons": effective_neurons(responses),
        "distributedness": distributedness(responses),
    }
    cols: dict[str, Any] = {
        "dead": (active == 0).tolist(),
        "active_fraction": active.tolist(),
        "mean_activation": responses.mean(0).tolist(),
        "max_activation": peak.amax(0).tolist(),
        **{k: v.tolist() for k, v in per_neuron.items()},
        "position_information": pos_info.tolist(),
        "selectivity": sel.tolist(),
        "mis": mis_c.tolist(),
        "mis_class": mis_class.tolist(),
        "mis_chance": mis_0.tolist(),
        "mis_above_chance": (mis_c - mis_0).tolist(),
        "top_class": class_means(responses, labels, num_classes).argmax(0).tolist(),
        "score": scores.tolist(),
    }
    if split.landmarks is not None:
        pos = inference_positions(acts, image_size)  # (C, N, 2)
        args = (pos, peak.T, split.landmarks, labels, image_size, opts["top_k"])
        for key, li in (
            ("location_instability", location_instability(*args)),
            ("location_instability_heldout", location_instability_heldout(*args, opts["seed"])),
            ("location_instability_part_heldout",
             location_instability_part_heldout(*args, opts["seed"])),
        ):  # fmt: skip
            rep[key] = float(li.nanmean())  # ICNN drops the filters where it is undefined
            cols[key] = li.tolist()
    if split.part_masks is not None:
        det = part_detectors(acts, split.part_masks, opts["quantile"], opts["iou_threshold"])
        names = opts["part_names"] or [str(p) for p in range(split.part_masks.shape[1])]
        rep.update(
            detectors=det.count,
            detector_fraction=det.count / c,
            unique_parts=det.unique_parts,
            detector_iou=float(det.best_iou.mean()),
        )
        cols["detector_iou"] = det.best_iou.tolist()
        cols["detector_part"] = [names[p] for p in det.best_part.tolist()]
        cols["detector"] = det.is_detector.tolist()
    return rep, cols


def _layer_modules(
    name: str,
    acts: Tensor,
    split: Split,
    model: nn.Module,
    num_classes: int,
    opts: dict[str, Any],
    rep: dict[str, float],
    cols: dict[str, Any],
    responses: Tensor,
    active: Tensor,
    scores: Tensor,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Sync modules, their held-out checks, ablation, and the composite score, added to
    `rep` and `cols`."""
    n, c = acts.shape[:2]
    labels = split.labels
    # modules: on all images, and on two disjoint halves for consistency across data and for
    # specificity measured on the half the modules were not found on
    eps, steps, mdl = opts["epsilon"], opts["max_steps"], opts["mdl"]
    modules, n_steps, eps_used = find_modules(responses, eps, steps, mdl)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(opts["seed"]))
    halves = (perm[: n // 2], perm[n // 2 :])
    half_a, _, _ = find_modules(responses[halves[0]], eps, steps, mdl)
    half_b, _, _ = find_modules(responses[halves[1]], eps, steps, mdl)
    cons = module_consistency(half_a, half_b)
    # ARI beyond partitions of the same module sizes (the composite's consistency)
    corrected = module_consistency_corrected(half_a, half_b, seed=opts["seed"])
    spec = heldout_specificity(responses, labels, halves, (half_a, half_b), num_classes)
    n_mod = int(modules.max()) + 1 if modules.max() >= 0 else 0
    in_mod = int((modules >= 0).sum())
    rep.update(
        modules=n_mod,
        coverage=in_mod / c,
        module_size=in_mod / n_mod if n_mod else 0.0,
        largest_module=largest_module_share(modules),
        sync_steps=n_steps,
        epsilon=eps_used,
        consistency_ari=cons["ari"],
        consistency_ari_null=corrected["null_quantile"],
        consistency_ari_corrected=corrected["corrected"],
        consistency_nmi=cons["nmi"],
        # distributedness between functional units: a module counts once (docs/design.md §1.4);
        # between the modules alone: the composite's (a neuron joining a module costs nothing)
        effective_units=effective_units(responses, modules),
        module_distributedness=module_distributedness(responses, modules, num_classes),
        between_module_distributedness=between_module_distributedness(responses, modules, num_classes),
        **spec,
    )
    nan = math.nan
    own = other = own_beyond = other_beyond = nan
    if n_mod and opts["ablation"]:
        controls = opts["ablation_controls"]
        abl = module_ablation(
            model, name, modules, opts["loader"], num_classes, opts["device"], cached=acts,
            controls=controls, pool=active > 0, seed=opts["seed"],
        )  # fmt: skip
        drop = abl["drop"]  # (M, K)
        top = module_specificity(responses, modules, labels, num_classes)["module_class"]
        mine = torch.nn.functional.one_hot(top, drop.shape[1]).bool()
        several = drop.shape[1] > 1
        own = float(drop[mine].mean())
        other = float(drop[~mine].mean()) if several else nan
        if controls:
            beyond = drop - abl["random_drop"]
            own_beyond = float(beyond[mine].mean())
            other_beyond = float(beyond[~mine].mean()) if several else nan
    rep.update(
        ablation_own_drop=own,
        ablation_other_drop=other,
        ablation_own_drop_beyond_random=own_beyond,
        ablation_other_drop_beyond_random=other_beyond,
    )
    common = dict(
        coverage=rep["coverage"], purity=spec["class_purity"],
        largest_module=rep["largest_module"], accuracy=opts["accuracy"], chance=opts["chance"],
    )  # fmt: skip
    rep["interpretability"] = interpretability(
        scores, effective_units=rep["effective_units"], consistency=corrected["corrected"], **common
    )
    # the earlier composites, under their own names, so the rows they scored can still be compared
    rep["interpretability_v2"] = interpretability_v2(
        scores,
        distributedness=rep["between_module_distributedness"],
        consistency=corrected["corrected"],
        **common,
    )
    rep["interpretability_v1"] = interpretability_v1(
        scores, distributedness=rep["distributedness"], consistency=cons["ari"], **common
    )
    cols["module"] = modules.tolist()
    return rep, cols


def _neuron_table(layer_cols: dict[str, dict[str, Any]]) -> pa.Table:
    """One row per neuron; fixed schema (NaN and absent metrics become nulls)."""
    import pyarrow as pa

    f32, i32 = pa.float32(), pa.int32()
    schema = [
        ("layer", pa.string()), ("neuron", i32), ("module", i32), ("dead", pa.bool_()),
        ("active_fraction", f32), ("mean_activation", f32), ("max_activation", f32),
        ("spread", f32), ("entropy", f32), ("peak_mass", f32), ("position_information", f32),
        ("selectivity", f32),
        ("mis", f32), ("mis_class", i32), ("mis_chance", f32), ("mis_above_chance", f32),
        ("top_class", i32), ("score", f32), ("location_instability", f32),
        ("location_instability_heldout", f32), ("location_instability_part_heldout", f32),
        ("detector_iou", f32), ("detector_part", pa.string()), ("detector", pa.bool_()),
    ]  # fmt: skip
    columns: dict[str, list] = {name: [] for name, _ in schema}
    for layer, cols in layer_cols.items():
        c = len(cols["module"])
        cols = {**cols, "layer": [layer] * c, "neuron": list(range(c))}
        for name, _ in schema:
            values = cols.get(name, [None] * c)
            columns[name] += [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    return pa.table({name: pa.array(columns[name], type=t) for name, t in schema})


def evaluate(
    model: nn.Module,
    data: Split | DataBundle,
    layers: list[str] | None = None,
    *,
    max_images: int | None = 2000,
    batch_size: int = 256,
    epsilon: float = 0.5,
    mdl: bool = False,
    max_steps: int = 100,
    top_k: int = 100,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    ablation: bool = True,
    ablation_controls: int = ABLATION_CONTROLS,
    num_classes: int | None = None,
    image_size: int | None = None,
    part_names: list[str] | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    picture_dir: str | Path | None = None,
    composite_only: bool = False,
) -> tuple[dict[str, float | int], pa.Table]:
    """All metrics of docs/design.md §1.4 for `model` on held-out data → (report, neurons table).

    Activations of `layers` are collected in one batched, no-grad, eval-mode pass with forward
    hooks (the model's training flag is restored). Per layer: focus (spread, entropy, peak
    mass, position information), semantics (selectivity, MIS), distributedness (effective
    neurons), location instability and part detectors where the split has landmarks / part
    masks, Sync modules on the response descriptors (the coupling's descriptor) of all
    images, their consistency between two disjoint random halves (NaN for degenerate
    partitions), specificity and class purity of each half's modules measured on the other
    half (within_corr, between_corr, specificity, class_purity are these held-out values),
    ablation (raw and beyond a size-matched random ablation), and the composite
    `interpretability` score (`syncmodel.metrics.score.interpretability`: collapse gates on
    the functional units and the largest module, consistency beyond a size-matched null)
    beside its earlier versions `interpretability_v2` and `interpretability_v1`.

    Args:
        model: classifier returning logits (B, K).
        data: a `Split`, or a `DataBundle` (its test split is used).
        layers: module names with post-ReLU (B, C, H, W) outputs; default the last conv stage
            (`syncmodel.nets.conv_layers(model)[-1]`).
        max_images: first images used (None = all). Default 2000.
        batch_size: forward batch. Default 256.
        epsilon, mdl, max_steps: Sync clustering (`syncmodel.modules.find_modules`).
        top_k: top images per filter, category and part for location instability (ICNN's
            K). Default 100.
        quantile, iou_threshold: Network Dissection. Defaults 0.005, 0.04.
        ablation: run `module_ablation` (one stacked pass per batch). Default True.
        ablation_controls: random size-matched neuron sets per module (drawn among the live
            neurons, seeded by `seed`) for the `*_beyond_random` ablation keys; 0 leaves
            them NaN. Default 8.
        num_classes, image_size, part_names: default from the bundle / logits / images.
        device: default the model's device.
        seed: seed of the random halves and of the random ablation sets.
        picture_dir: if given, write the module grids and similarity matrix PNGs there.
        composite_only: compute only what the composites (`interpretability`, `_v2`, `_v1`) read
            (accuracy, neuron scores, distributedness, modules and their held-out consistency
            and purity) and skip
            the rest, ablation included; the report then holds those keys and the score,
            and the neurons table is empty. Default False.
    Returns:
        report: flat dict of floats/ints: "accuracy", "accuracy_class_{k}", "images",
            "eval_seconds", and per layer `LAYER_KEYS` (+ `LOCATION_KEYS` with landmarks,
            `DETECTOR_KEYS` with part masks); NaN where a metric is undefined (e.g.
            between_corr with fewer than 2 modules).
        neurons: `pyarrow.Table`, one row per neuron (see `_neuron_table` for the schema).
    """
    t0 = time.perf_counter()
    split = data.test if isinstance(data, DataBundle) else data
    if isinstance(data, DataBundle):
        num_classes = num_classes or data.num_classes
        image_size = image_size or data.image_size
        part_names = part_names or data.part_names or None
    n = len(split) if max_images is None else min(len(split), max_images)
    split = Split(
        split.images[:n],
        split.labels[:n],
        None if split.landmarks is None else split.landmarks[:n],
        None if split.part_masks is None else split.part_masks[:n],
    )
    if layers is None:
        from syncmodel.nets import conv_layers

        layers = conv_layers(model)[-1:]
    dev = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits, acts = _collect(model, split.images, list(layers), batch_size, dev)
        num_classes = num_classes or logits.shape[1]
        image_size = image_size or split.images.shape[-1]
        pred = logits.argmax(1)
        report: dict[str, float | int] = {
            "images": n,
            "accuracy": float((pred == split.labels).float().mean()),
        }
        for k in range(num_classes):
            of_k = split.labels == k
            report[f"accuracy_class_{k}"] = (
                float((pred[of_k] == k).float().mean()) if of_k.any() else math.nan
            )
        loader = [
            (split.images[s : s + batch_size], split.labels[s : s + batch_size])
            for s in range(0, n, batch_size)
        ]
        opts = dict(
            top_k=top_k, quantile=quantile, iou_threshold=iou_threshold, part_names=part_names,
            epsilon=epsilon, max_steps=max_steps, mdl=mdl, seed=seed, ablation=ablation,
            ablation_controls=ablation_controls, loader=loader, device=dev,
            accuracy=report["accuracy"], chance=_chance(split.labels, num_classes),
            composite_only=composite_only,
        )  # fmt: skip
        if composite_only:
            opts["ablation"] = False  # ablation does not enter the composite
        per_layer, layer_cols = {}, {}
        for name in layers:
            per_layer[name], layer_cols[name] = _layer(
                name, acts[name], split, model, num_classes, image_size, opts
            )
    finally:
        model.train(was_training)
    report.update(_merge(per_layer))
    if picture_dir is not None:
        from syncmodel.viz import module_grids, similarity_matrix

        for name in layers:
            modules = torch.tensor(layer_cols[name]["module"])
            module_grids(split.images, acts[name], modules, picture_dir, layer=name)
            stem = name.replace("/", "_").replace(".", "_")
            similarity_matrix(
                acts[name].mean((2, 3)), modules, Path(picture_dir) / f"{stem}_similarity.png",
                title=f"{name}: response correlation, ordered by module",
            )  # fmt: skip
    report["eval_seconds"] = time.perf_counter() - t0
    if composite_only:
        import pyarrow as pa

        return report, pa.table({})
    return report, _neuron_table(layer_cols)


def interpretability_estimate(
    model: nn.Module,
    split: Split,
    layers: list[str] | None = None,
    *,
    images: int = ESTIMATE_IMAGES,
    epsilon: float = 0.5,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> float:
    """The composite `interpretability` of `evaluate`, on the first `images` images of `split`:
    a cheap per-epoch signal for a scheduler (reported as `interp_estimate`).

    The same score (`syncmodel.metrics.score.interpretability`: accuracy gain, the collapse
    gates on functional units and the largest module, neuron scores, Sync modules with their
    chance-corrected held-out consistency and purity), computed on a
    small fixed sample instead of `evaluate`'s `max_images`, and only the parts the composite
    reads (`evaluate(composite_only=True)`: no module ablation, focus maps, MIS, location
    instability or detectors). Only the number of images differs from the final score, so
    its noise is that of a 256-image sample. The global RNG is left as it was (training with
    and without the estimate takes the same steps).

    Args:
        model, layers, epsilon, num_classes, device, seed: as `evaluate`.
        split: the images (the validation split during training); the first `images` are used.
        images: sample size. Default `ESTIMATE_IMAGES` (256).
    Returns:
        float in [0, 1]; NaN for an empty split.
    """
    n = min(len(split), images)
    if n == 0:
        return math.nan
    small = Split(split.images[:n], split.labels[:n])
    dev = torch.device(device) if device else next(model.parameters()).device
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        report, _ = evaluate(
            model, small, layers, max_images=None, epsilon=epsilon, ablation=False,
            ablation_controls=0, num_classes=num_classes, device=dev, seed=seed,
            composite_only=True,
        )  # fmt: skip
    return float(report["interpretability"])


def _chance(labels: Tensor, num_classes: int) -> float:
    """Accuracy of always answering the most frequent class of these labels."""
    return float(torch.bincount(labels.long(), minlength=num_classes).max()) / labels.numel()


def _merge(per_layer: dict[str, dict[str, float]]) -> dict[str, float | int]:
    """One layer: its keys as they are. Several: prefixed, plus the mean (counts: sum)."""
    if len(per_layer) == 1:
        return dict(next(iter(per_layer.values())))
    out: dict[str, float | int] = {}
    keys = dict.fromkeys(k for rep in per_layer.values() for k in rep)
    for key in keys:
        values = [rep[key] for rep in per_layer.values() if key in rep]
        if key in COUNT_KEYS:
            out[key] = int(sum(values))
        else:
            finite = [v for v in values if not math.isnan(v)]
            out[key] = sum(finite) / len(finite) if finite else math.nan
    for layer, rep in per_layer.items():
        out.update({f"{layer}/{k}": v for k, v in rep.items()})
    return out
