"""Properties of the synchronisation coupling (syncmodel.sync, docs/design.md §1.2)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from syncmodel.errors import ConfigError
from syncmodel.sync import (
    coupling_potential,
    descriptors,
    mean_neighbours,
    neighbourhoods,
    sync_loss,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _clustered(c: int = 12, d: int = 6, groups: int = 3, noise: float = 0.15) -> torch.Tensor:
    """Unit-norm descriptors (C, D), float64, in `groups` loose clusters: some neighbours each."""
    centres = torch.randn(groups, d, generator=_gen(), dtype=torch.float64)
    v = centres[torch.arange(c) % groups] + noise * torch.randn(c, d, generator=_gen(1), dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def _reference(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The docs/design.md §1.2 formula by broadcasting: a (C, C, D) tensor, fine at test sizes."""
    pair = (1 - torch.cos(v.unsqueeze(0) - v.unsqueeze(1))).sum(-1)  # (C, C): [c, g]
    count = mask.sum(1)
    per = (pair * mask).sum(1) / count.clamp_min(1)
    return per[count > 0].sum() / len(v)  # normalised per neuron: divided by C


def _ball(v: torch.Tensor, eps: float) -> torch.Tensor:
    d = torch.cdist(v, v)
    return (d <= eps) & ~torch.eye(len(v), dtype=torch.bool)


def test_loss_matches_direct_sum_with_epsilon() -> None:
    v = _clustered()
    mask = _ball(v, 0.6)
    assert mask.any(1).sum() >= 6  # the test exercises real neighbourhoods
    assert torch.equal(neighbourhoods(v, 0.6), mask)
    assert coupling_potential(v, 0.6).item() == pytest.approx(_reference(v, mask).item(), abs=1e-5)


def test_loss_matches_direct_sum_with_k() -> None:
    v = _clustered()
    d = torch.cdist(v, v).fill_diagonal_(float("inf"))
    mask = torch.zeros(len(v), len(v), dtype=torch.bool).scatter_(1, d.topk(3, largest=False).indices, True)
    assert torch.equal(neighbourhoods(v, 0.01, k=3), mask)
    assert coupling_potential(v, 0.01, k=3).item() == pytest.approx(_reference(v, mask).item(), abs=1e-5)


def test_gradient_step_with_fixed_neighbours_is_the_sync_update() -> None:
    # Böhm, Plant & Shao (KDD 2010): v_c += 1/|N(c)| sum_{g in N(c)} sin(v_g - v_c).
    v = _clustered().requires_grad_()
    mask = neighbourhoods(v, 0.01, k=3)  # k-NN: not symmetric, still exact
    loss = coupling_potential(v, 0.01, k=3, reduction="sum", detach_neighbours=True)
    (grad,) = torch.autograd.grad(loss, v)
    vd = v.detach()
    sync = (torch.sin(vd.unsqueeze(0) - vd.unsqueeze(1)) * mask.unsqueeze(-1)).sum(1) / 3  # (C, D)
    torch.testing.assert_close(vd - grad, vd + sync)


def test_full_gradient_step_of_half_is_the_sync_update_on_cliques() -> None:
    # Symmetric, equal-size neighbourhoods: each pair term pulls both ends, so the step is 1/2.
    v = _clustered(c=12, groups=3, noise=0.05).requires_grad_()
    mask = neighbourhoods(v, 0.5)
    assert (mask.sum(1) == 3).all()  # three 4-cliques
    (grad,) = torch.autograd.grad(coupling_potential(v, 0.5, reduction="sum"), v)
    vd = v.detach()
    sync = (torch.sin(vd.unsqueeze(0) - vd.unsqueeze(1)) * mask.unsqueeze(-1)).sum(1) / 3
    torch.testing.assert_close(vd - 0.5 * grad, vd + sync)


