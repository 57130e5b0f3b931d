"""Class selectivity (Morcos et al.) and MIS (Liang et al.) on hand-built responses."""

from __future__ import annotations

import torch

from syncmodel.metrics import class_selectivity, mis

LABELS = torch.arange(400) % 4


def test_one_hot_class_detector_has_selectivity_one() -> None:
    responses = (LABELS == 2).float()[:, None] * 3.0
    assert float(class_selectivity(responses, LABELS)[0]) == 1.0


def test_class_blind_and_dead_neurons_have_selectivity_zero() -> None:
    responses = torch.stack([torch.ones(400), torch.zeros(400)], 1)
    assert class_selectivity(responses, LABELS).tolist() == [0.0, 0.0]


def test_mis_is_high_for_a_class_detector_and_zero_for_a_constant() -> None:
    g = torch.Generator().manual_seed(0)
    detector = (LABELS == 1).float() + 0.01 * torch.rand(400, generator=g)
    responses = torch.stack([detector, torch.ones(400), torch.rand(400, generator=g)], 1)
    score, cls = mis(responses, LABELS)
    entropy_1_of_4 = -(0.25 * torch.log(torch.tensor(0.25)) + 0.75 * torch.log(torch.tensor(0.75)))
    assert abs(float(score[0]) - float(entropy_1_of_4)) < 1e-4 and int(cls[0]) == 1
    assert float(score[1]) == 0.0
    assert float(score[2]) < 0.05  # noise: only the plug-in bias
