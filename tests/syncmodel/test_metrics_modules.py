"""Module consistency, specificity and ablation on hand-built partitions and a toy model."""

from __future__ import annotations

import math

import torch
from torch import nn

from syncmodel.metrics import (
    heldout_specificity,
    largest_module_share,
    module_ablation,
    module_consistency,
    module_specificity,
)


def test_partition_agrees_with_itself() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, -1, 2, 2])
    assert module_consistency(labels, labels) == {"ari": 1.0, "nmi": 1.0, "degenerate": False}


def test_degenerate_partitions_get_no_consistency() -> None:
    one = torch.zeros(8, dtype=torch.long)  # everything one module
    alone = torch.full((8,), -1)  # everything unsynchronised
    some = torch.tensor([0, 0, 1, 1, -1, -1, -1, -1])
    for a, b in ((one, one), (alone, alone), (one, some), (some, alone)):
        cons = module_consistency(a, b)
        assert cons["degenerate"] and math.isnan(cons["ari"]) and math.isnan(cons["nmi"])


def test_largest_module_share() -> None:
    assert largest_module_share(torch.zeros(8, dtype=torch.long)) == 1.0
    assert largest_module_share(torch.tensor([0, 0, 0, 1, 1, -1, -1, -1])) == 3 / 8
    assert largest_module_share(torch.full((4,), -1)) == 0.0


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


def test_heldout_specificity_drops_correlation_found_in_one_half_only() -> None:
    g = torch.Generator().manual_seed(0)
    n = 400
    r = torch.rand(n, 4, generator=g)
    shared = torch.rand(n // 2, generator=g)
    r[: n // 2, 0] = r[: n // 2, 1] = shared  # neurons 0, 1 identical on half A only
    r[: n // 2, 2] = r[: n // 2, 3] = 1 - shared  # and 2, 3
    labels = torch.arange(n) % 2
    halves = (torch.arange(n // 2), torch.arange(n // 2, n))
    found_a = torch.tensor([0, 0, 1, 1])  # what Sync finds on half A
    none_b = torch.full((4,), -1)  # nothing on half B
    in_sample = module_specificity(r[halves[0]], found_a, labels[halves[0]])
    held = heldout_specificity(r, labels, halves, (found_a, none_b))
    assert in_sample["within_corr"] > 0.99 and in_sample["specificity"] > 1.9
    assert abs(held["within_corr"]) < 0.2 and abs(held["specificity"]) < 0.3


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


class _Sum(nn.Module):
    """One logit per class from 4 channels each; class k's channels carry class k."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Identity())
        self.fc = nn.Linear(12, 3, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(3).repeat_interleave(4, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(x).mean((2, 3)))


def _sum_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    y = torch.arange(30) % 3
    x = torch.nn.functional.one_hot(y, 3).float().repeat_interleave(4, dim=1)
    x = x + 0.1  # every channel fires a little on every image
    return [(x[:, :, None, None].expand(-1, -1, 2, 2), y)]


def test_random_control_matches_the_module_size_and_is_seeded() -> None:
    mods = torch.tensor([0] * 4 + [-1] * 8)  # all four channels of class 0
    result = module_ablation(_Sum(), "block", mods, _sum_batches(), controls=16, seed=3)
    again = module_ablation(_Sum(), "block", mods, _sum_batches(), controls=16, seed=3)
    assert result["random_drop"].shape == (1, 3)
    assert torch.equal(result["random_drop"], again["random_drop"])
    # random 4 of 12 rarely hit all of class 0's channels: the module costs more than its size
    assert result["drop"][0, 0] == 1.0
    assert result["random_drop"][0, 0] < 0.5


def test_ablating_the_whole_pool_is_no_more_than_random() -> None:
    mods = torch.tensor([0] * 12)  # one module of everything: random sets are the same set
    result = module_ablation(_Sum(), "block", mods, _sum_batches(), controls=4)
    assert torch.equal(result["drop"], result["random_drop"])


def test_random_sets_are_drawn_from_the_pool_only() -> None:
    mods = torch.tensor([0] * 4 + [-1] * 8)
    pool = torch.tensor([False] * 8 + [True] * 4)  # only class 2's channels
    result = module_ablation(_Sum(), "block", mods, _sum_batches(), controls=3, pool=pool)
    assert result["random_drop"][0].tolist() == [0.0, 0.0, 1.0]
