"""The composite `interpretability` cannot be gamed by collapse (docs/design.md §1.4).

Each construction scores below a normally trained plain simple_cnn on digits, with the accuracy
factor and without it (the representation alone). The constructions replace the plain net's
`block3` maps and refit the linear head on them, so each gets the best accuracy its layer allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from syncmodel import train
from syncmodel.config import TrainConfig
from syncmodel.data import DataBundle, load_data
from syncmodel.evaluation import evaluate
from syncmodel.metrics import class_selectivity, interpretability

pytestmark = pytest.mark.slow
EPOCHS = 10


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return load_data(TrainConfig(dataset="digits"))


def _train(data: DataBundle, **kw: float) -> nn.Module:
    return train(TrainConfig(dataset="digits", epochs=EPOCHS, seed=0, **kw), data=data).model


@pytest.fixture(scope="module")
def plain(data: DataBundle) -> nn.Module:
    return _train(data).eval()


def _features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return net.block3(net.pool2(net.block2(net.pool1(net.block1(x)))))


class _Constructed(nn.Module):
    """The plain net's block3 maps, transformed; a linear head fitted on their spatial mean."""

    def __init__(self, net: nn.Module, transform: Callable, data: DataBundle) -> None:
        super().__init__()
        self.net, self.transform = net, transform
        self.block3 = nn.Identity()  # the evaluated layer: its output is the transformed map
        c = net.fc.in_features
        self.fc = nn.Linear(c, data.num_classes)
        r = self._maps(data.train.images).mean((2, 3))
        opt = torch.optim.Adam(self.fc.parameters(), 1e-2)
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(self.fc(r), data.train.labels).backward()
            opt.step()
        self.eval()

    @torch.no_grad()
    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(_features(self.net, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block3(self._maps(x)).mean((2, 3)))


def _scores(model: nn.Module, data: DataBundle) -> tuple[float, float]:
    """(interpretability, the same without the accuracy factor) of block3 on the test split."""
    rep, table = evaluate(model, data, ["block3"])
    scores = torch.tensor(table.column("score").to_pylist())
    alone = interpretability(
        scores,
        distributedness=rep["distributedness"],
        coverage=rep["coverage"],
        consistency=rep["consistency_ari"],
        purity=rep["class_purity"],
        largest_module=rep["largest_module"],
    )
    return rep["interpretability"], alone


@pytest.fixture(scope="module")
def baseline(plain: nn.Module, data: DataBundle) -> tuple[float, float]:
    score, alone = _scores(plain, data)
    assert score > 0 and not math.isnan(score)
    return score, alone


def _clones(net: nn.Module, data: DataBundle) -> Callable:
    """64 near-identical copies (1% gain jitter) of the plain net's most class-selective map."""
    with torch.no_grad():
        r = _features(net, data.train.images).mean((2, 3))
    best = int(class_selectivity(r, data.train.labels, data.num_classes).argmax())
    gain = 1 + 0.01 * torch.randn(1, r.shape[1], 1, 1, generator=torch.Generator().manual_seed(1))
    return lambda a: (a[:, best : best + 1] * gain).relu()


def _fixed_pixel(a: torch.Tensor) -> torch.Tensor:
    """Each neuron's whole mass (so its class selectivity) at the top-left pixel, every image."""
    out = torch.zeros_like(a)
    out[:, :, 0, 0] = a.sum((2, 3))
    return out


CONSTRUCTIONS: dict[str, Callable[[nn.Module, DataBundle], Callable]] = {
    "clones": _clones,
    "dead": lambda _n, _d: torch.zeros_like,
    "constant": lambda _n, _d: torch.ones_like,
    "fixed_pixel": lambda _n, _d: _fixed_pixel,
}


@pytest.mark.parametrize("name", list(CONSTRUCTIONS))
def test_collapsed_layer_scores_below_plain(
    name: str, plain: nn.Module, data: DataBundle, baseline: tuple[float, float]
) -> None:
    model = _Constructed(plain, CONSTRUCTIONS[name](plain, data), data)
    score, alone = _scores(model, data)
    assert score < baseline[0] and alone < baseline[1]


def test_untrained_net_scores_below_plain(data: DataBundle, baseline: tuple[float, float]) -> None:
    from syncmodel.nets import build_model

    torch.manual_seed(0)
    net = build_model(TrainConfig(dataset="digits"), 1, data.num_classes, data.image_size)
    score, alone = _scores(net, data)
    assert score < baseline[0] and alone < baseline[1]


@pytest.mark.parametrize("lambda_focus", [0.1, 1.0])
def test_over_synchronised_net_scores_below_plain(
    lambda_focus: float, data: DataBundle, baseline: tuple[float, float]
) -> None:
    net = _train(data, lambda_focus=lambda_focus, coupling_K=1.0).eval()
    score, alone = _scores(net, data)
    assert score < baseline[0] and alone < baseline[1]
