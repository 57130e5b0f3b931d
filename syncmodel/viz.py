"""Module pictures (PNG): top-activating images per neuron of each module, and the neuron
similarity matrix ordered by module. People look at these to trust a module.

matplotlib is imported inside the functions and used through its Agg canvas (no pyplot, no
global backend switch), so `import syncmodel.viz` stays cheap and safe in any process.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


def _display(images: Tensor) -> Tensor:
    """(N, C, H, W) normalised images → (N, H, W, 3) or (N, H, W) in [0, 1], each min-max."""
    x = images.float()
    lo = x.flatten(1).amin(1)[:, None, None, None]
    hi = x.flatten(1).amax(1)[:, None, None, None]
    x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x.permute(0, 2, 3, 1) if x.shape[1] == 3 else x[:, 0]


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib types are lazy
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _grid(
    images: Tensor,
    acts: Tensor,
    neurons: list[int],
    title: str,
    module_of: Tensor,
    path: Path,
    top: int,
    dpi: int,
) -> Path:
    """One mosaic (a row per neuron, its top images) drawn as a single image: fast to render."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    peak = acts.flatten(2).amax(-1)  # (N, C)
    h, w = images.shape[-2:]
    shown = _display(images)
    if shown.dim() == 3:  # grey → RGB
        shown = shown[..., None].expand(-1, -1, -1, 3)
    rows, cols = len(neurons), min(top, images.shape[0])
    tops = [peak[:, c].topk(cols).indices for c in neurons]  # image ids per neuron
    maps = torch.stack(
        [
            F.interpolate(acts[idx, c][:, None], size=(h, w), mode="bilinear")[:, 0]
            for idx, c in zip(tops, neurons)
        ]
    )  # (rows, cols, H, W)
    vmax = float(maps.max()) or 1.0  # one colour scale for the whole figure
    level = (maps / vmax).clamp(0, 1)
    heat = torch.from_numpy(
        colormaps["turbo"](level.numpy())[..., :3]
    ).float()  # (rows, cols, H, W, 3)
    alpha = 0.75 * level[..., None]  # activation 0 shows the image alone
    base = torch.stack([shown[idx] for idx in tops])  # (rows, cols, H, W, 3)
    panels = (1 - alpha) * base + alpha * heat
    gap = max(1, h // 16)
    mosaic = torch.ones(rows * (h + gap) - gap, cols * (w + gap) - gap, 3)
    for r in range(rows):
        for j in range(cols):
            mosaic[r * (h + gap) : r * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = panels[
                r, j
            ]
    fig = _figure(1.25 * cols + 1.9, 1.25 * rows + 0.8)
    ax = fig.add_axes((0.1, 0.03, 0.76, 1 - 0.7 / (1.25 * rows + 0.8) - 0.03))
    ax.imshow(mosaic.numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * (h + gap) for r in range(rows)])
    ax.set_yticklabels(
        [
            f"n{c} · {'m' + str(int(module_of[c])) if module_of[c] >= 0 else 'unsync'}"
            for c in neurons
        ],
        fontsize=8,
    )
    for r, (c, idx) in enumerate(zip(neurons, tops)):
        for j in range(cols):
            ax.text(j * (w + gap) + 0.5, r * (h + gap) + 0.5, f"#{int(idx[j])}: {float(peak[idx[j], c]):.2f}",
                    fontsize=6, color="white", va="top", ha="left",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})  # fmt: skip
    ax.set_title(title + "  (image #: peak activation)", fontsize=9)
    bar = fig.add_axes((0.89, 0.1, 0.025, 0.75))
    mappable = ScalarMappable(Normalize(0, vmax), colormaps["turbo"])
    fig.colorbar(mappable, cax=bar).set_label("activation (one scale per figure)", fontsize=7)
    fig.savefig(path, dpi=dpi)
    return path


