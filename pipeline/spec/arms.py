"""A comparison spec: methods compared by searching each one with equal budgets, repeated.

A comparison is a study spec whose `search:` is replaced by `arms:` (each arm: the `train`
fields that define its method and its own `search` space), plus `repeats`, `reference` (the
hypervolume's reference point) and `equivalence_margin`. At load time it is expanded into
one ordinary study spec per arm and repeat (`<name>-<arm>-r<k>`), each checked as a study is
(`pipeline.spec.sections.build`), so that launching, resuming and reading a comparison are
those of its studies:

- the arm's `train` over the comparison's (a field the arm searches is dropped from the
  comparison's `train`: the arm's own search space wins);
- the sampler's seed and `train.seed` are the comparison's plus k (repeat k of every arm
  gets the same seeds: repeats pair across arms);
- storage `<storage>/<arm>-r<k>`; one tracking store and experiment for all (the
  comparison's: by default `<storage>/mlflow.db`, experiment = the comparison's name,
  artifacts in `<storage>/mlartifacts`).

An error in an arm names it: `arms.plain.train.lr`, `arms.sinn.search.coupling_K.low`.
docs/spec.md documents every key.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.spec.load import _blame, _expand_overrides, _merge
from pipeline.spec.reading import SpecError, error_message, key_text, read_yaml, short
from pipeline.spec.sections import SMOKE_KEYS, TOP_KEYS, _int, build, mapping
from pipeline.spec.types import Objective, StudySpec
from syncmodel.config import coerce
from syncmodel.errors import ConfigError

COMPARISON_ONLY = ("arms", "repeats", "reference", "equivalence_margin")
COMPARISON_KEYS = tuple(k for k in TOP_KEYS if k != "search") + COMPARISON_ONLY
# The smoke form may take fewer arms (a list of their names) and repeats; the reference
# point and the margin are fixed before any run, in both forms alike.
COMPARISON_SMOKE_KEYS = tuple(k for k in SMOKE_KEYS if k != "search") + ("arms", "repeats")
ARM_KEYS = ("description", "train", "search")
ARM_RE = re.compile(r"^[a-z0-9][a-z0-9_]{0,23}$")
MARGIN_KEYS = ("hypervolume",)
SAVED_FILE = "comparison.yaml"  # the comparison as launched, in its storage folder


@dataclass
class ComparisonSpec:
    name: str
    arms: dict[str, list[StudySpec]]  # arm → its studies, repeat 0 first
    arm_fields: dict[str, dict[str, Any]]  # arm → the train fields that define its method
    objectives: list[Objective]
    repeats: int
    samples: int
    reference: dict[str, float]  # objective metric → the reference point's value
    margin: float  # equivalence margin of the hypervolume's paired difference
    storage: str
    source: Path | None = None
    smoke: bool = False
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the form as loaded

    def studies(self) -> list[tuple[str, int, StudySpec]]:
        """(arm, repeat, study) in launch order: repeat by repeat, every arm in each (an
        interrupted comparison then holds whole repeats, which pair across arms)."""
        return [(arm, k, specs[k]) for k in range(self.repeats) for arm, specs in self.arms.items()]

    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]


def is_comparison(path: str | Path) -> bool:
    """Whether the YAML file at `path` is a comparison (has `arms:`); a file that cannot be
    read is left to the study loader, which says why in one line."""
    try:
        doc = read_yaml(path)
    except Exception:  # noqa: BLE001 - load_spec reports it
        return False
    return isinstance(doc, dict) and "arms" in doc


def sub_name(name: str, arm: str, repeat: int) -> str:
    return f"{name}-{arm}-r{repeat}"


def load_comparison(
    path: str | Path,
    *,
    smoke: bool = False,
    overrides: dict[str, Any] | None = None,
    check_data: bool = True,
    writable: bool = True,
) -> ComparisonSpec:
    """Read and check a comparison spec, both forms (as `load_spec`); returns the smoke form
    when `smoke`. `overrides` as `load_spec`'s ("storage", "tracking.uri", "name")."""
    doc = read_yaml(path)
    try:
        if not isinstance(doc, dict):
            raise ConfigError("spec", f"the top level must be a mapping of keys, got {type(doc).__name__}")
        mapping(doc, "spec", COMPARISON_KEYS)
        smoke_raw = doc.get("smoke")
        if "smoke" in doc:
            mapping(smoke_raw, "smoke", COMPARISON_SMOKE_KEYS)
        base = {k: v for k, v in doc.items() if k != "smoke"}
        extra = _expand_overrides(overrides or {})
        full = _build(_merge(base, extra), Path(path), False, check_data, writable, None)
        if smoke_raw is None:
            if smoke:
                raise ConfigError("smoke", "--smoke was asked for, but the spec has no smoke section")
            return full
        reduced = _build(_merge(_smoke_form(base, smoke_raw), extra), Path(path), True, check_data, writable, smoke_raw)
        return reduced if smoke else full
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(path, exc.field, error_message(exc)) from None


