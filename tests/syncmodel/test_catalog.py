"""syncmodel.catalog (torch-free names for spec validation) against the registries that
build those names, and the imports that must stay light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncmodel import catalog
from syncmodel.data.registry import DATASETS
from syncmodel.data.torchvision_sets import IMAGE_SUFFIXES
from syncmodel.focus import FOCUS_KINDS
from syncmodel.nets import BACKBONES
from syncmodel.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("builtin", "registry"),
    [(catalog.DATASETS, DATASETS), (catalog.BACKBONES, BACKBONES), (catalog.FOCUS_KINDS, FOCUS_KINDS)],
    ids=["dataset", "backbone", "focus_kind"],
)
def test_catalog_names_are_the_registries_names(builtin, registry):
    assert sorted(builtin) == registry.names()


def test_a_name_registered_at_run_time_is_known(monkeypatch):
    plugin = Registry[object]("backbone")
    for name in BACKBONES.names():
        plugin.register(name)(object())
    plugin.register("my_net")(object())
    monkeypatch.setattr(sys.modules["syncmodel.nets"], "BACKBONES", plugin)
    assert "my_net" in catalog.known_names("backbone")


def test_image_suffixes_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert set(IMAGE_SUFFIXES) == set(IMG_EXTENSIONS)


def _imported_after(code: str) -> set[str]:
    heavy = ("torch", "torchvision", "sklearn", "ray", "mlflow", "optuna")
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(m for m in {heavy!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return set(out.stdout.split())


def test_validating_a_spec_imports_nothing_heavy():
    """`syncstudy validate` and `launch` check a spec before anything heavy starts: the
    launch driver starts Ray while torch, MLflow and Optuna load."""
    loaded = _imported_after(
        "from pipeline.spec import load_spec\n"
        "for f in ('digits', 'shapes', 'cifar10-resnet18'):\n"
        "    load_spec(f'studies/{f}.yaml'); load_spec(f'studies/{f}.yaml', smoke=True)"
    )
    assert loaded == set()


def test_digits_training_does_not_import_torchvision():
    loaded = _imported_after(
        "from syncmodel.config import TrainConfig\nfrom syncmodel.data import load_data\n"
        "from syncmodel.nets import build_model\n"
        "c = TrainConfig(n_train=64)\nd = load_data(c)\nbuild_model(c, d.in_channels, d.num_classes, d.image_size)"
    )
    assert "torch" in loaded and "torchvision" not in loaded
