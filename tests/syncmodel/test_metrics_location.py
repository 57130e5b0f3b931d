"""ICNN location instability: a filter tied to a landmark is stable, a wandering one is not."""

from __future__ import annotations

import torch

from syncmodel.metrics import inference_positions, location_instability, top_images

SIZE = 32


def _landmarks(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 4 + 20 * torch.rand(n, 2, 2, generator=g)  # (N, K=2, 2) two landmarks per image


def test_fixed_offset_from_a_rigid_object_is_perfectly_stable() -> None:
    lm = _landmarks(50)
    lm[:, 1] = lm[:, 0] + torch.tensor([5.0, -3.0])  # the object moves as a whole
    positions = (lm[:, 0] + torch.tensor([2.0, 1.0]))[None]  # (F=1, N, 2)
    assert float(location_instability(positions, lm, SIZE)[0]) < 1e-6


def test_random_positions_are_clearly_unstable() -> None:
    lm = _landmarks(50)
    positions = 32 * torch.rand(1, 50, 2, generator=torch.Generator().manual_seed(3))
    assert float(location_instability(positions, lm, SIZE)[0]) > 0.05


def test_min_over_landmarks_finds_the_tied_part() -> None:
    lm = _landmarks(50)  # the two parts move independently
    positions = (lm[:, 1] + 1.0)[None]
    assert float(location_instability(positions, lm, SIZE, reduce="min")[0]) < 1e-6
    assert float(location_instability(positions, lm, SIZE)[0]) > 0.02


def test_absent_landmarks_and_masked_images_are_skipped() -> None:
    lm = _landmarks(40)
    positions = (lm[:, 0] + 2.0)[None].clone()
    positions[0, 20:] = 32 * torch.rand(20, 2)  # wanders on the second half ...
    mask = torch.zeros(1, 40, dtype=torch.bool)
    mask[0, :20] = True  # ... which the mask leaves out
    lm[:20, 1] = float("nan")  # landmark 1 absent where the filter counts: only landmark 0 left
    assert float(location_instability(positions, lm, SIZE, mask)[0]) < 1e-6


def test_inference_position_is_the_receptive_field_centre() -> None:
    acts = torch.zeros(1, 2, 4, 4)
    acts[0, 0, 1, 2] = 1.0  # cell (1, 2) of a 4×4 map over 32×32: pixels 8..15, 16..23
    pos = inference_positions(acts, SIZE)  # (F=2, N=1, 2)
    assert pos[0, 0].tolist() == [11.5, 19.5]
    assert torch.isnan(pos[1, 0]).all()  # a silent filter has no position


def test_top_images_pick_the_strongest_responses() -> None:
    peak = torch.tensor([[0.1, 0.0], [0.9, 0.0], [0.5, 0.2]])  # (N=3, F=2)
    mask = top_images(peak, k=2)
    assert mask[0].tolist() == [False, True, True]
    assert mask[1].tolist() == [False, False, True]  # never an image where the filter is silent
