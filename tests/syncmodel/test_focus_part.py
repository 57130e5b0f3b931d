"""Properties of the part-tied focus kind `class_spread` (syncmodel.focus, docs/design.md §4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError
from syncmodel.focus import class_spread_loss, focus_loss, spatial_spread, spread_loss
from syncmodel.nets import build_model
from syncmodel.regularizer import Regularizer


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _maps(b: int = 6, c: int = 3, side: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, side, side, generator=_gen(seed), dtype=torch.float64)  # (B, C, H, W)


TARGETS = torch.tensor([0, 0, 0, 1, 1, 1])
OWN = torch.tensor([0, 0, 1])  # filters 0, 1 belong to class 0, filter 2 to class 1


def _grad(acts: torch.Tensor, **opts: object) -> torch.Tensor:
    acts = acts.clone().requires_grad_(True)
    class_spread_loss(acts, targets=TARGETS, filter_class=OWN, **opts).backward()
    return acts.grad


def _model_and_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """simple_cnn for 4 classes of 8×8 one-channel images, and a batch of 8 (two per class)."""
    torch.manual_seed(0)
    model = build_model(TrainConfig(), 1, 4, 8)
    return model, torch.rand(8, 1, 8, 8, generator=_gen()), torch.arange(8) % 4


def test_zero_strength_gives_exactly_cross_entropy() -> None:
    model, x, y = _model_and_batch()
    cfg = TrainConfig(lambda_focus=0.0, focus_kind="class_spread", coupling_K=0.0)
    with Regularizer(model, cfg, ["block3"]) as reg:
        logits = model(x)
        total, parts = reg.loss(logits, y, 0)
    assert torch.equal(total, F.cross_entropy(logits, y))
    assert reg.class_means == {}  # nothing tracked when the term is off


def test_without_offclass_and_one_class_it_is_the_plain_spread() -> None:
    acts = _maps()
    same = torch.zeros(6, dtype=torch.long)
    got = class_spread_loss(
        acts, targets=same, filter_class=torch.zeros(3, dtype=torch.long), offclass=0.0
    )
    assert got.item() == pytest.approx(spread_loss(acts).item())


def test_off_class_map_gets_suppressed() -> None:
    grad = _grad(_maps(), offclass=1.0)
    # filter 0 (class 0) on images of class 1: every pixel's gradient is positive, so descent
    # lowers the whole off-class map
    assert (grad[3:, 0] > 0).all()
    acts = _maps()
    share = lambda a: a[3:, 0].sum() / a[:, 0].sum()  # noqa: E731
    assert share(acts - 0.05 * grad) < share(acts)


def test_own_class_map_focuses() -> None:
    acts = _maps()
    grad = _grad(acts, offclass=0.0)
    stepped = (acts - 0.5 * grad).clamp_min(0)
    before, after = spatial_spread(acts)[:3, 0], spatial_spread(stepped)[:3, 0]
    assert (after < before).all()
    assert grad[3:, 0].abs().max() == 0  # off-class maps are not focused, only suppressed


def test_dead_maps_add_nothing() -> None:
    acts = _maps()
    base = class_spread_loss(acts, targets=TARGETS, filter_class=OWN)
    dead = acts.clone()
    dead[0, 0] = 0.0  # one dead own-class map...
    dead = torch.cat([dead, torch.zeros(6, 1, 5, 5, dtype=dead.dtype)], 1)  # ...and a dead filter
    grad = dead.clone().requires_grad_(True)
    loss = class_spread_loss(grad, targets=TARGETS, filter_class=torch.tensor([0, 0, 1, 0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.all(grad.grad[:, 3] == 0)
    # the dead own-class map is out of the spread mean; only the off-class share pulls it up
    assert torch.all(grad.grad[0, 0] <= 0)
    spread_only = dead.clone().requires_grad_(True)
    class_spread_loss(
        spread_only, targets=TARGETS, filter_class=torch.tensor([0, 0, 1, 0]), offclass=0.0
    ).backward()
    assert torch.all(spread_only.grad[0, 0] == 0)
    # the dead filter is left out of both means; with no dead map the loss is unchanged
    assert class_spread_loss(acts, targets=TARGETS, filter_class=OWN).item() == base.item()
    assert torch.isfinite(
        class_spread_loss(torch.zeros(6, 3, 5, 5), targets=TARGETS, filter_class=OWN)
    )


@pytest.mark.parametrize("offclass", [0.0, 1.0, 5.0])
def test_gradient_never_shrinks_a_filter_as_a_whole(offclass: float) -> None:
    acts = _maps(seed=3)
    grad = _grad(acts, offclass=offclass)
    # scale invariance per filter (Euler): <grad, A[:, c]> = 0, so no step rescales a filter
    radial = (grad * acts).sum((0, 2, 3))  # (C,)
    assert radial.abs().max().item() < 1e-12
    scaled = class_spread_loss(3.0 * acts, targets=TARGETS, filter_class=OWN, offclass=offclass)
    assert scaled.item() == pytest.approx(
        class_spread_loss(acts, targets=TARGETS, filter_class=OWN, offclass=offclass).item()
    )


def test_filter_class_defaults_to_the_batch_argmax() -> None:
    acts = _maps()
    acts[:3, 2] *= 0.1  # filter 2 responds mostly to class 1; filters 0, 1 equally → argmax
    explicit = class_spread_loss(
        acts,
        targets=TARGETS,
        num_classes=2,
        filter_class=torch.tensor(
            [
                int(acts[:3, 0].mean() < acts[3:, 0].mean()),
                int(acts[:3, 1].mean() < acts[3:, 1].mean()),
                1,
            ]
        ),
    )
    assert class_spread_loss(acts, targets=TARGETS, num_classes=2).item() == pytest.approx(
        explicit.item()
    )


def test_regularizer_tracks_running_class_means_and_resets() -> None:
    model, x, y = _model_and_batch()
    cfg = TrainConfig(lambda_focus=0.1, focus_kind="class_spread", focus_class_momentum=0.5)
    with Regularizer(model, cfg, ["block3"]) as reg:
        reg.loss(model(x), y, 0)
        first = reg.class_means["block3"][0].clone()  # (K, C): the first batch, set directly
        x2 = torch.rand(8, 1, 8, 8, generator=_gen(1))
        reg.loss(model(x2), y, 0)
        second = reg.class_means["block3"][0]
        assert first.shape == (4, 64)
        # half way between the two batches' class means
        model(x2)
        batch = torch.stack([reg.activations["block3"][y == k].mean((0, 2, 3)) for k in range(4)])
        assert torch.allclose(second, 0.5 * first + 0.5 * batch.detach(), atol=1e-6)
        reg.reset_class_means()
        assert reg.class_means == {}


def test_config_ranges_for_the_new_fields() -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(focus_offclass=-1.0)
    assert info.value.field == "focus_offclass"
    with pytest.raises(ConfigError) as info:
        TrainConfig(focus_class_momentum=1.0)
    assert info.value.field == "focus_class_momentum"


def test_focus_loss_dispatches_by_name() -> None:
    acts = _maps()
    got = focus_loss(acts, "class_spread", targets=TARGETS, filter_class=OWN)
    assert got.item() == class_spread_loss(acts, targets=TARGETS, filter_class=OWN).item()