def test_a_neurons_pull_does_not_depend_on_how_many_others_are_coupled() -> None:
    # Neurons 0 and 1 are neighbours; 2 and 3 are far apart (A) or coupled too (B).
    far = torch.tensor([[0.0, 0.0], [0.1, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    near = far.clone()
    near[3] = torch.tensor([3.0, 0.1], dtype=torch.float64)
    grads = []
    for v in (far, near):
        v = v.clone().requires_grad_()
        assert neighbourhoods(v, 0.2)[:2].any(1).all()
        (grad,) = torch.autograd.grad(coupling_potential(v, 0.2), v)
        grads.append(grad[:2])
    assert neighbourhoods(near, 0.2)[2, 3] and not neighbourhoods(far, 0.2)[2, 3]
    torch.testing.assert_close(grads[0], grads[1])


def test_epsilon_boundary_is_inclusive() -> None:
    v = torch.tensor([[0.0], [0.5], [1.0 + 1e-9], [2.0]], dtype=torch.float64)
    mask = neighbourhoods(v, 0.5)
    assert mask[0, 1] and mask[1, 0]  # exactly epsilon apart
    assert not mask[1, 2] and not mask[2, 3] and not mask.diagonal().any()


def test_k_nearest_gives_exactly_k_each() -> None:
    v = torch.randn(20, 4, generator=_gen())
    mask = neighbourhoods(v, 1e-3, k=5)
    assert (mask.sum(1) == 5).all() and not mask.diagonal().any()
    far = torch.cdist(v, v).fill_diagonal_(float("inf")).masked_fill(mask, float("inf")).min(1).values
    near = torch.cdist(v, v).masked_fill(~mask, -1).max(1).values
    assert (near <= far + 1e-6).all()


def test_identical_neurons_give_zero_loss() -> None:
    v = _clustered(c=3).repeat_interleave(4, 0)  # three groups of four identical descriptors
    loss = coupling_potential(v.float(), 0.1)
    assert neighbourhoods(v, 0.1).sum(1).eq(3).all()
    assert abs(loss.item()) < 1e-6


def test_no_neighbours_gives_zero_with_grad_path() -> None:
    v = torch.eye(5, dtype=torch.float64).requires_grad_()  # all sqrt(2) apart
    loss = coupling_potential(v, 0.5)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (v.grad == 0).all()


def test_response_descriptors_are_standardised_unit_vectors() -> None:
    acts = torch.rand(8, 5, 3, 3, generator=_gen())
    v = descriptors(acts)
    assert v.shape == (5, 8)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(v.mean(1), torch.zeros(5), atol=1e-6, rtol=0)


def test_constant_neurons_have_no_descriptor_no_neighbours_no_nan() -> None:
    acts = torch.rand(8, 6, 3, 3, generator=_gen())
    acts[:, 0] = 0.0  # dead
    acts[:, 1] = 0.7  # constant over the batch
    acts.requires_grad_()
    v = descriptors(acts)
    assert v[:2].isnan().all() and torch.isfinite(v[2:]).all()
    mask = neighbourhoods(v, 10.0)
    assert not mask[:2].any() and not mask[:, :2].any() and mask[2:].any()
    loss = sync_loss(acts, 10.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(acts.grad).all()
    assert (acts.grad[:, :2] == 0).all()


def test_sync_loss_on_acts_equals_potential_of_descriptors() -> None:
    acts = torch.rand(16, 10, 4, 4, generator=_gen())
    expected = coupling_potential(descriptors(acts), 1.2, k=2)
    assert sync_loss(acts, 1.2, k=2).item() == pytest.approx(expected.item())


def test_weight_descriptor_pulls_on_the_weights() -> None:
    w = torch.randn(6, 3, 3, 3, generator=_gen()).requires_grad_()
    loss = sync_loss(None, 0.5, "weight", k=2, weight=w)
    loss.backward()
    assert loss.item() > 0 and w.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="descriptor"):
        sync_loss(None, 0.5, "gradient", weight=w)


def test_mean_neighbours_counts_within_epsilon() -> None:
    v = torch.tensor([[0.0], [0.1], [0.2], [5.0]])
    assert mean_neighbours(v, 0.15) == pytest.approx((1 + 2 + 1 + 0) / 4)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward)."""

    largest = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_c512_d256_never_builds_c_c_d() -> None:
    # its time is bench/sync_loss_scale.py's (a timed test fails on a loaded machine)
    c, d = 512, 256
    acts = torch.rand(d, c, 2, 2, generator=_gen()).requires_grad_()  # B = D = 256
    with _LargestTensor() as probe:
        sync_loss(acts, 0.9).backward()
    assert probe.largest <= acts.numel()  # nothing beyond the input: C*C and C*D are smaller


def test_bf16_autocast_computes_in_float32() -> None:
    acts = torch.rand(16, 8, 3, 3, generator=_gen()).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sync_loss(acts, 0.9, k=2)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() > 0
    assert torch.isfinite(acts.grad.float()).all()
