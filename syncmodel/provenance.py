"""Provenance of a result row (issue 24): which code, library, device and data produced it.

A table that mixes rows of different code can only be read if each row says where it came
from; `docs/experiments/baselines.py` writes this with every run and marks (or refuses) the
rows of another commit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> tuple[str, bool]:
    """(HEAD's commit, whether tracked files differ from it); ("unknown", False) without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return head, bool(dirty)


def data_version(dataset: str) -> str:
    """The version of what generates or supplies `dataset`'s images."""
    if dataset.startswith("shapes"):
        from syncmodel.data.shapes import GENERATOR_VERSION

        return f"shapes generator {GENERATOR_VERSION}"
    if dataset == "digits":
        import sklearn

        return f"scikit-learn {sklearn.__version__} digits"  # bundled with the package
    if "cifar" in dataset or "mnist" in dataset:
        import importlib.util

        if importlib.util.find_spec("torchvision") is not None:
            import torchvision

            return f"torchvision {torchvision.__version__} {dataset}"
    return dataset


def provenance(dataset: str, device: str) -> dict[str, str | bool]:
    """{"commit", "dirty", "torch", "device", "data"} of a run on `dataset` and `device` (the
    card's name for CUDA runs, as the caller reports it)."""
    commit, dirty = git_commit()
    return {
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "device": device,
        "data": data_version(dataset),
    }
