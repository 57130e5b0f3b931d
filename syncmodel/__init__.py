"""syncmodel: synchronization-inspired interpretable CNNs (focus + Kuramoto/Sync coupling).

Imports torch (+ numpy, scikit-learn) only; never Ray, MLflow or Optuna. Public names are
loaded lazily so that `import syncmodel` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from syncmodel.config import TrainConfig
from syncmodel.errors import CheckpointError, ConfigError, DataError, SyncStudyError

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "focus_loss": "syncmodel.focus",
    "sync_loss": "syncmodel.sync",
    "neighbourhoods": "syncmodel.sync",
    "Regularizer": "syncmodel.regularizer",
    "build_model": "syncmodel.nets",
    "load_data": "syncmodel.data",
    "train": "syncmodel.training",
    "TrainResult": "syncmodel.training",
    "load_checkpoint": "syncmodel.checkpoint",
    "save_checkpoint": "syncmodel.checkpoint",
    "sync_clusters": "syncmodel.modules",
    "evaluate": "syncmodel.evaluation",
}

__all__ = [
    "TrainConfig",
    "SyncStudyError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'syncmodel' has no attribute {name!r}")
