"""Class selectivity (Morcos et al.) and MIS (Liang et al.) on hand-built responses."""

from __future__ import annotations

import torch

from syncmodel.metrics import class_selectivity, mis, mis_chance

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


def _random_and_detector() -> tuple[torch.Tensor, torch.Tensor]:
    """Responses (400, 65): 64 class-blind random neurons, then a class-1 detector."""
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(400, 64, generator=g)
    detector = (LABELS == 1).float() + 0.01 * torch.rand(400, generator=g)
    return torch.cat([noise, detector[:, None]], 1), LABELS


def test_mis_chance_of_class_blind_neurons_is_their_mis() -> None:
    responses, labels = _random_and_detector()
    score, _ = mis(responses[:, :64], labels)
    chance = mis_chance(responses[:, :64], labels)
    assert float(chance.mean()) > 0.01  # the plug-in bias it corrects is not negligible
    assert abs(float((score - chance).mean())) < 0.002  # above chance: about 0


def test_mis_above_chance_keeps_a_class_detector() -> None:
    responses, labels = _random_and_detector()
    score, _ = mis(responses, labels)
    above = score - mis_chance(responses, labels)
    assert float(above[64]) > 0.5  # the 1-of-4 indicator entropy is 0.56 nats


def test_mis_chance_is_seeded() -> None:
    responses, labels = _random_and_detector()
    assert torch.equal(mis_chance(responses, labels, seed=4), mis_chance(responses, labels, seed=4))
    assert not torch.equal(mis_chance(responses, labels, seed=4), mis_chance(responses, labels))
