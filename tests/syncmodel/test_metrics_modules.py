"""Module consistency, specificity and ablation on hand-built partitions and a toy model."""

from __future__ import annotations

import torch
from torch import nn

from syncmodel.metrics import module_ablation, module_consistency, module_specificity


def test_partition_agrees_with_itself() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, -1, 2, 2])
    assert module_consistency(labels, labels) == {"ari": 1.0, "nmi": 1.0}


def test_random_partitions_agree_about_zero() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, 8, (2000,), generator=g), torch.randint(0, 8, (2000,), generator=g)
    assert abs(module_consistency(a, b)["ari"]) < 0.02


def test_unsynchronised_neurons_are_singletons_not_a_module() -> None:
    a = torch.tensor([0, 0, -1, -1, -1, -1])
    b = torch.tensor([0, 0, 1, 1, 1, 1])  # "all -1 are together" would make these identical
    assert module_consistency(a, b)["ari"] < 1.0


def test_specific_modules_correlate_within_and_respond_to_one_class() -> None:
    labels = torch.arange(300) % 3
    g = torch.Generator().manual_seed(0)
    cols = [(labels == k).float()[:, None] + 0.1 * torch.rand(300, 2, generator=g) for k in (0, 1)]
    spec = module_specificity(torch.cat(cols, 1), torch.tensor([0, 0, 1, 1]), labels)
    assert spec["within_corr"] > 0.9 and spec["between_corr"] < 0
    assert spec["class_purity"] > 0.85
    assert spec["module_class"].tolist() == [0, 1]


class _Toy(nn.Module):
    """Channel k of `block` carries class k; the head reads class k from channel k only."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Identity())
        self.fc = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(x).mean((2, 3)))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    y = torch.arange(30) % 3
    x = torch.nn.functional.one_hot(y, 3).float()[:, :, None, None].expand(-1, -1, 2, 2)
    return [(x[:16], y[:16]), (x[16:], y[16:])]


def test_ablating_a_module_costs_its_own_class() -> None:
    model = _Toy()
    result = module_ablation(model, "block", torch.tensor([-1, 0, -1]), _batches())
    assert result["base"].tolist() == [1.0, 1.0, 1.0]
    drop = result["drop"][0]  # module 0 = channel 1 = class 1
    assert drop[1] == 1.0 and drop[0] == 0.0 and drop[2] == 0.0


def test_cached_and_per_module_ablation_agree() -> None:
    model = _Toy()
    mods = torch.tensor([0, 1, 1])
    batches = _batches()
    cached = torch.cat([x for x, _ in batches])
    fast = module_ablation(model, "block", mods, batches, cached=cached)["drop"]
    slow = module_ablation(model, "block", mods, batches)["drop"]
    assert torch.equal(fast, slow)


class _Residual(_Toy):
    """A skip connection around `block`: stacking copies at `block` cannot be exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc((self.block(x) + x).mean((2, 3)))


def test_residual_models_fall_back_to_exact_passes() -> None:
    model = _Residual()
    result = module_ablation(model, "block", torch.tensor([-1, 0, -1]), _batches())
    assert result["drop"][0].tolist() == [0.0, 0.0, 0.0]  # the skip still carries class 1
    assert model.training  # its training flag is restored
