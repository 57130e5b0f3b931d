"""The composites `interpretability`, `interpretability_v2` and `interpretability_v1` cannot be
gamed by collapse (docs/design.md §1.4).

Each construction scores below a normally trained plain simple_cnn on digits under every
composite, with the accuracy factor and without it (the representation alone). The
constructions replace the plain net's `block3` maps and refit the linear head on them, so each
gets the best accuracy its layer allows."""

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
from syncmodel.metrics import (
    class_selectivity,
    interpretability,
    interpretability_v1,
    interpretability_v2,
)

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


# composite -> (its function, its distributedness argument and the report key feeding it, the
# report key of its consistency)
COMPOSITES = {
    "interpretability": (interpretability, "effective_units", "effective_units", "consistency_ari_corrected"),
    "interpretability_v2": (interpretability_v2, "distributedness", "between_module_distributedness",
                            "consistency_ari_corrected"),
    "interpretability_v1": (interpretability_v1, "distributedness", "distributedness", "consistency_ari"),
}  # fmt: skip
Scores = dict[str, tuple[float, float]]


def _scores(model: nn.Module, data: DataBundle) -> Scores:
    """Per composite: (its score, the same without the accuracy factor) of block3 on the test
    split."""
    rep, table = evaluate(model, data, ["block3"])
    scores = torch.tensor(table.column("score").to_pylist())
    out = {}
    for key, (fn, arg, dist, cons) in COMPOSITES.items():
        alone = fn(
            scores,
            **{arg: rep[dist]},
            coverage=rep["coverage"],
            consistency=rep[cons],
            purity=rep["class_purity"],
            largest_module=rep["largest_module"],
        )
        out[key] = (rep[key], alone)
    return out


def _below(scores: Scores, baseline: Scores) -> bool:
    """Every composite, with and without the accuracy factor, below the plain net's."""
    return all(
        scores[k][0] < baseline[k][0] and scores[k][1] < baseline[k][1] for k in COMPOSITES
    )


@pytest.fixture(scope="module")
def baseline(plain: nn.Module, data: DataBundle) -> Scores:
    scores = _scores(plain, data)
    assert all(s > 0 and not math.isnan(s) for s, _ in scores.values())
    return scores


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
    name: str, plain: nn.Module, data: DataBundle, baseline: Scores
) -> None:
    model = _Constructed(plain, CONSTRUCTIONS[name](plain, data), data)
    assert _below(_scores(model, data), baseline)


def test_untrained_net_scores_below_plain(data: DataBundle, baseline: Scores) -> None:
    from syncmodel.nets import build_model

    torch.manual_seed(0)
    net = build_model(TrainConfig(dataset="digits"), 1, data.num_classes, data.image_size)
    assert _below(_scores(net, data), baseline)


@pytest.mark.parametrize("lambda_focus", [0.1, 1.0])
def test_over_synchronised_net_scores_below_plain(
    lambda_focus: float, data: DataBundle, baseline: Scores
) -> None:
    net = _train(data, lambda_focus=lambda_focus, coupling_K=1.0).eval()
    assert _below(_scores(net, data), baseline)
