"""The composite interpretability scores (current, v2 and v1, one form): bounded, and each
collapse factor zeroes or lowers them; the current one's guards are gates that synchrony short of
collapse does not move; v2's distributedness counts a module once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from syncmodel.metrics import (
    accuracy_gain,
    between_module_distributedness,
    collapse_gates,
    distributedness,
    effective_units,
    interpretability,
    interpretability_v1,
    interpretability_v2,
    module_distributedness,
    neuron_scores,
)

K = 4
NAN = float("nan")
# the key through which each composite reads how distributed (or collapsed) the layer is, and
# its value for a layer that is not collapsed at all
SPREAD_KEY = {interpretability: ("effective_units", 2.0), interpretability_v2: ("distributedness", 1.0),
              interpretability_v1: ("distributedness", 1.0)}  # fmt: skip
# the composites share the form A * D * (neuron + module term) / 2; they differ in what feeds D,
# consistency and the size guard (evaluation.py), so the form is checked for each
ALL = pytest.mark.parametrize("score", list(SPREAD_KEY), ids=lambda f: f.__name__)


def good(score: Callable[..., float], **kw: float) -> dict[str, float]:
    key, value = SPREAD_KEY[score]
    return {key: value, "coverage": 1.0, "consistency": 1.0, "purity": 1.0, "largest_module": 0.0, **kw}


@ALL
def test_score_is_in_unit_interval(score: Callable[..., float]) -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        s = neuron_scores(
            torch.rand(16, generator=g), torch.rand(16, generator=g), torch.rand(16, generator=g), K
        )
        d, cov, ari, pur, big, acc = torch.rand(6, generator=g).tolist()
        spread = {SPREAD_KEY[score][0]: d * 3 * SPREAD_KEY[score][1]}  # beyond the cap too
        value = score(
            s, **spread, coverage=cov, consistency=2 * ari - 1, purity=pur,
            largest_module=big, accuracy=acc, chance=0.25,
        )  # fmt: skip
        assert 0.0 <= value <= 1.0
    assert score(torch.ones(4), **good(score), accuracy=1.0, chance=0.25) == 1.0


@ALL
def test_dead_neurons_lower_the_score(score: Callable[..., float]) -> None:
    live = neuron_scores(torch.full((8,), 0.5), torch.full((8,), 0.8), torch.ones(8), K)
    info = torch.tensor([0.5] * 4 + [NAN] * 4)  # half the neurons never fire
    selectivity = torch.tensor([0.8] * 4 + [0.0] * 4)
    active = torch.tensor([1.0] * 4 + [0.0] * 4)
    half_dead = neuron_scores(info, selectivity, active, K)
    assert score(half_dead, **good(score)) < score(live, **good(score))
    assert half_dead[4:].tolist() == [0.0] * 4


def test_fixed_position_or_rare_neurons_score_little() -> None:
    fixed_pixel = neuron_scores(torch.zeros(1), torch.ones(1), torch.ones(1), K)  # never moves
    rare = neuron_scores(torch.ones(1), torch.ones(1), torch.tensor([0.01]), K)  # 1% of images
    assert float(fixed_pixel) == 0.0 and float(rare) < 0.05


@ALL
def test_one_module_of_everything_gets_no_module_credit(score: Callable[..., float]) -> None:
    assert score(torch.zeros(4), **good(score, largest_module=1.0)) == 0.0
    assert score(torch.zeros(4), **good(score)) == 0.5


@ALL
def test_degenerate_or_missing_modules_count_as_zero(score: Callable[..., float]) -> None:
    undefined = good(score, coverage=NAN, consistency=NAN, purity=NAN)
    assert score(torch.ones(3), **undefined) == 0.5


@pytest.mark.parametrize("score", [interpretability_v2, interpretability_v1], ids=lambda f: f.__name__)
def test_clones_are_discounted_by_distributedness(score: Callable[..., float]) -> None:
    # 64 copies of one perfect detector in one module: 0.99 under the old additive score
    clones = good(score, distributedness=1 / 64, largest_module=1.0)
    assert score(torch.ones(64), **clones) == 0.5 / 64


def test_clones_get_nothing_from_the_current_composite() -> None:
    # 64 copies of one perfect detector, in one module or in none: one functional unit
    for largest in (1.0, 0.0):
        assert interpretability(torch.ones(64), **good(interpretability, effective_units=1.0, largest_module=largest)) == 0.0
    # a dead or constant layer: no unit at all
    assert interpretability(torch.zeros(64), **good(interpretability, effective_units=0.0)) == 0.0


def test_collapse_gates_are_one_short_of_collapse() -> None:
    # G: 0 at one functional unit or none, 1 from two on, linear between; NaN is collapse
    assert [collapse_gates(u, 0.0)[0] for u in (0.0, 1.0, 1.25, 2.0, 7.5, NAN)] == [0.0, 0.0, 0.25, 1.0, 1.0, 0.0]
    # H: 1 while the largest module holds at most half the layer, 0 when it holds all of it
    assert [collapse_gates(3.0, big)[1] for big in (0.0, 0.3, 0.5, 0.75, 1.0, NAN)] == [1.0, 1.0, 1.0, 0.5, 0.0, 1.0]


def test_synchrony_short_of_collapse_does_not_move_the_current_composite() -> None:
    # what the coupling does to a working layer: fewer free units, a larger largest module;
    # v2 fell with both, the current composite does not move while the layer is not collapsed
    s = neuron_scores(torch.full((32,), 0.4), torch.full((32,), 0.6), torch.ones(32), K)
    terms = dict(coverage=0.8, consistency=0.9, purity=0.5, accuracy=0.99, chance=0.25)
    before = interpretability(s, effective_units=9.0, largest_module=0.1, **terms)
    after = interpretability(s, effective_units=2.5, largest_module=0.45, **terms)
    assert after == before > 0
    v2 = [interpretability_v2(s, distributedness=d, largest_module=big, **terms) for d, big in ((1.0, 0.1), (2.5 / 3, 0.45))]
    assert v2[1] < v2[0]


@ALL
def test_accuracy_at_chance_zeroes_the_score(score: Callable[..., float]) -> None:
    assert accuracy_gain(0.25, 0.25) == 0.0 and accuracy_gain(0.1, 0.25) == 0.0
    assert accuracy_gain(0.625, 0.25) == 0.5
    assert score(torch.ones(4), **good(score), accuracy=0.25, chance=0.25) == 0.0


def _modules_of_identical_neurons(k: int, per: int, n: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Responses (n, k * per) of k synchronised modules (identical neurons) of k one-hot classes."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    amp = 0.1 + torch.rand(n, generator=g)
    unit = torch.nn.functional.one_hot(labels, k).double() * amp[:, None].double()  # (n, k)
    return unit.repeat_interleave(per, 1), torch.arange(k).repeat_interleave(per)


def test_a_synchronised_module_counts_once() -> None:
    responses, modules = _modules_of_identical_neurons(k=4, per=8)
    # 4 one-hot class units: their sum is constant up to the amplitude noise, so PR is about
    # K - 1 = 3, and D_u reaches 1; the neuron-wise D calls the same layer 3/32 distributed
    assert effective_units(responses, modules) >= 3.0
    assert module_distributedness(responses, modules, 4) == 1.0
    assert distributedness(responses) < 4 / 32


def test_clones_in_one_module_are_one_unit() -> None:
    responses, _ = _modules_of_identical_neurons(k=1, per=64)
    responses = responses + 0.01 * torch.rand(400, 1, generator=torch.Generator().manual_seed(1)).double()
    one = torch.zeros(64, dtype=torch.long)
    assert effective_units(responses, one) == pytest.approx(1.0)
    assert module_distributedness(responses, one, 10) == pytest.approx(1 / 9)  # 1 / (K - 1)


def test_unsynchronised_neurons_are_units_and_dead_ones_are_not() -> None:
    g = torch.Generator().manual_seed(0)
    responses = torch.randn(2000, 6, generator=g, dtype=torch.float64)
    responses[:, 5] = 0.0  # dead
    none = torch.full((6,), -1)
    # five independent neurons: PR = 5 up to the sampling error of their correlations
    # (each r ~ N(0, 1/N): sum of 20 off-diagonal r^2 about 20/N = 0.01 → PR about 25/5.01)
    assert effective_units(responses, none) == pytest.approx(5.0, rel=0.01)
    assert module_distributedness(responses, none, 4) == 1.0


def test_between_modules_counts_the_modules_alone() -> None:
    responses, modules = _modules_of_identical_neurons(k=4, per=8)
    # the 4 one-hot class modules: PR about K - 1 = 3, so 1, as D_u
    assert between_module_distributedness(responses, modules, 4) == 1.0
    # one module of 64 clones: 1 / (K - 1); no module at all: no functional unit, 0
    clones, _ = _modules_of_identical_neurons(k=1, per=64)
    assert between_module_distributedness(clones, torch.zeros(64, dtype=torch.long), 10) == pytest.approx(1 / 9)
    free = torch.randn(500, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert between_module_distributedness(free, torch.full((6,), -1), 4) == 0.0
    assert module_distributedness(free, torch.full((6,), -1), 4) == 1.0  # D_u: six units


def test_a_neuron_synchronising_into_a_module_costs_nothing_between_modules() -> None:
    # 9 modules of 4 neurons, each module a noisy copy of one independent signal, and one more
    # neuron: before the coupling it follows a signal of its own and is free (a unit of its
    # own for D_u); after, it follows module 0's signal and is synchronised into it — what the
    # coupling did to about 28 neurons per digits net. D_u loses that unit (PR about 10 → 9, of
    # K - 1 = 11: no cap); between modules nothing changes but module 0's mean, by one member
    # of five (the modules' PR moves by a few hundredths of a unit).
    g = torch.Generator().manual_seed(0)
    n, k, per = 2000, 9, 4
    signals = torch.randn(n, k + 1, generator=g, dtype=torch.float64)
    members = signals[:, :k].repeat_interleave(per, 1) + 0.3 * torch.randn(n, k * per, generator=g, dtype=torch.float64)
    noise = 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    modules = torch.arange(k).repeat_interleave(per)
    before = torch.cat([members, signals[:, k:] + noise], 1), torch.cat([modules, torch.tensor([-1])])
    after = torch.cat([members, signals[:, :1] + noise], 1), torch.cat([modules, torch.tensor([0])])
    d_u = [module_distributedness(r, m, 12) for r, m in (before, after)]
    assert d_u[0] - d_u[1] > 0.5 / 11  # at least half a unit of 11 lost
    d_m = [between_module_distributedness(r, m, 12) for r, m in (before, after)]
    assert d_m[0] == pytest.approx(d_m[1], abs=0.1 / 11)  # under a tenth of a unit
