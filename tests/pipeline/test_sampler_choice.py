"""Every sampler `validate` accepts is one `launch` builds, with the options the spec gives it
(pipeline.spec.sections → pipeline.search.make_sampler). Refusals of a misplaced option are in
bad_specs/ (sampler_*.yaml)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from pipeline import search
from pipeline.spec import load_spec
from pipeline.spec.sections import SAMPLERS

SPEC = """
name: samplers
train: {epochs: 1}
search:
  lambda_focus: {low: 1.0e-3, high: 1.0, log: true}
  warmup_epochs: {low: 0, high: 2}
  focus_kind: {choices: [spread, gate]}
objectives:
  - {metric: val_acc, mode: max}
  - {metric: test_acc, mode: max}
sampler: %s
"""


def _load(tmp_path: Path, sampler: str):  # noqa: ANN202 - a StudySpec
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC % sampler)
    return load_spec(path, writable=False)


@pytest.mark.parametrize("name", [n for n in SAMPLERS if n != "grid"])
def test_every_named_sampler_builds(name: str, tmp_path: Path) -> None:
    sampler = search.make_sampler(_load(tmp_path, f"{{name: {name}, seed: 3}}"))
    assert isinstance(sampler, optuna.samplers.BaseSampler)


def test_gp_takes_its_startup_count(tmp_path: Path) -> None:
    spec = _load(tmp_path, "{name: gp, seed: 1, n_startup_trials: 4}")
    sampler = search.make_sampler(spec)
    assert isinstance(sampler, optuna.samplers.GPSampler)
    assert sampler._n_startup_trials == 4


def test_gp_and_tpe_start_after_ten_random_trials_by_default(tmp_path: Path) -> None:
    for name in ("gp", "tpe"):
        assert search.make_sampler(_load(tmp_path, name))._n_startup_trials == 10


def test_gp_proposes_in_the_space_with_two_objectives(tmp_path: Path) -> None:
    """Past its random start the GP fits and proposes points inside the distributions."""
    spec = _load(tmp_path, "{name: gp, seed: 0, n_startup_trials: 2}")
    dists = search.distributions(spec)
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=search.make_sampler(spec))
    for i in range(4):
        trial = study.ask(dists)
        for name, value in trial.params.items():
            assert dists[name]._contains(dists[name].to_internal_repr(value))
        study.tell(trial, [0.1 * i, 1.0 - 0.1 * i])
    assert len(study.trials) == 4
