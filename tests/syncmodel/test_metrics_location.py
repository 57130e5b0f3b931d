"""ICNN location instability (its released MATLAB protocol) and the held-out variants."""

from __future__ import annotations

import math

import torch

from syncmodel.metrics import (
    halves,
    inference_positions,
    location_instability,
    location_instability_heldout,
    location_instability_part_heldout,
    part_instability,
)

NAN = float("nan")
SIZE = (30, 40)  # diagonal 50


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One filter at pixel (0, 0) on 5 images of one category; landmark (d, 0) is at distance d.

    Part 0 on every image, part 1 on images 0..2 only; scores rise with the image index.
    """
    d0 = torch.tensor([10.0, 10.0, 1.0, 3.0, 5.0])
    d1 = torch.tensor([2.0, 4.0, 6.0, NAN, NAN])
    lm = torch.zeros(5, 2, 2)
    lm[:, 0, 0], lm[:, 1, 0] = d0, d1
    lm[3:, 1] = NAN
    return torch.zeros(1, 5, 2), torch.arange(1.0, 6.0)[None], lm


def test_icnn_hand_case_top_k_per_part_sample_std_over_the_diagonal() -> None:
    pos, scores, lm = _hand_case()
    # part 0: top 3 by score = images 4, 3, 2 → distances 5, 3, 1: sample std 2 (population: 1.63)
    # part 1: top 3 among the images with part 1 = images 0, 1, 2 → 2, 4, 6: sample std 2
    # (a top 3 taken overall would keep only image 2 for part 1)
    # mean over parts 2, over the diagonal 50
    li = location_instability(pos, scores, lm, torch.zeros(5, dtype=torch.long), SIZE, k=3)
    assert math.isclose(float(li[0]), 0.04, rel_tol=1e-6)


def test_part_instability_is_per_part_over_the_diagonal() -> None:
    pos, scores, lm = _hand_case()
    std, counts = part_instability(pos, scores, lm, SIZE, k=3)
    assert torch.allclose(std, torch.tensor([[0.04, 0.04]]))
    assert counts.tolist() == [5, 3]


def test_a_part_on_fewer_than_two_images_leaves_the_filter_undefined() -> None:
    pos, scores, lm = _hand_case()
    lm[1:, 1] = NAN  # part 1 now on image 0 only: ICNN's getAvgDistSqrtVar gives NaN
    li = location_instability(pos, scores, lm, torch.zeros(5, dtype=torch.long), SIZE, k=3)
    assert math.isnan(float(li[0]))


def test_category_is_the_one_of_highest_mean_score() -> None:
    # category 0 (images 0..2): distances 0, 3, 6 (std 3); category 1 (images 3..5): 0, 1, 2
    # (std 1). Highest single score on category 0, highest mean on category 1.
    lm = torch.zeros(6, 1, 2)
    lm[:, 0, 0] = torch.tensor([0.0, 3.0, 6.0, 0.0, 1.0, 2.0])
    scores = torch.tensor([[10.0, 0.0, 0.0, 4.0, 4.0, 4.0]])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    li = location_instability(torch.zeros(1, 6, 2), scores, lm, labels, SIZE)
    assert math.isclose(float(li[0]), 1 / 50, rel_tol=1e-6)


def test_images_without_any_part_count_zero_in_the_mean_score() -> None:
    # category 0: scores 3, 3 on images with parts (std over 0, 4: 2.83); category 1: scores
    # 2, 2 with parts (distances 0, 1) and 9, 9 on two images with no part: means 3 vs 1
    lm = torch.zeros(6, 1, 2)
    lm[:, 0, 0] = torch.tensor([0.0, 4.0, 0.0, 1.0, NAN, NAN])
    lm[4:] = NAN
    scores = torch.tensor([[3.0, 3.0, 2.0, 2.0, 9.0, 9.0]])
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    li = location_instability(torch.zeros(1, 6, 2), scores, lm, labels, SIZE)
    assert math.isclose(float(li[0]), math.sqrt(8) / 50, rel_tol=1e-6)


def _rigid(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks (n, 2, 2) of a rigid two-part object moving as a whole; labels (n,) in 0..1."""
    g = torch.Generator().manual_seed(seed)
    lm = torch.zeros(n, 2, 2)
    lm[:, 0] = 4 + 16 * torch.rand(n, 2, generator=g)
    lm[:, 1] = lm[:, 0] + torch.tensor([5.0, -3.0])
    return lm, torch.arange(n) % 2


