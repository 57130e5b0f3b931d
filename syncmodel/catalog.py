"""The names syncmodel's registries resolve, importable without torch.

A study spec is validated before anything heavy starts (`syncstudy validate`, `launch`):
these tuples let it name the known data sets, backbones and focus kinds without importing
torch (seconds). The registries (syncmodel.data.registry, syncmodel.nets, syncmodel.focus)
stay the source of what each name builds; tests/syncmodel/test_catalog.py keeps the two
equal. A name registered at run time by a plugin is found through its registry
(`known_names`).
"""

from __future__ import annotations

import sys

DATASETS = (
    "cifar10",
    "cifar100",
    "digits",
    "fake-cifar10",
    "fashion-mnist",
    "imagefolder",
    "mnist",
    "shapes",
    "shapes-hard",
)
BACKBONES = ("resnet18", "simple_cnn", "vgg11_bn")
FOCUS_KINDS = ("class_spread", "gate", "icnn", "outside", "spread", "template")

# kind (a TrainConfig field) -> (its built-in names, module and attribute of the registry that builds them)
REGISTRIES = {
    "dataset": (DATASETS, "syncmodel.data.registry", "DATASETS"),
    "backbone": (BACKBONES, "syncmodel.nets", "BACKBONES"),
    "focus_kind": (FOCUS_KINDS, "syncmodel.focus", "FOCUS_KINDS"),
}


def known_names(kind: str) -> list[str]:
    """The built-in names of `kind` (dataset, backbone, focus_kind), plus any registered in
    this process since (a registry already imported: torch is never imported here)."""
    builtin, module, attr = REGISTRIES[kind]
    registry = getattr(sys.modules.get(module), attr, None)
    extra = registry.names() if registry is not None else ()
    return sorted({*builtin, *extra})
