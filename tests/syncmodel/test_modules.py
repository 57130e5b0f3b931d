"""Sync clustering into functional modules (docs/design.md §1.3): known partitions come back."""

from __future__ import annotations

import torch

from syncmodel.modules import (
    description_length,
    find_modules,
    mdl_epsilon,
    response_descriptors,
    sync_clusters,
)


def _groups(sizes: list[int], n: int = 400, noise: float = 0.1, seed: int = 0) -> torch.Tensor:
    """Responses (n, sum(sizes)): each group shares one random signal plus small noise."""
    g = torch.Generator().manual_seed(seed)
    cols = [torch.randn(n, 1, generator=g) + noise * torch.randn(n, s, generator=g) for s in sizes]
    return torch.cat(cols, 1)


def test_identical_responses_form_one_module() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(300, 1, generator=g)
    responses = torch.cat([base, base, torch.randn(300, 3, generator=g)], 1)
    labels, _, _ = find_modules(responses, epsilon=0.5)
    assert labels[0] == labels[1] == 0
    assert (labels[2:] == -1).all()


def test_separated_groups_give_their_modules() -> None:
    labels, _, _ = find_modules(_groups([5, 4, 3]), epsilon=0.5)
    assert labels.tolist() == [0] * 5 + [1] * 4 + [2] * 3


def test_independent_neurons_stay_unsynchronised() -> None:
    responses = torch.randn(500, 20, generator=torch.Generator().manual_seed(1))
    labels, steps, _ = find_modules(responses, epsilon=0.5)
    assert (labels == -1).all() and steps == 0


def test_sync_moves_neighbours_together_and_stops() -> None:
    # 2-D points: two tight pairs far apart; Sync must take steps and stop by the order rule
    x = torch.tensor([[0.0, 0.0], [0.3, 0.0], [3.0, 3.0], [3.0, 3.35]])
    labels, steps = sync_clusters(x, epsilon=0.5, max_steps=200)
    assert labels.tolist() == [0, 0, 1, 1]
    assert 0 < steps < 200


def test_step_cap_is_respected() -> None:
    x = torch.tensor([[0.0, 0.0], [0.4, 0.0]])
    _, steps = sync_clusters(x, epsilon=0.5, max_steps=1)
    assert steps == 1


def test_descriptor_distance_depends_on_correlation_only() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(1000, generator=g)
    responses = torch.stack([a, 5 * a + 3, -a], 1)  # same profile up to scale/shift; opposite
    v = response_descriptors(responses)
    assert torch.allclose(v.norm(dim=1), torch.ones(3, dtype=v.dtype))
    assert float((v[0] - v[1]).norm()) < 1e-6
    assert abs(float((v[0] - v[2]).norm()) - 2.0) < 1e-6


def test_dead_neurons_never_form_a_module() -> None:
    responses = torch.cat([_groups([3]), torch.zeros(400, 4)], 1)
    labels, _, _ = find_modules(responses, epsilon=0.5)
    assert labels[:3].tolist() == [0, 0, 0]
    assert (labels[3:] == -1).all()


def test_mdl_prefers_the_true_partition() -> None:
    v = response_descriptors(torch.cat([_groups([6, 6], noise=0.2), torch.randn(400, 6)], 1))
    truth = torch.tensor([0] * 6 + [1] * 6 + [-1] * 6)
    everything = torch.zeros(18, dtype=torch.long)
    assert description_length(v, truth) < description_length(v, everything)
    labels, _ = sync_clusters(v, epsilon=mdl_epsilon(v))
    assert labels.tolist() == truth.tolist()


def test_512_neurons_synchronise_in_a_few_steps() -> None:
    responses = _groups([8] * 64, n=1000, noise=0.3)  # (1000, 512)
    labels, steps, _ = find_modules(responses, epsilon=0.5)
    assert int(labels.max()) + 1 == 64 and (labels >= 0).all()
    assert steps <= 5  # each step is three (512, 1000) matmuls: ~1 s in all on 2 cores
