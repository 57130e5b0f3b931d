"""Provenance of a result row (issue 24): which code, library, device and data produced it.

A table that mixes rows of different code can only be read if each row says where it came
from; `docs/experiments/baselines.py` writes this with every run and marks (or refuses) the
rows of another commit, and every trial of a study records it (pipeline.trial, measured in the
trial's own process: a cluster's workers may run other code than the driver).
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
GIT_TIMEOUT_S = 10.0  # a hung git (a network file system, a lock) must not hold a trial up


@functools.cache
def git_commit(root: Path = ROOT) -> tuple[str | None, bool]:
    """(HEAD's commit, whether tracked files differ from it) of the checkout `root` is, or
    (None, False) when it is none (installed from a wheel, copied to a cluster's workers) or
    git cannot tell. Cached: measured once per process, never per trial or epoch."""
    # Only `root` itself: a wheel installed into a virtualenv that lies inside some other
    # checkout would otherwise report that checkout's commit. (.git is a file in a worktree.)
    if not (root / ".git").exists():
        return None, False
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root, capture_output=True, text=True, check=True, timeout=GIT_TIMEOUT_S,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, check=True, timeout=GIT_TIMEOUT_S,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, False
    return (head or None), bool(dirty)


def device_name(device: torch.device | str) -> str:
    """The device's name: "cpu", or "cuda:N (the card's name)": figures are reported with the card."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return str(dev)
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def data_version(dataset: str) -> str | None:
    """The version of what generates or supplies `dataset`'s images; None when nothing
    versions it (an image folder of the user's)."""
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
    return None


def provenance(dataset: str, device: str) -> dict[str, str | bool | None]:
    """{"commit", "dirty", "torch", "device", "data"} of a run on `dataset` and `device` (the
    card's name for CUDA runs, as the caller reports it); "commit" and "data" may be None."""
    commit, dirty = git_commit()
    return {
        "commit": commit,
        "dirty": dirty,
        "torch": torch.__version__,
        "device": device,
        "data": data_version(dataset),
    }