def module_grids(
    images: Tensor,
    acts: Tensor,
    modules: Tensor,
    out_dir: str | Path,
    layer: str = "layer",
    top: int = 6,
    max_neurons: int = 8,
    max_modules: int = 12,
    unsynchronised: int = 8,
    dpi: int = 90,
) -> list[Path]:
    """One PNG per module: a row per neuron with its top images and the map overlaid.

    Rows are labelled with the neuron id and its module, panels with the image id and the
    neuron's peak activation on it; all maps of a figure share one colour scale (colorbar).

    Args:
        images: (N, C_in, H, W) the images the activations were taken on.
        acts: (N, C, h, w) activations of the layer.
        modules: (C,) module ids, -1 = unsynchronised.
        out_dir: folder for `{layer}_module{m}.png` (and `{layer}_unsynchronised.png`).
        layer: layer name, used in file names and titles.
        top: images per neuron. Default 6.
        max_neurons: neurons per module shown (highest mean activation first). Default 8.
        max_modules: largest modules drawn. Default 12.
        unsynchronised: live unsynchronised neurons drawn in one extra figure (0 = none).
        dpi: resolution. Default 90.
    Returns:
        the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acts = torch.as_tensor(acts).float()
    mods = torch.as_tensor(modules).long()
    mean = acts.mean((0, 2, 3))  # (C,)
    stem = layer.replace("/", "_").replace(".", "_")
    paths = []
    n_mod = int(mods.max()) + 1 if mods.numel() and mods.max() >= 0 else 0
    for m in range(min(n_mod, max_modules)):
        members = (mods == m).nonzero().squeeze(1)
        members = members[mean[members].argsort(descending=True)][:max_neurons].tolist()
        title = f"{layer} · module m{m} ({int((mods == m).sum())} neurons)"
        paths.append(
            _grid(images, acts, members, title, mods, out / f"{stem}_module{m}.png", top, dpi)
        )
    alone = ((mods < 0) & (mean > 0)).nonzero().squeeze(1)
    if unsynchronised and alone.numel():
        alone = alone[mean[alone].argsort(descending=True)][:unsynchronised].tolist()
        title = f"{layer} · unsynchronised neurons (highest mean activation)"
        paths.append(
            _grid(images, acts, alone, title, mods, out / f"{stem}_unsynchronised.png", top, dpi)
        )
    return paths


def similarity_matrix(
    responses: Tensor, modules: Tensor, path: str | Path, title: str = "", dpi: int = 100
) -> Path:
    """Neuron response-correlation matrix, ordered by module, module boundaries drawn.

    Args:
        responses: (N, C) per-image responses (spatial means) of the layer's neurons.
        modules: (C,) module ids, -1 = unsynchronised (placed last, after a thicker line).
        path: PNG file to write.
        title: figure title.
    Returns:
        path.
    """
    r = torch.as_tensor(responses).double()
    mods = torch.as_tensor(modules).long()
    z = r - r.mean(0)
    z = z / z.norm(dim=0).clamp_min(1e-12)
    key = torch.where(mods < 0, mods.max().clamp_min(0) + 1, mods) * (mods.numel() + 1)
    order = (key + torch.arange(mods.numel())).argsort()
    corr = (z.T @ z)[order][:, order].numpy()
    fig = _figure(7.5, 6.5)
    ax = fig.add_subplot()
    image = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).set_label("response correlation")
    sorted_mods = mods[order]
    n_mod = int(mods.max()) + 1 if mods.numel() and mods.max() >= 0 else 0
    ticks, labels = [], []
    for m in range(n_mod):
        where = (sorted_mods == m).nonzero().squeeze(1)
        lo, hi = int(where.min()) - 0.5, int(where.max()) + 0.5
        ax.add_patch(_rect(lo, hi))
        ticks.append((lo + hi) / 2)
        labels.append(f"m{m}")
    start = int((sorted_mods >= 0).sum())
    if 0 < start < mods.numel():
        for line in (ax.axhline, ax.axvline):
            line(start - 0.5, color="black", linewidth=1.5)
    if 0 < n_mod <= 30:
        ax.set_xticks(ticks, labels, fontsize=7, rotation=90)
        ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel(f"neurons by module ({n_mod} modules; unsynchronised last)")
    ax.set_title(title or "neuron similarity, ordered by module")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=dpi)
    return Path(path)


def _rect(lo: float, hi: float):  # noqa: ANN202
    from matplotlib.patches import Rectangle

    return Rectangle((lo, lo), hi - lo, hi - lo, fill=False, edgecolor="black", linewidth=1.0)
