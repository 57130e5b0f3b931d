"""`validate` refuses what `launch` would fail on, before Ray starts (issue 14, items 5, 6, 8).

The malformed specs themselves are in bad_specs/ (test_spec_corpus.py runs them); here: the
tables the checks read instead of importing torch agree with syncmodel, the checks' edges,
the study folder's problems (which need real files), and `launch` stopping before Ray.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.spec import SpecError, load_spec
from pipeline.spec.reading import MAX_RESOLVED_BYTES, check_tree
from pipeline.spec.static import (
    BACKBONE_STAGES,
    VAL_EPOCH_METRICS,
    VAL_FINAL_METRICS,
    Sizes,
    split_sizes,
)
from syncmodel.config import TrainConfig
from syncmodel.errors import ConfigError

HERE = Path(__file__).parent
BAD = HERE / "bad_specs"

MINIMAL = """\
name: t
train: {epochs: 2%s}
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
objectives:
  - {metric: test_acc, mode: max}
"""


def _spec(tmp_path: Path, train: str = "", extra: str = "") -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(MINIMAL % (", " + train if train else "") + extra)
    return path


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- the static tables


def test_backbone_stages_are_syncmodels() -> None:
    from syncmodel.nets import BACKBONES

    assert BACKBONE_STAGES == {name: BACKBONES.get(name).stages for name in BACKBONES.names()}


@pytest.mark.parametrize(
    "dataset, train",
    [
        ("digits", {}),
        ("digits", {"n_train": 100}),
        ("digits", {"n_train": 5000, "val_fraction": 0.25}),
        ("digits", {"val_fraction": 0.0}),
        ("shapes", {"n_train": 12, "val_fraction": 0.2, "image_size": 32}),
        ("fake-cifar10", {"n_train": 9, "val_fraction": 0.1, "image_size": 8}),
    ],
)
def test_split_sizes_are_what_the_loaders_give(dataset: str, train: dict[str, object]) -> None:
    from syncmodel.data import load_data

    config = TrainConfig(dataset=dataset, **train)
    bundle = load_data(config)
    assert split_sizes(config) == Sizes(len(bundle.train), len(bundle.val), len(bundle.test))


def test_metrics_on_the_validation_split_are_the_ones_nan_without_it() -> None:
    """One epoch with val_fraction 0: exactly VAL_EPOCH_METRICS are NaN per epoch, and exactly
    VAL_FINAL_METRICS among the final metrics."""
    from syncmodel.training import train

    result = train(TrainConfig(dataset="digits", n_train=64, val_fraction=0.0, epochs=1, device="cpu", width=4))
    nan_epoch = {k for k, v in result.history[0].items() if isinstance(v, float) and math.isnan(v)}
    nan_final = {k for k, v in result.metrics.items() if isinstance(v, float) and math.isnan(v)}
    assert nan_epoch == set(VAL_EPOCH_METRICS)
    assert nan_final == set(VAL_FINAL_METRICS)


def test_resource_unit_is_rays() -> None:
    import ray._raylet

    from pipeline.spec.sections import RESOURCE_UNITS

    assert ray._raylet.RESOURCE_UNIT_SCALING == RESOURCE_UNITS


# --------------------------------------------------------------------------- the checks' edges


@pytest.mark.parametrize("layers", ["[block3.0]", "[block1, block3.2]"])
def test_a_submodule_of_the_backbone_is_a_valid_layer(tmp_path: Path, layers: str) -> None:
    assert load_spec(_spec(tmp_path, f"layers: {layers}")).train.layers


def test_a_layer_must_exist_in_every_searched_backbone(tmp_path: Path) -> None:
    path = _spec(tmp_path, "layers: [layer4.1]")
    path.write_text(path.read_text().replace("search:\n", "search:\n  backbone: {choices: [resnet18, vgg11_bn]}\n"))
    with pytest.raises(SpecError, match=r"train.layers\[0\]: vgg11_bn has no layer 'layer4.1'"):
        load_spec(path)


@pytest.mark.parametrize("cpu, gpu", [(0.25, 0.0), (0.3333, 0.0), (1.5, 0.0001), (2.0, 0.5)])
def test_resources_in_rays_units_pass(tmp_path: Path, cpu: float, gpu: float) -> None:
    spec = load_spec(_spec(tmp_path, extra=f"resources: {{cpu: {cpu}, gpu: {gpu}}}\n"))
    assert (spec.resources.cpu, spec.resources.gpu) == (cpu, gpu)


@pytest.mark.parametrize("value", [0.00005, 0.12345, 1 / 3])
def test_resources_finer_than_rays_unit_are_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(SpecError, match="resources.cpu: Ray counts resources in steps of 0.0001"):
        load_spec(_spec(tmp_path, extra=f"resources: {{cpu: {value!r}}}\n"))


def test_val_fraction_zero_is_valid_when_nothing_reads_the_validation_split(tmp_path: Path) -> None:
    # the evaluation reads it unless told to measure the test split (evaluation.split)
    extra = "scheduler: {name: asha, metric: train_acc}\nevaluation: {split: test}\n"
    spec = load_spec(_spec(tmp_path, "val_fraction: 0", extra))
    assert spec.train.val_fraction == 0 and spec.scheduler.metric == "train_acc"
    assert spec.evaluation.split == "test"


def test_val_fraction_zero_with_asha_defaulting_to_a_validation_objective(tmp_path: Path) -> None:
    path = _spec(tmp_path, "val_fraction: 0", "scheduler: asha\n")
    path.write_text(path.read_text().replace("test_acc, mode: max", "spread, mode: min"))
    # spread as an objective is the test split's (fine); ASHA compares it per epoch on val
    with pytest.raises(SpecError, match="scheduler.metric: ASHA would compare spread per epoch"):
        load_spec(path)


def test_resolved_size_cap_counts_expanded_bytes() -> None:
    chunk = "x" * 1000
    below = {"name": "t", "description": [chunk] * (MAX_RESOLVED_BYTES // 1000 - 10)}
    check_tree(below)  # the same string object repeated, as an alias would give
    above = {"name": "t", "description": [chunk] * (MAX_RESOLVED_BYTES // 1000 + 10)}
    with pytest.raises(ConfigError, match=f"description: expands to more than {MAX_RESOLVED_BYTES} bytes"):
        check_tree(above)


def test_an_alias_bomb_prints_nothing_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = "x" * 100_000
    path = tmp_path / "bomb.yaml"
    path.write_text(
        f"name: t\ndescription: &a {big}\ntrain: {{epochs: 2, layers: [{', '.join(['*a'] * 500)}]}}\n"
        "search:\n  lr: {low: 0.001, high: 0.01}\nobjectives: [{metric: test_acc}]\n"
        f"storage: {tmp_path / 'study'}\n"
    )
    rc, out, err = _cli(["validate", str(path), "--json"], capsys)
    assert (rc, out) == (2, "") and "expands to more than" in err and len(err) < 1000
    rc, out, err = _cli(["launch", str(path)], capsys)
    assert rc == 2 and "expands to more than" in err and not (tmp_path / "study").exists()


# --------------------------------------------------------------------------- the study folder


def _storage_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "afile").write_text("x")
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    return {
        "file": (tmp_path / "afile", "is a file, not a folder"),
        "under a file": (tmp_path / "afile" / "study", f"cannot be made: {tmp_path / 'afile'} is a file"),
        "symlink loop": (tmp_path / "loop_a", "a symbolic link loop"),
        "under a symlink loop": (tmp_path / "loop_a" / "study", "a symbolic link loop"),
        "dangling symlink": (tmp_path / "dangling", "which does not exist"),
        # root may write anywhere but in /proc: the check makes a real file, like the tracking one
        "not writable": (Path("/proc/sys/syncstudy-test"), "folder not writable (/proc/sys, where it would be made)"),
    }


CASES = ["file", "under a file", "symlink loop", "under a symlink loop", "dangling symlink", "not writable"]


@pytest.mark.parametrize("case", CASES)
def test_a_bad_study_folder_fails_validate_naming_it(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage, words = _storage_cases(tmp_path)[case]
    rc, out, err = _cli(["validate", str(_spec(tmp_path, extra=f"storage: '{storage}'\n"))], capsys)
    assert (rc, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"storage: {storage}" in err and words in err, err


@pytest.mark.parametrize("case", CASES)
def test_a_bad_study_folder_stops_launch_before_ray(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import study

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(study, "ray_session", no_ray)
    storage, words = _storage_cases(tmp_path)[case]
    spec = _spec(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, out, err = _cli(["launch", str(spec), "--storage", str(storage)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"storage: {storage}" in err and words in err and "(from the command line)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize(
    "name",
    ["layers_unknown", "val_fraction_zero_val_acc", "val_split_empty_shapes", "cpu_finer_than_ray", "train_seed_2_32"],
)
def test_launch_refuses_what_validate_refuses_before_ray(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import study

    def no_ray(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(study, "ray_session", no_ray)
    monkeypatch.chdir(tmp_path)
    rc, out, err = _cli(["launch", str(BAD / f"{name}.yaml")], capsys)
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()


def test_reading_a_study_needs_no_writable_folder(tmp_path: Path) -> None:
    """`runs`/`pareto`/`export SPEC` only read the study: its folder need not be writable."""
    storage = Path("/proc/sys/syncstudy-test")
    path = _spec(tmp_path, extra=f"storage: '{storage}'\n")
    assert load_spec(path, writable=False).storage == str(storage)
    with pytest.raises(SpecError, match="storage: .* folder not writable"):
        load_spec(path)


def test_validate_shows_mo_asha_with_its_rung_signals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mo_asha scheduler is printed as such, with its signals (it once printed `asha on None`)."""
    extra = (
        "scheduler:\n  name: mo_asha\n  objectives: [val_acc, {metric: train_loss, mode: min}]\n"
        "  grace_period: 1\n"
    )
    rc, out, err = _cli(["validate", str(_spec(tmp_path, extra=extra))], capsys)
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("scheduler"))
    assert line.split(None, 1)[1] == "mo_asha on val_acc (max), train_loss (min), grace 1, reduction 2"
