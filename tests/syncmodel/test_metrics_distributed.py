"""Distributedness and position information on hand-built responses and maps."""

from __future__ import annotations

import math

import torch

from syncmodel.metrics import distributedness, effective_neurons, position_information

C = 16


def _independent(n: int = 4000, c: int = C) -> torch.Tensor:
    return torch.rand(n, c, generator=torch.Generator().manual_seed(0))


def test_clones_count_as_one_neuron() -> None:
    one = _independent(c=1)
    clones = one * torch.linspace(0.5, 2.0, C)  # same response up to scale
    assert math.isclose(effective_neurons(clones), 1.0, rel_tol=1e-9)
    assert math.isclose(distributedness(clones), 1 / C, rel_tol=1e-9)


def test_independent_neurons_count_fully() -> None:
    assert distributedness(_independent()) > 0.95


def test_two_groups_of_clones_count_as_two() -> None:
    base = _independent(c=2)
    r = base.repeat_interleave(C // 2, dim=1)  # two uncorrelated groups of 8 clones
    assert abs(effective_neurons(r) - 2.0) < 0.01


def test_dead_and_constant_neurons_add_nothing() -> None:
    r = _independent()
    r[:, : C // 2] = 0.0  # dead
    r[:, C // 2 : C // 2 + 2] = 3.0  # constant
    assert abs(effective_neurons(r) - (C // 2 - 2)) < 0.2
    assert distributedness(torch.zeros(10, C)) == 0.0


def _maps(n: int, c: int, h: int) -> torch.Tensor:
    return torch.zeros(n, c, h, h)


def test_fixed_pixel_has_no_position_information() -> None:
    a = _maps(50, 1, 4)
    a[:, 0, 1, 2] = torch.rand(50, generator=torch.Generator().manual_seed(0)) + 0.5
    assert float(position_information(a)[0]) == 0.0


def test_one_pixel_maps_visiting_every_position_have_full_information() -> None:
    a = _maps(32, 1, 4)
    for i in range(32):
        a[i, 0, (i // 4) % 4, i % 4] = 1.0  # each of the 16 pixels twice
    assert math.isclose(float(position_information(a)[0]), 1.0, rel_tol=1e-5)


def test_uniform_maps_have_none_and_dead_neurons_are_nan() -> None:
    a = torch.ones(20, 2, 4, 4)
    a[:, 1] = 0.0
    info = position_information(a)
    assert abs(float(info[0])) < 1e-6 and math.isnan(float(info[1]))


def test_two_positions_give_one_of_four_bits() -> None:
    a = _maps(20, 1, 4)  # one-pixel maps at two positions: log 2 / log 16 = 1/4
    a[::2, 0, 0, 0] = 1.0
    a[1::2, 0, 3, 3] = 1.0
    assert math.isclose(float(position_information(a)[0]), 0.25, rel_tol=1e-5)
