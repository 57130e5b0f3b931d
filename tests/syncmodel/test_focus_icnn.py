"""The `icnn` kind (ICNN's released code) and the part-tying kinds `gate` and `outside`."""

from __future__ import annotations

import pytest
import torch

from syncmodel.checkpoint import load_checkpoint
from syncmodel.config import TrainConfig
from syncmodel.data import load_data
from syncmodel.focus import ICNNMask, focus_loss, icnn_loss
from syncmodel.nets import build_model
from syncmodel.regularizer import Regularizer
from syncmodel.training import inspect, train


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blob(b: int = 4, c: int = 2, side: int = 7) -> torch.Tensor:
    """Maps with one bright pixel at (2, 2) on a weak uniform floor: centroid near (2, 2)."""
    acts = torch.full((b, c, side, side), 0.01, dtype=torch.float32)
    acts[:, :, 2, 2] = 5.0
    return acts


def test_mask_is_one_at_the_rounded_centroid_and_follows_beta() -> None:
    mask_module = ICNNMask(2)
    mask, _ = mask_module.template(_blob())
    assert mask[0, 0, 2, 2] == 1.0
    # one pixel over in a 7-wide map is 1/3 in [-1, 1] units: 1 - beta/3 with beta = 2
    assert torch.isclose(mask[0, 0, 2, 3], torch.tensor(1 - 2 / 3))
    assert mask.min() == -1.0  # far corners are clipped at -1


def test_forward_mask_changes_the_next_layers_input() -> None:
    x = torch.rand(2, 2, 7, 7, generator=_gen())
    out = ICNNMask(2)(x)
    mask, _ = ICNNMask(2).template(x)
    torch.testing.assert_close(out, x * mask.clamp_min(0))
    assert (out[mask <= 0] == 0).all() and not torch.equal(out, x)


def test_next_layer_gradient_is_zero_outside_the_mask() -> None:
    x = torch.rand(2, 2, 7, 7, generator=_gen()).requires_grad_()
    module = ICNNMask(2)
    out = module(x)
    out.sum().backward()
    mask = module.last[1]
    assert (x.grad[mask <= 0] == 0).all() and (x.grad[mask > 0] > 0).all()


