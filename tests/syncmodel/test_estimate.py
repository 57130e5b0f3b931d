"""The per-epoch interpretability estimate (`interpretability_estimate`, TrainConfig.epoch_estimate)."""

from __future__ import annotations

import math

import pytest
import torch
from test_evaluate import K, N, S, Tiny  # the shared tiny model and sizes (tests/syncmodel)
from torch import nn

from syncmodel.config import TrainConfig
from syncmodel.data import Split
from syncmodel.evaluation import evaluate, interpretability_estimate
from syncmodel.training import train


def _split() -> Split:
    g = torch.Generator().manual_seed(0)
    landmarks = 1 + 6 * torch.rand(N, 2, 2, generator=g)
    masks = torch.zeros(N, 2, S, S, dtype=torch.bool)
    masks[:, 0, :4, :4] = True
    masks[:, 1, 4:, 4:] = True
    return Split(torch.rand(N, 1, S, S, generator=g), torch.arange(N) % K, landmarks, masks)


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return Tiny()


def test_estimate_is_the_composite_of_the_first_images(model: nn.Module) -> None:
    # the full evaluation (ablation, landmarks, part masks) on the same 32 images: those parts
    # do not enter the composite, so the score is the same
    report, _ = evaluate(model, _split(), ["block"], max_images=32, seed=3)
    estimate = interpretability_estimate(model, _split(), ["block"], images=32, seed=3)
    assert estimate == pytest.approx(report["interpretability"], abs=1e-12)


def test_estimate_uses_only_the_first_images(model: nn.Module) -> None:
    split = _split()
    tail_changed = Split(torch.cat([split.images[:32], torch.zeros(N - 32, 1, S, S)]), split.labels)
    a = interpretability_estimate(model, split, ["block"], images=32)
    assert interpretability_estimate(model, tail_changed, ["block"], images=32) == a


def test_estimate_of_an_empty_split_is_nan(model: nn.Module) -> None:
    empty = Split(torch.zeros(0, 1, S, S), torch.zeros(0, dtype=torch.long))
    assert math.isnan(interpretability_estimate(model, empty, ["block"]))


def test_training_with_the_estimate_takes_the_same_steps() -> None:
    base = dict(dataset="digits", epochs=2, n_train=200, bn_stats_images=64, device="cpu", seed=1)
    plain = train(TrainConfig(**base))
    with_estimate = train(TrainConfig(**base, epoch_estimate=True))
    assert [r["val_acc"] for r in plain.history] == [r["val_acc"] for r in with_estimate.history]
    assert plain.metrics["test_acc"] == with_estimate.metrics["test_acc"]
    assert all(0 <= r["interp_estimate"] <= 1 for r in with_estimate.history)
    assert "interp_estimate" not in plain.history[0]
    assert with_estimate.metrics["interp_estimate"] == with_estimate.history[-1]["interp_estimate"]
