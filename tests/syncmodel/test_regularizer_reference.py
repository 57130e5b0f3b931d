"""The regulariser computes what it computed when `regularizer_reference.pt` was written.

The reference (losses, gradients, descriptors, neighbour masks; see `regularizer_reference.py`
for the cases and how to regenerate it) was produced by the code before the speed work on
focus / sync / regularizer; these tests hold the current code to it. float64 cases must agree
to rounding (1e-9 relative): that is the check that the same function is computed. float32
cases (the training dtype) must agree to 1e-6 relative in losses and in the norm of the
focus / sync gradients; the parameter gradients of a whole float32 step get 2e-5, because
the net's own float32 backward (three BatchNorm layers) is not reproducible to better than
that: the unchanged code differed by 4.7e-6 in block1's weight gradient between 1 and 2
CPU threads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from regularizer_reference import compute

REFERENCE = Path(__file__).with_name("regularizer_reference.pt")
_REF = torch.load(REFERENCE, weights_only=True)


@pytest.fixture(scope="module")
def now() -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    return compute(_REF["inputs"])


def _close(got: torch.Tensor, ref: torch.Tensor, what: str, rtol32: float = 1e-6) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, what
    if not ref.is_floating_point():
        assert torch.equal(got, ref), what
        return
    assert torch.equal(got.isnan(), ref.isnan()), f"{what}: NaN rows differ"
    got, ref = got.nan_to_num(), ref.nan_to_num()
    scale = ref.abs().max().item()
    if ref.dtype == torch.float64:
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12 * scale, msg=what)
        return
    err = (got - ref).norm().item()
    assert err <= rtol32 * ref.norm().item() + 1e-30, f"{what}: relative error {err / ref.norm().item():.2e}"


def _check(section: str, key: str, now: dict[str, dict[str, dict[str, torch.Tensor]]]) -> None:
    ref, got = _REF[section][key], now[section][key]
    assert set(got) == set(ref)
    for name in ref:
        _close(got[name], ref[name], f"{section} {key} {name}", 2e-5 if name.startswith("grad/") else 1e-6)


@pytest.mark.parametrize("key", sorted(_REF["focus"]))
def test_focus_loss_and_gradient_match_the_reference(key: str, now: dict) -> None:
    _check("focus", key, now)


@pytest.mark.parametrize("key", sorted(_REF["sync"]))
def test_sync_loss_gradient_and_neighbours_match_the_reference(key: str, now: dict) -> None:
    _check("sync", key, now)


@pytest.mark.parametrize("key", sorted(_REF["model"]))
def test_regularised_step_matches_the_reference(key: str, now: dict) -> None:
    _check("model", key, now)


def test_reference_covers_coupled_and_uncoupled_steps() -> None:
    """Guards the reference itself: a pin of a zero sync term would not pin the coupling."""
    syncs = {key: res["part/sync"].item() for key, res in _REF["model"].items()}
    assert syncs["default/float64"] > 0 and syncs["default/float32"] > 0
    assert syncs["warmup_off/float64"] == 0
    assert all(res["loss"].item() > 0 for res in _REF["sync"].values())


@pytest.mark.parametrize("position", ["argmax", "centroid"])
def test_marginals_by_reductions_match_the_matmul_path(position: str) -> None:
    """`focus.map_marginals` takes the matmul on contiguous CPU maps and two reductions otherwise
    (channels_last here, bf16 or GPU maps in training); both give the same loss and gradient."""
    from syncmodel.focus import focus_loss

    acts = _REF["inputs"]["focus_maps"]
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = acts.to(memory_format=layout).requires_grad_()
        loss = focus_loss(x, "spread", position)
        (grad,) = torch.autograd.grad(loss, x)
        results.append((loss, grad.contiguous()))
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)
