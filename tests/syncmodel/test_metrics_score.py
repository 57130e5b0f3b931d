"""The composite interpretability score: bounded, and dead or constant neurons lower it."""

from __future__ import annotations

import torch

from syncmodel.metrics import interpretability, neuron_scores

K = 4


def test_score_is_in_unit_interval() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = neuron_scores(
            torch.rand(16, generator=g), torch.rand(16, generator=g), torch.rand(16, generator=g), K
        )
        value = interpretability(s, *torch.rand(3, generator=g).tolist())
        assert 0.0 <= value <= 1.0
    assert interpretability(torch.ones(4), 1.0, 1.0, 1.0) == 1.0


def test_dead_neurons_lower_the_score() -> None:
    live = neuron_scores(torch.full((8,), 0.2), torch.full((8,), 0.8), torch.ones(8), K)
    entropy = torch.tensor([0.2] * 4 + [float("nan")] * 4)  # half the neurons never fire
    selectivity = torch.tensor([0.8] * 4 + [0.0] * 4)
    active = torch.tensor([1.0] * 4 + [0.0] * 4)
    half_dead = neuron_scores(entropy, selectivity, active, K)
    assert interpretability(half_dead, 0.0, 0.0, 0.0) < interpretability(live, 0.0, 0.0, 0.0)
    assert half_dead[4:].tolist() == [0.0] * 4


def test_focused_but_constant_or_rare_neurons_score_little() -> None:
    fixed_pixel = neuron_scores(torch.zeros(1), torch.zeros(1), torch.ones(1), K)  # no selectivity
    rare = neuron_scores(torch.zeros(1), torch.ones(1), torch.tensor([0.01]), K)  # 1% of images
    assert float(fixed_pixel) == 0.0 and float(rare) < 0.05


def test_missing_modules_count_as_zero() -> None:
    assert interpretability(torch.ones(3), float("nan"), float("nan"), float("nan")) == 0.5