def _icnn_grad(x: torch.Tensor, targets: torch.Tensor, filter_class: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    module = ICNNMask(x.shape[1]).train()
    x = x.clone().requires_grad_()
    module(x)
    loss = icnn_loss(x, targets=targets, filter_class=filter_class, num_classes=2, mask_module=module)
    loss.backward()
    return x.grad, module.last[1]


def test_category_images_pulled_into_the_template_others_pushed_down() -> None:
    x = torch.rand(4, 1, 7, 7, generator=_gen()) + 0.1
    targets = torch.tensor([0, 0, 1, 1])
    grad, mask = _icnn_grad(x, targets, torch.tensor([0]))
    pos = grad[:2, 0]  # category images: -coef * mask, coef > 0 on average (normalised by its mean)
    coef = -(pos / mask[:2, 0])
    assert torch.allclose(coef, coef[:, :1, :1].expand_as(coef), rtol=1e-4)  # one coefficient per map
    assert coef.mean() > 0
    # descent raises x where the template is positive, lowers it where it is negative
    assert (pos[mask[:2, 0] > 0] * coef.sign()[mask[:2, 0] > 0] < 0).all()
    neg = grad[2:, 0]  # other categories: a uniform push down
    assert (neg > 0).all()
    assert torch.allclose(neg, neg[:, :1, :1].expand_as(neg))


def test_descent_raises_the_category_images_template_agreement() -> None:
    x = torch.rand(4, 1, 7, 7, generator=_gen(3)) + 0.1
    targets = torch.tensor([0, 0, 1, 1])
    grad, mask = _icnn_grad(x, targets, torch.tensor([0]))
    stepped = (x - 1.0 * grad).clamp_min(0)
    agree = lambda a: (a[:2, 0] * mask[:2, 0]).mean()  # noqa: E731
    assert agree(stepped) > agree(x)
    assert stepped[2:].mean() < x[2:].mean()


def test_beta_moves_toward_its_bounded_target() -> None:
    module = ICNNMask(1)
    strength = torch.ones(2, 1)
    own = torch.ones(2, 1)
    module.update_beta(strength, torch.full((2, 1), 0.5), own)  # target 3/0.5 = 6 → clamped to 3
    assert torch.isclose(module.beta, torch.tensor([2.0 + 0.05 * (3.0 - 2.0)])).all()
    module.beta.fill_(2.0)
    module.update_beta(strength, torch.full((2, 1), 100.0), own)  # target 0.03 → clamped to 1.5
    assert module.beta.item() < 2.0


def _model_cfg(kind: str) -> tuple[torch.nn.Module, TrainConfig]:
    torch.manual_seed(0)
    cfg = TrainConfig(lambda_focus=0.1, focus_kind=kind)
    return build_model(cfg, 1, 4, 8), cfg


def test_build_model_attaches_the_mask_only_for_forward_kinds() -> None:
    model, _ = _model_cfg("icnn")
    assert "block3" in model.focus_masks and "focus_masks.block3.beta" in model.state_dict()
    plain = build_model(TrainConfig(lambda_focus=0.1, focus_kind="spread"), 1, 4, 8)
    assert not hasattr(plain, "focus_masks")
    assert not hasattr(build_model(TrainConfig(lambda_focus=0.0, focus_kind="icnn"), 1, 4, 8), "focus_masks")


def test_icnn_trains_through_the_regularizer() -> None:
    model, cfg = _model_cfg("icnn")
    x, y = torch.rand(8, 1, 8, 8, generator=_gen()), torch.arange(8) % 4
    with Regularizer(model, cfg, ["block3"]) as reg:
        total, parts = reg.loss(model(x), y, 0)
        total.backward()
    assert torch.isfinite(total) and parts["focus"] != 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_gate_masks_the_forward_pass_and_spreads_the_ungated_map() -> None:
    model, cfg = _model_cfg("gate")
    model.train()
    x, y = torch.rand(8, 1, 8, 8, generator=_gen()), torch.arange(8) % 4
    with Regularizer(model, cfg, ["block3"]) as reg:
        logits = model(x)
        gate = model.focus_masks["block3"]
        raw, g, _ = gate.last
        torch.testing.assert_close(reg.activations["block3"], raw * g)
        assert (g <= 1).all() and (g.flatten(2).amax(-1) == 1).all()  # 1 at the argmax focus
        _, parts = reg.loss(logits, y, 0)
    assert parts["focus"].item() == focus_loss(raw.detach(), "spread").item()


def test_outside_is_zero_for_a_compact_blob_and_counts_far_mass() -> None:
    acts = torch.zeros(1, 1, 9, 9)
    acts[0, 0, 3:6, 3:6] = 1.0  # 3×3 blob; 1 px = 0.25, so every pixel lies within 0.36 of the centre
    assert focus_loss(acts, "outside", "centroid", radius=0.4).item() == 0.0
    acts[0, 0, 0, 8] = 1.0  # a far pixel: 1 of a total mass 9 + 1 + 1
    acts[0, 0, 4, 4] = 2.0  # keeps the argmax at the blob's centre
    loss = focus_loss(acts, "outside", "argmax", radius=0.4).item()
    assert abs(loss - 1.0 / 11.0) < 1e-6


def test_outside_lets_a_filter_go_silent_where_it_would_fire_away_from_its_focus() -> None:
    acts = torch.zeros(2, 1, 9, 9)
    acts[0, 0, 4, 4] = 1.0
    acts[1, 0, 4, 4], acts[1, 0, 0, 0], acts[1, 0, 8, 8] = 1.0, 0.9, 0.9
    quiet = acts.clone()
    quiet[1] *= 0.1
    assert focus_loss(quiet, "outside").item() < focus_loss(acts, "outside").item()


@pytest.mark.parametrize("kind", ["icnn", "gate"])
def test_forward_mask_kinds_train_and_reload_from_a_checkpoint(kind: str, tmp_path) -> None:
    fast = dict(dataset="digits", n_train=128, epochs=1, width=8, batch_size=64, device="cpu")
    data = load_data(TrainConfig(**fast))
    result = train(TrainConfig(**fast, lambda_focus=0.1, focus_kind=kind), data=data, out_dir=tmp_path)
    assert result.status == "ok"
    model, config, meta = load_checkpoint(result.checkpoint)
    assert hasattr(model, "focus_masks")  # the reloaded model masks its forward pass too
    again = inspect(model, data.test, meta["layers"], config.epsilon, torch.device("cpu"))
    assert again["acc"] == result.metrics["test_acc"]
