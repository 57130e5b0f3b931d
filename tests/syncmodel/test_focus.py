"""Properties of the focus regulariser (syncmodel.focus, docs/design.md §1.1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from syncmodel.errors import ConfigError
from syncmodel.focus import FOCUS_KINDS, focus_loss, focus_positions, spatial_spread

KINDS = ["spread", "template"]
POSITIONS = ["argmax", "centroid"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _one_hot_maps(b: int = 3, c: int = 4, h: int = 5, w: int = 6) -> torch.Tensor:
    idx = torch.randint(0, h * w, (b, c), generator=_gen())
    acts = F.one_hot(idx, h * w).float() * (1 + torch.rand(b, c, 1, generator=_gen(1)))
    return acts.view(b, c, h, w)  # (B, C, H, W)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("focus", POSITIONS)
def test_one_hot_maps_have_exactly_zero_loss(kind: str, focus: str) -> None:
    assert focus_loss(_one_hot_maps(), kind, focus).item() == 0.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("focus", POSITIONS)
def test_spread_maps_have_positive_loss(kind: str, focus: str) -> None:
    acts = torch.rand(2, 3, 6, 6, generator=_gen())
    assert focus_loss(acts, kind, focus).item() > 0.1


def test_spread_known_value_argmax_and_centroid() -> None:
    acts = torch.zeros(1, 1, 3, 3)
    acts[0, 0, 0, 0] = acts[0, 0, 0, 2] = 1.0  # corners (-1, -1) and (-1, 1)
    # argmax takes the first corner: (0 + 4) / 2; the centroid (-1, 0) is 1 from each.
    assert spatial_spread(acts, "argmax").item() == pytest.approx(2.0)
    assert spatial_spread(acts, "centroid").item() == pytest.approx(1.0)
    assert focus_positions(acts, "centroid")[0, 0].tolist() == pytest.approx([-1.0, 0.0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("focus", POSITIONS)
def test_loss_falls_under_gradient_steps(kind: str, focus: str) -> None:
    param = torch.randn(2, 3, 8, 8, generator=_gen()).requires_grad_()
    opt = torch.optim.Adam([param], lr=0.2)
    losses = []
    for _ in range(10):
        loss = focus_loss(F.softplus(param), kind, focus)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("kind", KINDS)
def test_dead_maps_add_no_loss_and_no_nan_grads(kind: str) -> None:
    param = torch.randn(2, 4, 5, 5, generator=_gen())
    param[:, :2] = -1.0  # channels 0 and 1 die after the ReLU
    param.requires_grad_()
    loss = focus_loss(F.relu(param), kind)
    loss.backward()
    alive_only = focus_loss(F.relu(param.detach()[:, 2:]), kind)
    assert loss.item() == pytest.approx(alive_only.item())
    assert torch.isfinite(param.grad).all()
    assert (param.grad[:, :2] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_all_dead_gives_zero_tensor_with_grad_path(kind: str) -> None:
    param = torch.full((2, 3, 4, 4), -1.0, requires_grad=True)
    loss = focus_loss(F.relu(param), kind)
    assert isinstance(loss, torch.Tensor) and loss.requires_grad
    assert loss.item() == 0.0
    loss.backward()
    assert (param.grad == 0).all()


def test_spatial_spread_is_nan_on_dead_maps_only() -> None:
    acts = torch.rand(2, 3, 4, 4, generator=_gen())
    acts[1, 2] = 0
    spread = spatial_spread(acts)
    assert spread.shape == (2, 3)
    assert spread[1, 2].isnan() and spread.isnan().sum() == 1


@pytest.mark.parametrize("kind", KINDS)
def test_loss_is_scale_invariant_per_filter_and_gradient_orthogonal_to_it(kind: str) -> None:
    # docs/design.md §4: the loss never pushes a filter's mass toward zero as a whole.
    acts = torch.rand(2, 3, 5, 5, generator=_gen(), dtype=torch.float64).requires_grad_()
    loss = focus_loss(acts, kind)
    (grad,) = torch.autograd.grad(loss, acts)
    scales = torch.tensor([7.0, 0.5, 3.0], dtype=torch.float64).view(1, 3, 1, 1)  # one per filter
    assert focus_loss(scales * acts.detach(), kind).item() == pytest.approx(loss.item(), rel=1e-9)
    assert (grad * acts.detach()).sum((0, 2, 3)).abs().max().item() < 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_loss_is_not_scale_invariant_per_image(kind: str) -> None:
    # Mass weighting: silencing the image where the filter is spread lowers the loss.
    acts = torch.zeros(2, 1, 5, 5, dtype=torch.float64)
    acts[0, 0, 2, 2] = 1.0  # focused
    acts[1, 0] = 1.0  # spread over the whole map
    quieter = acts.clone()
    quieter[1] *= 0.1
    assert focus_loss(quieter, kind).item() < focus_loss(acts, kind).item()


@pytest.mark.parametrize("kind", KINDS)
def test_near_silent_map_cannot_dominate_the_gradient(kind: str) -> None:
    acts = torch.rand(4, 1, 6, 6, generator=_gen(), dtype=torch.float64) + 0.1
    acts[3] *= 1e-3  # 1e-3 of the typical mass; min_mass lowered below that to keep it live
    acts.requires_grad_()
    (grad,) = torch.autograd.grad(focus_loss(acts, kind, min_mass=1e-4), acts)
    strong = grad[:3].flatten(1).norm(dim=1)  # (3,)
    weak = grad[3].norm()
    # Per-pixel gradient (f(p) - L_c) / T_c: same scale for every image of the filter. The old
    # per-map mean gave the weak map ~1000× the strong maps' gradient.
    assert weak <= 2 * strong.max()
    assert weak > 0


def test_near_silent_map_below_the_relative_cutoff_gets_no_gradient() -> None:
    acts = torch.rand(4, 1, 6, 6, generator=_gen(), dtype=torch.float64) + 0.1
    acts[3] *= 1e-3
    acts.requires_grad_()
    (grad,) = torch.autograd.grad(focus_loss(acts, "spread"), acts)  # min_mass 0.01 of the mean
    assert (grad[3] == 0).all() and (grad[:3] != 0).any()


def test_spread_loss_known_value_is_mass_weighted() -> None:
    acts = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    acts[0, 0, 0, 0] = acts[0, 0, 0, 2] = 1.0  # argmax (-1, -1): numerator 4, mass 2
    acts[1, 0, 1, 1] = 2.0  # one point: numerator 0, mass 2
    acts[1] *= 3.0  # mass 6: (4 + 0) / (2 + 6) = 0.5, where the per-map mean gives (2 + 0) / 2 = 1
    assert focus_loss(acts, "spread").item() == pytest.approx(0.5)


def test_template_is_low_near_the_focus_and_high_far_away() -> None:
    near = torch.zeros(1, 1, 8, 8)
    near[0, 0, 3, 3], near[0, 0, 3, 4] = 1.0, 0.5  # one pixel from the focus: template > 0
    far = torch.zeros(1, 1, 8, 8)
    far[0, 0, 0, 0], far[0, 0, 7, 7] = 1.0, 0.5  # 14 pixels away: template clipped at -1
    assert 0 < focus_loss(near, "template").item() < 1
    assert focus_loss(far, "template").item() == pytest.approx(1 - (1.0 - 0.5) / 1.5)


def test_bf16_autocast_computes_in_float32() -> None:
    acts = torch.rand(2, 3, 6, 6, generator=_gen()).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = focus_loss(acts.to(torch.bfloat16), "spread")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(acts.grad).all()


def test_unknown_kind_and_position_name_their_fields() -> None:
    acts = torch.rand(1, 1, 2, 2)
    with pytest.raises(ConfigError, match="focus_kind.*spread, template"):
        focus_loss(acts, "nope")
    with pytest.raises(ConfigError, match="focus_position"):
        focus_loss(acts, "spread", "middle")


def test_registered_kind_receives_focus_and_extra_opts(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def kind(acts: torch.Tensor, *, focus: str = "argmax", **opts: object) -> torch.Tensor:
        seen.update(focus=focus, **opts)
        return acts.sum()

    monkeypatch.setitem(FOCUS_KINDS._items, "probe", kind)
    targets = torch.tensor([1, 0])
    focus_loss(torch.rand(2, 1, 2, 2), "probe", "centroid", targets=targets)
    assert seen["focus"] == "centroid" and seen["targets"] is targets


def test_tables_built_while_torch_exports_are_not_cached() -> None:
    # MLflow's pt2 export of a `gate` net traces its forward mask, which reads the coordinate
    # grid; a grid cached from that trace is a fake tensor, and every later eager spread
    # (evaluation, training) became symbolic and failed.
    from syncmodel import focus
    from syncmodel.config import TrainConfig
    from syncmodel.nets import build_model, default_layers

    for table in (focus._axis, focus._marginal_matrix, focus._argmax_sq_offsets):
        table.cache_clear()
    config = TrainConfig(dataset="digits", width=8, focus_kind="gate", lambda_focus=0.1)
    net = build_model(config, 1, 10, 16).eval()
    with torch.no_grad():
        torch.export.export(net, (torch.zeros(2, 1, 16, 16),), dynamic_shapes=({0: torch.export.Dim("b")},))
    captured: list[torch.Tensor] = []
    layer = net.get_submodule(default_layers(config.backbone)[0])
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        net(torch.rand(3, 1, 16, 16))
    handle.remove()
    acts = captured[0]  # the maps the gate's mask ran on: the grid size the export traced
    assert isinstance(float(spatial_spread(acts).nansum()), float)  # eager, not symbolic
    h, w = acts.shape[-2:]
    assert all(type(t) is torch.Tensor for t in focus.coordinate_grid(h, w))
