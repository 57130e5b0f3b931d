"""The composite interpretability score: bounded, and each collapse factor zeroes or lowers it."""

from __future__ import annotations

import torch

from syncmodel.metrics import accuracy_gain, interpretability, neuron_scores

K = 4
NAN = float("nan")
GOOD = dict(distributedness=1.0, coverage=1.0, consistency=1.0, purity=1.0, largest_module=0.0)


def test_score_is_in_unit_interval() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = neuron_scores(
            torch.rand(16, generator=g), torch.rand(16, generator=g), torch.rand(16, generator=g), K
        )
        d, cov, ari, pur, big, acc = torch.rand(6, generator=g).tolist()
        value = interpretability(
            s, distributedness=d, coverage=cov, consistency=2 * ari - 1, purity=pur,
            largest_module=big, accuracy=acc, chance=0.25,
        )  # fmt: skip
        assert 0.0 <= value <= 1.0
    assert interpretability(torch.ones(4), **GOOD, accuracy=1.0, chance=0.25) == 1.0


def test_dead_neurons_lower_the_score() -> None:
    live = neuron_scores(torch.full((8,), 0.5), torch.full((8,), 0.8), torch.ones(8), K)
    info = torch.tensor([0.5] * 4 + [NAN] * 4)  # half the neurons never fire
    selectivity = torch.tensor([0.8] * 4 + [0.0] * 4)
    active = torch.tensor([1.0] * 4 + [0.0] * 4)
    half_dead = neuron_scores(info, selectivity, active, K)
    assert interpretability(half_dead, **GOOD) < interpretability(live, **GOOD)
    assert half_dead[4:].tolist() == [0.0] * 4


def test_fixed_position_or_rare_neurons_score_little() -> None:
    fixed_pixel = neuron_scores(torch.zeros(1), torch.ones(1), torch.ones(1), K)  # never moves
    rare = neuron_scores(torch.ones(1), torch.ones(1), torch.tensor([0.01]), K)  # 1% of images
    assert float(fixed_pixel) == 0.0 and float(rare) < 0.05


def test_one_module_of_everything_gets_no_module_credit() -> None:
    giant = {**GOOD, "largest_module": 1.0}
    assert interpretability(torch.zeros(4), **giant) == 0.0
    assert interpretability(torch.zeros(4), **GOOD) == 0.5


def test_degenerate_or_missing_modules_count_as_zero() -> None:
    undefined = {**GOOD, "coverage": NAN, "consistency": NAN, "purity": NAN}
    assert interpretability(torch.ones(3), **undefined) == 0.5


def test_clones_are_discounted_by_distributedness() -> None:
    # 64 copies of one perfect detector in one module: 0.99 under the old additive score
    clones = {**GOOD, "distributedness": 1 / 64, "largest_module": 1.0}
    assert interpretability(torch.ones(64), **clones) == 0.5 / 64


def test_accuracy_at_chance_zeroes_the_score() -> None:
    assert accuracy_gain(0.25, 0.25) == 0.0 and accuracy_gain(0.1, 0.25) == 0.0
    assert accuracy_gain(0.625, 0.25) == 0.5
    assert interpretability(torch.ones(4), **GOOD, accuracy=0.25, chance=0.25) == 0.0
