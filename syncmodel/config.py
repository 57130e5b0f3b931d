"""The one typed training config: what `syncmodel.train` takes and what a study trial varies.

Plain dataclass, plain YAML-able values; `TrainConfig.from_dict` is the strict entry point
(unknown keys, wrong types and out-of-range values raise `ConfigError` naming the field).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

from syncmodel.errors import ConfigError

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")

@dataclass
class TrainConfig:
    # --- data (syncmodel.data) ---
    dataset: str = "digits"  # digits | shapes | mnist | fashion-mnist | cifar10 | cifar100 | imagefolder | fake-cifar10
    data_root: str | None = None  # torchvision sets / imagefolder; None → ./data
    download: bool = False
    image_size: int | None = None  # resize to this side; None → the data set's default
    n_train: int | None = None  # cap on training images (None → all); shapes: how many to generate
    val_fraction: float = 0.1  # held out of the training split for validation
    # --- model (syncmodel.nets) ---
    backbone: str = "simple_cnn"  # simple_cnn | resnet18 | vgg11_bn
    width: int = 32  # base channel width (simple_cnn / vgg11_bn); resnet18 ignores it
    cifar_stem: bool = True  # resnet18: 3x3 stem, no max-pool (CIFAR-sized inputs)
    layers: list[str] | None = None  # modules whose post-ReLU output is regularised; None → last conv stage
    # --- optimisation ---
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw | sgd
    # cosine | onecycle | constant, stepped per optimisation step. constant by default: on the
    # digits study's 10 epochs a decaying rate stops focus + coupling mid-climb (docs/design.md §5)
    lr_schedule: str = "constant"
    lr_warmup_fraction: float = 0.05  # cosine: linear warm-up over this fraction of all steps
    bn_stats_images: int = 2048  # BN statistics recomputed over this many train images per epoch; 0 = off
    # --- focus regulariser (docs/design.md §1.1) ---
    lambda_focus: float = 0.0
    focus_kind: str = "spread"  # spread | template | (further kinds registered in syncmodel.focus)
    focus_position: str = "argmax"  # argmax | centroid
    focus_offclass: float = 1.0  # class_spread: weight of the off-class suppression
    focus_class_momentum: float = 0.9  # class_spread / icnn: EMA momentum of the filters' class means
    focus_min_mass: float = 0.01  # a map / filter is live above this fraction of the batch's mean mass
    focus_icnn_decay: bool = True  # icnn: strength falls as 1 / (epoch + 1), as ICNN's code
    focus_icnn_beta_rate: float = 0.05  # icnn: fraction of the way beta moves to its target per step
    focus_gate_sigma: float = 0.35  # gate: width of the forward Gaussian gate, in [-1, 1] units
    focus_radius: float = 0.35  # outside: radius around the focus that costs nothing, [-1, 1] units
    # --- synchronisation coupling (docs/design.md §1.2) ---
    coupling_K: float = 0.0
    epsilon: float = 0.5
    epsilon_final: float | None = None  # linear annealing of epsilon to this value over training
    descriptor: str = "response"  # response | weight
    k: int | None = None  # k nearest neighbours instead of the epsilon ball
    warmup_epochs: int = 0  # epochs of plain training before the coupling starts
    # --- run ---
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    checkpoint_every: int = 1  # write a weights-only checkpoint every N epochs (and at the end)
    # per-epoch `interp_estimate` (syncmodel.evaluation.interpretability_estimate on 256 fixed
    # val images); the pipeline turns it on when a scheduler or objective compares it
    epoch_estimate: bool = False

    # Range checks: field -> (low, high, low_inclusive); None bound = open.
    _RANGES = {
        "val_fraction": (0.0, 1.0, True),
        "width": (1, None, True),
        "epochs": (1, None, True),
        "batch_size": (1, None, True),
        "lr": (0.0, None, False),
        "weight_decay": (0.0, None, True),
        "lr_warmup_fraction": (0.0, 1.0, True),
        "bn_stats_images": (0, None, True),
        "lambda_focus": (0.0, None, True),
        "focus_offclass": (0.0, None, True),
        "focus_class_momentum": (0.0, 1.0, True),
        "focus_min_mass": (0.0, 1.0, True),
        "focus_icnn_beta_rate": (0.0, 1.0, True),
        "focus_gate_sigma": (0.0, None, False),
        "focus_radius": (0.0, None, False),
        "coupling_K": (0.0, None, True),
        "epsilon": (0.0, None, False),
        "epsilon_final": (0.0, None, False),
        "k": (1, None, True),
        "warmup_epochs": (0, None, True),
        "num_workers": (0, None, True),
        "checkpoint_every": (1, None, True),
        "image_size": (4, None, True),
        "n_train": (1, None, True),
        # numpy and sklearn take seeds in [0, 2**32): outside it the data split fails mid-run
        "seed": (0, 2**32, True),
    }

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, prefix: str = "") -> None:
        """Check ranges and choices; raises `ConfigError` naming `prefix + field`."""
        for name, (low, high, incl) in self._RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if low is not None and (value < low if incl else value <= low):
                op = ">=" if incl else ">"
                raise ConfigError(prefix + name, f"must be {op} {low}, got {value!r}")
            if high is not None and value >= high:
                raise ConfigError(prefix + name, f"must be < {high}, got {value!r}")
        choices = {
            "optimizer": ("adam", "adamw", "sgd"),
            "lr_schedule": ("cosine", "onecycle", "constant"),
            "focus_position": ("argmax", "centroid"),
            "descriptor": ("response", "weight"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    prefix + name, f"must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.layers is not None and len(self.layers) == 0:
            raise ConfigError(prefix + "layers", "must name at least one layer, or be omitted")
        # Checked here, not at torch.device(): a spec's `validate` must refuse what a trial
        # would fail on (docs/spec.md lists the accepted names).
        check_device(self.device, prefix + "device")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, raw: dict[str, Any], prefix: str = "") -> TrainConfig:
        """Strict constructor: unknown keys and wrong types raise `ConfigError`."""
        if not isinstance(raw, dict):
            raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {type(raw).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in known:
                raise ConfigError(
                    prefix + str(key), f"unknown field; known: {', '.join(sorted(known))}"
                )
            kwargs[key] = coerce(value, _field_type(cls, key), prefix + key)
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            if not prefix:
                raise
            raise ConfigError(prefix + exc.field, exc.message) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def check_device(name: str, field: str = "device") -> None:
    """`ConfigError(field)` unless `name` is auto, cpu, mps, cuda or cuda:N (docs/spec.md)."""
    if not _DEVICE.fullmatch(str(name)):
        raise ConfigError(field, f"must be auto, cpu, mps, cuda or cuda:N, got {name!r}")


# Dataclass field annotations are strings (from __future__ import annotations): resolve once.
@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_type(cls: type, name: str) -> Any:
    return _type_hints(cls)[name]


def coerce(value: Any, tp: Any, field_name: str) -> Any:
    """Check `value` against a simple annotation (int, float, str, bool, X | None, list[X])."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, field_name)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field_name, f"must be a list, got {type(value).__name__}")
        return [coerce(v, inner, f"{field_name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(field_name, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field_name, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field_name, f"must be a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(field_name, f"must be finite, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(field_name, f"must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported annotation {tp!r} for {field_name}")


