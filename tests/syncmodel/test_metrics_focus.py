"""Focus metrics: a one-pixel map is perfectly focused, a uniform one not at all."""

from __future__ import annotations

import torch

from syncmodel.metrics import peak_mass, spatial_entropy, spatial_spread


def _maps() -> torch.Tensor:
    acts = torch.zeros(1, 3, 8, 8)
    acts[0, 0, 2, 5] = 3.0  # one pixel
    acts[0, 1] = 1.0  # uniform
    return acts  # channel 2 dead


def test_point_map_has_zero_entropy_and_full_peak_mass() -> None:
    acts = _maps()
    assert float(spatial_entropy(acts)[0, 0]) == 0.0
    assert float(peak_mass(acts)[0, 0]) == 1.0
    assert float(spatial_spread(acts)[0, 0]) == 0.0


def test_uniform_map_has_entropy_one() -> None:
    assert abs(float(spatial_entropy(_maps())[0, 1]) - 1.0) < 1e-6


def test_dead_maps_are_nan() -> None:
    acts = _maps()
    for metric in (spatial_entropy, peak_mass, spatial_spread):
        assert torch.isnan(metric(acts)[0, 2])


def test_peak_mass_counts_the_mass_near_the_focus() -> None:
    acts = torch.zeros(1, 1, 9, 9)
    acts[0, 0, 4, 4] = 2.0
    acts[0, 0, 0, 0] = 1.0  # far away: outside radius 0.25 (one pixel step is 0.25)
    acts[0, 0, 4, 5] = 1.0  # next to the focus: inside
    assert abs(float(peak_mass(acts)[0, 0]) - 0.75) < 1e-6
    assert abs(float(peak_mass(acts, focus="centroid", radius=10.0)[0, 0]) - 1.0) < 1e-6