def _smoke_form(base: dict[str, Any], smoke_raw: dict[str, Any]) -> dict[str, Any]:
    """The smoke section over the rest; its `arms:` is a list of the arms it keeps."""
    layer = {k: v for k, v in smoke_raw.items() if k != "arms"}
    out = _merge(base, layer)
    if "arms" in smoke_raw:
        keep = smoke_raw["arms"]
        arms = mapping(base.get("arms"), "arms", None) if "arms" in base else {}
        if not isinstance(keep, list) or not keep:
            raise ConfigError("smoke.arms", "must be a non-empty list of arm names")
        for i, name in enumerate(keep):
            if name not in arms:
                raise ConfigError(f"smoke.arms[{i}]", f"no arm {short(name)}; arms: {', '.join(map(str, arms))}")
        out["arms"] = {name: arms[name] for name in keep}
    return out


def _build(
    raw: dict[str, Any], source: Path, smoke: bool, check_data: bool, writable: bool, smoke_raw: dict[str, Any] | None
) -> ComparisonSpec:
    for key in ("name", "arms", "objectives", "repeats", "reference", "equivalence_margin"):
        if key not in raw:
            raise ConfigError(key, "required in a comparison (see docs/spec.md, Comparisons)")
    name = coerce(raw["name"], str, "name")
    arms_raw = mapping(raw["arms"], "arms", None)
    if len(arms_raw) < 2:
        raise ConfigError("arms", f"a comparison needs at least 2 arms, got {len(arms_raw)}")
    for arm, body in arms_raw.items():
        if not isinstance(arm, str) or not ARM_RE.fullmatch(arm):
            raise ConfigError(f"arms.{key_text(arm)}", "an arm's name is 1-24 of a-z 0-9 _ (first a letter or digit)")
        mapping(body, f"arms.{arm}", ARM_KEYS)
        if "search" not in body:
            raise ConfigError(f"arms.{arm}.search", "required: the arm's own search space")
        mapping(body.get("train", {}), f"arms.{arm}.train", None)
    repeats = _int(raw["repeats"], "repeats", 2)  # a paired interval needs two pairs
    storage = raw.get("storage")
    storage = os.path.abspath(os.path.expanduser(str(storage if storage is not None else Path("runs") / str(name))))
    common = {k: v for k, v in raw.items() if k not in COMPARISON_ONLY}
    arms: dict[str, list[StudySpec]] = {}
    for arm, body in arms_raw.items():
        arms[arm] = []
        for k in range(repeats):
            sub = _sub_raw(common, arm, body, k, str(name), storage)
            try:
                arms[arm].append(build(sub, source, smoke, check_data, writable))
            except ConfigError as exc:
                raise _arm_error(exc, arm, body, k, smoke_raw) from None
    first = arms[next(iter(arms))][0]
    reference = _parse_reference(raw["reference"], first.objectives)
    margin = _parse_margin(raw["equivalence_margin"])
    return ComparisonSpec(
        name=str(name), arms=arms, arm_fields={a: dict(b.get("train") or {}) for a, b in arms_raw.items()},
        objectives=list(first.objectives), repeats=repeats, samples=first.samples, reference=reference,
        margin=margin, storage=storage, source=source.absolute(), smoke=smoke,
        description=first.description, raw=raw,
    )  # fmt: skip


