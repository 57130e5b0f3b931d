"""Properties of the training objective (syncmodel.regularizer): hooks, strengths, schedules."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError
from syncmodel.regularizer import Regularizer, sync_normaliser
from syncmodel.sync import sync_loss


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = _block(1, 8)
        self.block2 = _block(8, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)).mean((2, 3)))  # (B, 4)


def _setup(seed: int = 0) -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x = torch.randn(16, 1, 6, 6)
    y = torch.randint(0, 4, (16,))
    return TinyNet(), x, y


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def test_zero_strengths_give_exactly_plain_ce_and_gradients() -> None:
    model, x, y = _setup()
    plain = copy.deepcopy(model)
    cfg = TrainConfig(lambda_focus=0.0, coupling_K=0.0)
    with Regularizer(model, cfg, ["block2"]) as reg:
        total, parts = reg.loss(model(x), y, epoch=3)
    total.backward()
    ce = nn.functional.cross_entropy(plain(x), y)
    ce.backward()
    assert torch.equal(total, ce)
    assert parts["focus"].item() == 0.0 and parts["sync"].item() == 0.0
    assert all(torch.equal(a, b) for a, b in zip(_grads(model), _grads(plain)))


def test_total_is_ce_plus_weighted_terms() -> None:
    model, x, y = _setup()
    cfg = TrainConfig(lambda_focus=0.1, coupling_K=0.3, k=3)
    with Regularizer(model, cfg, ["block1", "block2"]) as reg:
        total, parts = reg.loss(model(x), y, epoch=0)
    assert parts["focus"] > 0 and parts["sync"] > 0
    expected = parts["ce"] + 0.1 * parts["focus"] + 0.3 * parts["sync"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_warmup_disables_coupling() -> None:
    model, x, y = _setup()
    cfg = TrainConfig(coupling_K=1.0, k=3, warmup_epochs=2)
    with Regularizer(model, cfg, ["block2"]) as reg:
        logits = model(x)
        for epoch in (0, 1, 1.9):
            total, parts = reg.loss(logits, y, epoch)
            assert parts["sync"].item() == 0.0 and torch.equal(total, parts["ce"])
        _, parts = reg.loss(logits, y, epoch=2)
    assert parts["sync"].item() > 0


def test_epsilon_anneals_linearly_over_the_coupled_epochs() -> None:
    model, _, _ = _setup()
    cfg = TrainConfig(coupling_K=1.0, epochs=5, warmup_epochs=1, epsilon=0.5, epsilon_final=0.1)
    with Regularizer(model, cfg, ["block2"]) as reg:
        schedule = [reg.epsilon_at(e) for e in (0, 1, 2.5, 4, 9)]
    assert schedule == pytest.approx([0.5, 0.5, 0.3, 0.1, 0.1])


def test_sync_part_is_normalised_by_initial_epsilon() -> None:
    model, x, y = _setup()
    cfg = TrainConfig(coupling_K=1.0, k=3, epsilon=0.8)
    with Regularizer(model, cfg, ["block2"]) as reg:
        _, parts = reg.loss(model(x), y, 0)
        raw = sync_loss(reg.activations["block2"], 0.8, k=3)
    assert parts["sync"].item() == pytest.approx(raw.item() / sync_normaliser(0.8), rel=1e-6)


def test_unknown_layer_raises_config_error_naming_layers() -> None:
    model, _, _ = _setup()
    with pytest.raises(ConfigError, match="layers") as info:
        Regularizer(model, TrainConfig(), ["block3"])
    assert info.value.field == "layers"
    assert "'block3'" in str(info.value) and "block1, block2" in str(info.value)


def test_unknown_focus_kind_raises_config_error_naming_focus_kind() -> None:
    model, _, _ = _setup()
    with pytest.raises(ConfigError) as info:
        Regularizer(model, TrainConfig(lambda_focus=0.1, focus_kind="nope"), ["block2"])
    assert info.value.field == "focus_kind"


def test_hooks_are_removed() -> None:
    model, x, _ = _setup()
    reg = Regularizer(model, TrainConfig(lambda_focus=0.1), ["block2"])
    model(x)
    assert reg.activations["block2"].shape == (16, 16, 6, 6)
    reg.remove()
    model(x)
    assert not reg.activations and not model.block2._forward_hooks


def test_weight_descriptor_uses_last_conv_of_the_layer() -> None:
    model, x, y = _setup()
    cfg = TrainConfig(coupling_K=1.0, descriptor="weight", k=2)
    with Regularizer(model, cfg, ["block2"]) as reg:
        assert reg.convs["block2"] is model.block2[0]
        total, parts = reg.loss(model(x), y, 0)
    assert parts["sync"] > 0


def test_mean_neighbours_diagnostic_per_layer() -> None:
    model, x, _ = _setup()
    with Regularizer(model, TrainConfig(epsilon=10.0), ["block1", "block2"]) as reg:
        model(x)
        counts = reg.mean_neighbours()
    assert counts == {"block1": pytest.approx(7.0), "block2": pytest.approx(15.0)}


def test_focus_and_coupling_share_the_maps_marginals(monkeypatch: pytest.MonkeyPatch) -> None:
    """spread + response descriptors: the coupling's spatial means come from the focus term's
    marginals (one pass over the maps, not two), and the loss and every gradient are those of
    the two terms computed apart (float64: to rounding)."""
    import syncmodel.regularizer as regularizer_module
    from syncmodel.focus import focus_loss

    model, x, y = _setup()
    model, x = model.double(), x.double()
    apart = copy.deepcopy(model)
    cfg = TrainConfig(lambda_focus=0.2, coupling_K=0.3, epsilon=1.2)
    handed: list[bool] = []
    real = regularizer_module.sync_loss

    def spy(*args, means=None, **kwargs):  # noqa: ANN002, ANN003, ANN202
        handed.append(means is not None)
        return real(*args, means=means, **kwargs)

    monkeypatch.setattr(regularizer_module, "sync_loss", spy)
    with Regularizer(model, cfg, ["block1", "block2"]) as reg:
        total, parts = reg.loss(model(x), y, epoch=0)
    total.backward()
    assert handed == [True, True] and parts["sync"] > 0

    acts = {}
    hooks = [getattr(apart, n).register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o)) for n in ("block1", "block2")]
    logits = apart(x)
    for h in hooks:
        h.remove()
    focus = torch.stack([focus_loss(acts[n]) for n in acts]).mean()
    sync = torch.stack([real(acts[n], 1.2) for n in acts]).mean() / sync_normaliser(1.2)
    expected = nn.functional.cross_entropy(logits, y) + 0.2 * focus + 0.3 * sync
    expected.backward()
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)
    for a, b in zip(_grads(model), _grads(apart)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-14)
