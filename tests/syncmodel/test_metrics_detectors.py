"""Network Dissection part detectors: a unit firing exactly on a part segments it (IoU 1)."""

from __future__ import annotations

import torch

from syncmodel.metrics import part_detectors, unit_thresholds


def _parts(n: int = 20, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 2, size, size, dtype=torch.bool)
    for i in range(n):
        r, c = torch.randint(0, size - 4, (2,), generator=g).tolist()
        masks[i, 0, r : r + 4, c : c + 4] = True  # part 0: a 4×4 square somewhere
        masks[i, 1, :2, :] = True  # part 1: a top band
    return masks


def test_unit_firing_exactly_on_a_part_has_iou_one() -> None:
    masks = _parts()
    acts = torch.stack([masks[:, 0].float(), torch.zeros(20, 16, 16)], 1)  # unit 0 = part 0
    det = part_detectors(acts, masks)
    assert float(det.iou[0, 0]) == 1.0 and int(det.best_part[0]) == 0
    assert det.is_detector.tolist() == [True, False]  # the dead unit segments nothing
    assert det.count == 1 and det.unique_parts == 1


def test_low_resolution_maps_are_upsampled_to_the_masks() -> None:
    masks = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    masks[:, 0, :8, :8] = True  # the top-left quadrant
    acts = torch.zeros(4, 1, 2, 2)
    acts[:, 0, 0, 0] = 1.0
    det = part_detectors(acts, masks, quantile=0.2)
    assert float(det.best_iou[0]) > 0.2  # the upsampled blob overlaps the quadrant


def test_threshold_is_the_top_quantile() -> None:
    acts = torch.arange(1000.0).view(10, 1, 10, 10)
    assert float(unit_thresholds(acts, quantile=0.005)[0]) == 995.0  # top 5 of 1000 values