def test_a_perfect_part_detector_scores_zero() -> None:
    lm, labels = _rigid(80)
    pos = (lm[:, 0] + torch.tensor([2.0, 1.0]))[None]  # (F=1, N, 2)
    scores = torch.rand(1, 80, generator=torch.Generator().manual_seed(1))
    for fn in (location_instability, location_instability_heldout,
               location_instability_part_heldout):  # fmt: skip
        assert float(fn(pos, scores, lm, labels, 32)[0]) < 1e-6


def test_random_positions_are_clearly_unstable() -> None:
    lm, labels = _rigid(80)
    g = torch.Generator().manual_seed(3)
    pos, scores = 32 * torch.rand(1, 80, 2, generator=g), torch.rand(1, 80, generator=g)
    assert float(location_instability(pos, scores, lm, labels, 32)[0]) > 0.05


def test_part_heldout_finds_the_tied_part_of_independent_parts() -> None:
    g = torch.Generator().manual_seed(0)
    lm = 4 + 20 * torch.rand(80, 2, 2, generator=g)  # the two parts move independently
    pos = (lm[:, 1] + 1.0)[None]
    scores, labels = torch.rand(1, 80, generator=g), torch.zeros(80, dtype=torch.long)
    assert float(location_instability_part_heldout(pos, scores, lm, labels, 32)[0]) < 1e-6
    assert float(location_instability(pos, scores, lm, labels, 32)[0]) > 0.02  # ICNN: mean


def test_halves_are_disjoint_and_stratified() -> None:
    labels = torch.arange(40) % 4
    first = halves(labels, seed=3)
    assert [int(first[labels == c].sum()) for c in range(4)] == [5, 5, 5, 5]


def test_heldout_removes_the_bias_of_choosing_the_part_on_the_scored_images() -> None:
    # pure-noise filters: no part is really closer; the part chosen as the most stable one on
    # the images it is scored on looks more stable than it is, on fresh images it does not
    g = torch.Generator().manual_seed(0)
    n, f, k = 200, 300, 100
    lm = 32 * torch.rand(n, 6, 2, generator=g)
    pos, scores = 32 * torch.rand(f, n, 2, generator=g), torch.rand(f, n, generator=g)
    labels = torch.zeros(n, dtype=torch.long)
    first = halves(labels)
    in_sample = torch.stack([
        part_instability(pos[:, h], scores[:, h], lm[h], 32, k // 2)[0].amin(1)
        for h in (first, ~first)
    ]).mean(0)  # fmt: skip
    heldout = location_instability_part_heldout(pos, scores, lm, labels, 32, k)
    all_parts = location_instability(pos, scores, lm, labels, 32, k)
    assert float(heldout.mean()) > float(in_sample.mean()) * 1.08
    assert abs(float(heldout.mean()) / float(all_parts.mean()) - 1) < 0.03  # no part is special


def test_heldout_scores_the_category_chosen_on_the_other_half() -> None:
    # the filter prefers category 1 on the first half and category 0 on the second; it is
    # perfectly stable on category 1 only, so only the direction "chosen on the second half,
    # scored on the first" (category 0) adds instability
    labels = torch.arange(40) % 2
    first = halves(labels)
    g = torch.Generator().manual_seed(0)
    lm = 4 + 20 * torch.rand(40, 1, 2, generator=g)
    pos = torch.where((labels == 1)[:, None], lm[:, 0], 32 * torch.rand(40, 2, generator=g))[None]
    scores = torch.where(first == (labels == 1), 2.0, 1.0)[None]
    sel = first & (labels == 0)  # category 0 on the first half
    value_0 = location_instability(
        pos[:, sel], scores[:, sel], lm[sel], torch.zeros(10, dtype=torch.long), 32, 50
    )
    li = location_instability_heldout(pos, scores, lm, labels, 32, k=100)
    assert math.isclose(float(li[0]), float(value_0[0]) / 2, rel_tol=1e-5)


def test_inference_position_is_the_receptive_field_centre() -> None:
    acts = torch.zeros(1, 2, 4, 4)
    acts[0, 0, 1, 2] = 1.0  # cell (1, 2) of a 4×4 map over 32×32: pixels 8..15, 16..23
    pos = inference_positions(acts, 32)  # (F=2, N=1, 2)
    assert pos[0, 0].tolist() == [11.5, 19.5]
    assert inference_positions(acts, 32, centre=0.0)[0, 0].tolist() == [8.0, 16.0]


def test_argmax_ties_go_to_the_first_cell_in_column_major_order() -> None:
    acts = torch.zeros(1, 2, 4, 4)
    acts[0, 0, 0, 3] = acts[0, 0, 2, 1] = 1.0  # MATLAB's max: column 1 before column 3
    pos = inference_positions(acts, 4)
    assert pos[0, 0].tolist() == [2.0, 1.0]
    assert pos[1, 0].tolist() == [0.0, 0.0]  # a silent map: cell (0, 0), as MATLAB's max