def _sub_raw(common: dict[str, Any], arm: str, body: dict[str, Any], k: int, name: str, storage: str) -> dict[str, Any]:
    """The raw study spec of `arm`'s repeat k."""
    search = body["search"]
    searched = set(search) if isinstance(search, dict) else set()
    train = {f: v for f, v in dict(common.get("train") or {}).items() if f not in searched}
    train.update(body.get("train") or {})
    if "seed" not in searched:
        train["seed"] = _plus(train.get("seed", 0), k, "train.seed")
    sampler = common.get("sampler", {})
    sampler = {"name": sampler} if isinstance(sampler, str) else dict(mapping(sampler, "sampler", None))
    if sampler.get("seed", 0) is not None:
        sampler["seed"] = _plus(sampler.get("seed", 0), k, "sampler.seed")
    tracking = dict(mapping(common.get("tracking", {}), "tracking", None))
    uri = tracking.get("uri")
    if uri is None:
        tracking["uri"] = f"sqlite:///{Path(storage) / 'mlflow.db'}"
    tracking.setdefault("experiment", name)
    remote = isinstance(uri, str) and uri.lower().startswith(("http:", "https:", "databricks"))
    if "artifact_location" not in tracking and not remote:
        # one experiment has one artifact location: the comparison's, not its first study's
        tracking["artifact_location"] = str(Path(storage) / "mlartifacts")
    return {
        **common, "name": sub_name(name, arm, k), "train": train, "search": search,
        "sampler": sampler, "tracking": tracking, "storage": str(Path(storage) / f"{arm}-r{k}"),
    }  # fmt: skip


def _plus(value: Any, k: int, path: str) -> int:
    return coerce(value, int, path) + k


def _arm_error(
    exc: ConfigError, arm: str, body: dict[str, Any], k: int, smoke_raw: dict[str, Any] | None
) -> ConfigError:
    """An error of arm `arm`'s study, pointed at the arm's own field when it is one."""
    head, _, rest = exc.field.partition(".")
    head = head.split("[")[0]
    sub = rest.split(".")[0].split("[")[0]
    if head == "search" or (head == "train" and sub in (body.get("train") or {})):
        return ConfigError(f"arms.{arm}.{exc.field}", error_message(exc))
    note = f"(arm {arm}, repeat {k})"
    if smoke_raw is not None:
        layer = {key: v for key, v in smoke_raw.items() if key != "arms"}
        blamed = _blame(exc, layer, "smoke.", "")
        if blamed.field != exc.field:
            return ConfigError(blamed.field, f"{error_message(exc)} {note}")
    return ConfigError(exc.field, f"{error_message(exc)} {note}")


def _parse_reference(raw: Any, objectives: list[Objective]) -> dict[str, float]:
    raw = mapping(raw, "reference", None)
    metrics = [o.metric for o in objectives]
    for key in raw:
        if key not in metrics:
            raise ConfigError(f"reference.{key_text(key)}", f"not an objective; objectives: {', '.join(metrics)}")
    out: dict[str, float] = {}
    for m in metrics:
        if m not in raw:
            raise ConfigError(f"reference.{m}", "required: the reference point has a value for every objective")
        value = coerce(raw[m], float, f"reference.{m}")
        if not math.isfinite(value):
            raise ConfigError(f"reference.{m}", f"must be finite, got {value}")
        out[m] = value
    return out


def _parse_margin(raw: Any) -> float:
    raw = mapping(raw, "equivalence_margin", MARGIN_KEYS)
    if "hypervolume" not in raw:
        raise ConfigError("equivalence_margin.hypervolume", "required: fixed before the runs it judges")
    value = coerce(raw["hypervolume"], float, "equivalence_margin.hypervolume")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("equivalence_margin.hypervolume", f"must be a positive number, got {value}")
    return value


def saved_form(spec: ComparisonSpec) -> dict[str, Any]:
    """The loaded form as a comparison spec (no smoke section; storage absolute): what
    launch writes to `<storage>/comparison.yaml`, read back by `compare --study NAME`."""
    out = dict(spec.raw)
    out["storage"] = spec.storage
    out.pop("smoke", None)
    return out


def saved_text(spec: ComparisonSpec) -> str:
    """The text of `<storage>/comparison.yaml`: a header line (smoke form or not, and the spec
    it came from) over `saved_form`."""
    import yaml

    header = f"# the comparison as launched{' (smoke form)' if spec.smoke else ''}, from {spec.source}\n"
    return header + yaml.safe_dump(saved_form(spec), sort_keys=False)
