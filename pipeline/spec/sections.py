"""The sections of a study spec, parsed and checked: raw YAML values in, typed parts out.

`build` is the whole of one form (full or smoke) of a spec; every problem raises `ConfigError`
naming the field. Called by `pipeline.spec.load.load_spec` (which adds the file name).
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import importlib.util
import math
import os
import re
import stat
import typing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pipeline.redact import HTTP_CREDENTIALS, redact, userinfo
from pipeline.spec.grid import space_size
from pipeline.spec.metrics import METRICS, PART_DATASETS, per_epoch_metrics
from pipeline.spec.mo_asha import parse_mo_asha
from pipeline.spec.reading import error_message, key_text, short
from pipeline.spec.static import (
    BACKBONE_STAGES,
    MIN_IMAGE_SIZE,
    VAL_EPOCH_METRICS,
    VAL_FINAL_METRICS,
    split_sizes,
)
from pipeline.spec.types import (
    EvaluationSpec,
    Objective,
    Param,
    Resources,
    SamplerSpec,
    SchedulerSpec,
    StudySpec,
    TrackingSpec,
)
from syncmodel.catalog import REGISTRIES, known_names
from syncmodel.config import TrainConfig, coerce
from syncmodel.errors import ConfigError
from syncmodel.files import can_create_in

TOP_KEYS = (
    "name", "description", "train", "search", "objectives", "sampler", "scheduler", "samples",
    "concurrency", "resources", "tracking", "evaluation", "storage", "retries", "smoke",
)
SMOKE_KEYS = tuple(k for k in TOP_KEYS if k not in ("name", "description", "smoke"))
SAMPLERS = ("tpe", "nsga2", "gp", "random", "grid")
SCHEDULERS = ("none", "asha", "mo_asha")
MODES = ("max", "min")
EVAL_SPLITS = ("val", "test")  # evaluation.split
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# Fields a study may not search, and why (the message says it).
NOT_SEARCHABLE = {
    **dict.fromkeys(
        ("dataset", "data_root", "download", "image_size", "n_train", "val_fraction"),
        "the data set is loaded once per node and shared by all trials; fix it in train",
    ),
    "epochs": "the training length is fixed per study (ASHA stops trials early); fix it in train",
    "layers": "a list of layer names; fix it in train",
    **dict.fromkeys(
        ("device", "num_workers", "checkpoint_every", "epoch_estimate"),
        "a run setting, not a hyperparameter; fix it in train",
    ),
}

# Data sets read from files (torchvision layouts) and what their data_root must hold.
DATA_FILES = {
    "mnist": "torchvision's MNIST files (MNIST/raw/*-ubyte)",
    "fashion-mnist": "torchvision's FashionMNIST files (FashionMNIST/raw/*-ubyte)",
    "cifar10": "the CIFAR-10 python version (cifar-10-batches-py/)",
    "cifar100": "the CIFAR-100 python version (cifar-100-python/)",
    "imagefolder": "one sub-folder of images per class",
}

_HINTS = typing.get_type_hints(TrainConfig)
_SECRET_QUERY = re.compile(r"pass|secret|token|key|credential", re.I)
_ENV_REF = re.compile(r"\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,40}")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Exactly the schemes `launch` can record into (pipeline.record.tracking.check_target): a file
# store, databricks and SQLAlchemy's `dialect+driver://` forms validated before but could not
# be launched. A database scheme also needs the driver SQLAlchemy loads for it by default.
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")
DB_DRIVERS = {"postgresql": ("psycopg2", "psycopg2-binary"), "mysql": ("MySQLdb", "mysqlclient"), "mssql": ("pyodbc", "pyodbc")}
# Trials running at once: Tune's searcher and the driver's bookkeeping are sized for hundreds
# (bench/bookkeeping_study.py ran 1,000 trials 2 at a time); 10,000 at once would stall the
# driver while Tune asks the searcher for them all. More than `samples` is allowed: at most
# `samples` trials then run at once.
MAX_CONCURRENCY = 1024


# --------------------------------------------------------------------------- one form of a spec


def build(
    raw: dict[str, Any], source: Path, smoke: bool, check_data: bool = True, writable: bool = True
) -> StudySpec:
    """A `StudySpec` from one form's raw mapping: each section parsed, then the checks across."""
    mapping(raw, "spec", TOP_KEYS)
    for key in ("name", "search", "objectives"):
        if key not in raw:
            raise ConfigError(key, "required (see docs/spec.md)")
    name = _string(raw["name"], "name")
    if not NAME_RE.fullmatch(name):  # not match: `$` also matches before a final "\n"
        raise ConfigError("name", f"must be 1-64 of a-z 0-9 _ - (first a letter or digit), got {short(name)}")
    description = _string(raw.get("description", ""), "description", empty=True)
    train_raw = mapping(raw.get("train", {}), "train", tuple(TrainConfig.field_names()))
    train = TrainConfig.from_dict(train_raw, prefix="train.")
    search = _parse_search(raw["search"], train_raw)
    objectives = _parse_objectives(raw["objectives"])
    sampler = _parse_sampler(raw.get("sampler", {}))
    scheduler = _parse_scheduler(raw.get("scheduler", {}), objectives, train.epochs)
    samples = _int(raw.get("samples", 8), "samples", 1)
    concurrency = _int(raw.get("concurrency", 1), "concurrency", 1)
    if concurrency > MAX_CONCURRENCY:
        raise ConfigError(
            "concurrency", f"must be <= {MAX_CONCURRENCY} trials at once, got {concurrency}"
        )
    retries = _int(raw.get("retries", 0), "retries", 0)
    resources = _parse_resources(raw.get("resources", {}))
    evaluation = _parse_evaluation(raw.get("evaluation", {}))
    tracking = _parse_tracking(raw.get("tracking", {}))
    storage = raw.get("storage")
    if storage is None:
        storage = _abs(Path("runs") / name)
    else:
        storage = _folder(_string(storage, "storage"), "storage")
    _check_storage(storage, writable)

    _check_corners(train, search)
    scheduler = _resolve_scheduler(scheduler, objectives, train)
    _check_sampler(sampler, search, samples)
    _check_objectives(objectives, train, evaluation)
    _check_validation_split(objectives, scheduler, train)
    _check_evaluation_split(evaluation, train)
    _check_device(train, resources)
    train = _check_data(train, check_data)
    _check_names(train, search)
    _check_sizes(train)
    _check_layers(train, search)
    return StudySpec(
        name=name, train=train, search=search, objectives=objectives, sampler=sampler,
        scheduler=scheduler, samples=samples, concurrency=concurrency, resources=resources,
        tracking=tracking, evaluation=evaluation, storage=storage, retries=retries,
        source=source.absolute(), smoke=smoke, description=description,
    )


# --------------------------------------------------------------------------- typed reads


def mapping(value: Any, path: str, allowed: tuple[str, ...] | None) -> dict[str, Any]:
    """`value` as a mapping whose keys are all in `allowed` (None: any)."""
    if not isinstance(value, dict):
        raise ConfigError(path, f"must be a mapping, got {_kind(value)}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                if path == "spec" and not _PLAIN_KEY.fullmatch(key):
                    # not a word: perhaps a line of a file that is no spec (a password hash)
                    raise ConfigError("spec", f"a top-level key that is not a spec key; known: {', '.join(allowed)}")
                where = key_text(key) if path == "spec" else f"{path}.{key_text(key)}"
                raise ConfigError(where, f"unknown key;{_did_you_mean(key, allowed)} known: {', '.join(allowed)}")
    return value


def _did_you_mean(word: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" did you mean {close[0]}?" if close else ""


def _kind(value: Any) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {short(value)}"


def _string(value: Any, path: str, empty: bool = False) -> str:
    value = coerce(value, str, path)
    if not empty and not value.strip():
        raise ConfigError(path, "must not be empty")
    return value


def _int(value: Any, path: str, minimum: int) -> int:
    value = coerce(value, int, path)
    if value < minimum:
        raise ConfigError(path, f"must be >= {minimum}, got {value}")
    return value


def _number(value: Any, path: str) -> float:
    return coerce(value, float, path)


def _named_section(raw: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A section given as a mapping, or as its name alone: `sampler: tpe`, `scheduler: asha`."""
    return {"name": raw} if isinstance(raw, str) else mapping(raw, path, allowed)


def _abs(path: Path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def _folder(value: str, path: str) -> str:
    """A local (or mounted) folder path, made absolute. A URI is refused: `s3://bucket/x` was
    taken for the relative folder `./s3:/bucket/x` (remote storage is not supported)."""
    if not value.strip():
        raise ConfigError(path, "must not be empty")
    if _SCHEME.match(value):
        scheme = value.split(":", 1)[0]
        raise ConfigError(
            path, f"a {scheme}:// URI is not supported: give a folder path (local or a mounted share)"
        )
    return _abs(Path(value))


def _location(value: str, path: str) -> str:
    """A folder or a URI (s3://, gs://): folders made absolute, URIs kept."""
    if not value.strip():
        raise ConfigError(path, "must not be empty")
    return value if _SCHEME.match(value) else _abs(Path(value))


# --------------------------------------------------------------------------- search space


def _field_type(name: str) -> Any:
    """The base type of a TrainConfig field (`int | None` → int)."""
    tp = _HINTS[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args and typing.get_origin(tp) is not list else tp


def _parse_search(raw: Any, train_raw: dict[str, Any]) -> dict[str, Param]:
    raw = mapping(raw, "search", None)
    fields = TrainConfig.field_names()
    searchable = [f for f in fields if f not in NOT_SEARCHABLE]
    out: dict[str, Param] = {}
    for name, spec in raw.items():
        path = f"search.{key_text(name)}"
        if name not in fields:
            hint = _did_you_mean(name, fields)
            raise ConfigError(path, f"not a TrainConfig field;{hint} searchable: {', '.join(searchable)}")
        if name in NOT_SEARCHABLE:
            raise ConfigError(path, f"cannot be searched: {NOT_SEARCHABLE[name]}")
        if name in train_raw:
            raise ConfigError(
                path,
                f"also fixed in train.{name}; a field is either fixed in train or searched",
            )
        out[name] = _parse_param(name, spec, path)
    if not any(p.kind != "fixed" for p in out.values()):
        raise ConfigError(
            "search",
            "nothing to search: give at least one range {low, high} or {choices: [...]}",
        )
    return out


def _parse_param(name: str, spec: Any, path: str) -> Param:
    tp = _field_type(name)
    if isinstance(spec, list):
        raise ConfigError(path, "a list is not a dimension: write {choices: [...]} to choose among values")
    if not isinstance(spec, dict):
        return Param(name, "fixed", value=coerce(spec, _HINTS[name], path))
    if "choices" in spec:
        mapping(spec, path, ("choices",))
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{path}.choices", f"must be a non-empty list, got {_kind(choices)}")
        values = []
        for i, choice in enumerate(choices):
            if isinstance(choice, (dict, list)):
                raise ConfigError(f"{path}.choices[{i}]", f"must be a single value, got {_kind(choice)}")
            value = coerce(choice, _HINTS[name], f"{path}.choices[{i}]")
            if any(value == v and type(value) is type(v) for v in values):
                raise ConfigError(f"{path}.choices[{i}]", f"duplicate choice {short(value)}")
            values.append(value)
        return Param(name, "categorical", choices=tuple(values))
    mapping(spec, path, ("low", "high", "log", "step"))
    if tp not in (int, float):
        raise ConfigError(
            path,
            f"a range needs a numeric field ({name} is {tp.__name__}); use {{choices: [...]}}",
        )
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(
                f"{path}.{key}",
                "missing: a range needs low and high (or give choices, or a fixed value)",
            )
    low, high = coerce(spec["low"], tp, f"{path}.low"), coerce(spec["high"], tp, f"{path}.high")
    log = coerce(spec.get("log", False), bool, f"{path}.log")
    if low >= high:
        raise ConfigError(
            f"{path}.low",
            f"must be < high ({high}), got {low}: the range is empty or inverted",
        )
    if log and low <= 0:
        raise ConfigError(f"{path}.low", f"a log range needs low > 0, got {low}")
    if not math.isfinite(high - low):
        raise ConfigError(f"{path}.high", "the range is too wide to sample")
    step = None
    if spec.get("step") is not None:
        step = coerce(spec["step"], tp, f"{path}.step")
        if step <= 0:
            raise ConfigError(f"{path}.step", f"must be > 0, got {step}")
        if log and (tp is float or step != 1):
            raise ConfigError(
                f"{path}.step",
                "cannot be combined with log: true (Optuna has no stepped log ranges)",
            )
        n = (high - low) / step
        if not math.isfinite(n) or abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
            raise ConfigError(
                f"{path}.step",
                f"high - low ({high - low:g}) must be a multiple of step ({step:g})",
            )
    return Param(name, "int" if tp is int else "float", low=low, high=high, log=log, step=step)


def _corners(p: Param) -> list[tuple[str, Any]]:
    if p.kind == "categorical":
        return [(f".choices[{i}]", c) for i, c in enumerate(p.choices or ())]
    if p.kind == "fixed":
        return [("", p.value)]
    return [(".low", p.low), (".high", p.high)]


def _check_corners(train: TrainConfig, search: dict[str, Param]) -> None:
    """Every bound and choice must make a valid trial config: TrainConfig's checks do the work.

    Values are already coerced to the field types, so `replace` (which re-validates) suffices.
    """
    for p in search.values():
        for label, value in _corners(p):
            try:
                train.replace(**{p.name: value})
            except ConfigError as exc:
                same = exc.field == p.name
                msg = error_message(exc) if same else f"gives an invalid trial config: {exc}"
                raise ConfigError(f"search.{p.name}{label}", msg) from None
    for side in (0, -1):  # all dimensions at once, for checks across fields
        point = {p.name: _corners(p)[side][1] for p in search.values()}
        try:
            train.replace(**point)
        except ConfigError as exc:
            raise ConfigError("search", f"the corner {point} gives an invalid trial config: {exc}") from None


def _parse_objectives(raw: Any) -> list[Objective]:
    if not isinstance(raw, list):
        raise ConfigError("objectives", f"must be a list of {{metric, mode}}, got {_kind(raw)}")
    if not raw:
        raise ConfigError("objectives", "must name at least one objective {metric, mode}")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        path = f"objectives[{i}]"
        item = mapping(item, path, ("metric", "mode"))
        if "metric" not in item:
            raise ConfigError(f"{path}.metric", "required")
        metric = _string(item["metric"], f"{path}.metric")
        if metric not in METRICS:
            raise ConfigError(
                f"{path}.metric",
                f"unknown metric {short(metric)};{_did_you_mean(metric, METRICS)} known: {', '.join(METRICS)}",
            )
        if any(o.metric == metric for o in out):
            raise ConfigError(f"{path}.metric", f"duplicate objective {metric!r}")
        mode = _string(item.get("mode", METRICS[metric].mode), f"{path}.mode")
        if mode not in MODES:
            raise ConfigError(f"{path}.mode", f"must be max or min, got {short(mode)}")
        out.append(Objective(metric, mode))
    return out


def _parse_sampler(raw: Any) -> SamplerSpec:
    raw = _named_section(raw, "sampler", ("name", "seed", "n_startup_trials", "population_size"))
    name = _string(raw.get("name", "tpe"), "sampler.name")
    if name not in SAMPLERS:
        raise ConfigError("sampler.name", f"unknown sampler {short(name)}; known: {', '.join(SAMPLERS)}")
    seed = coerce(raw.get("seed", 0), int | None, "sampler.seed")
    if seed is not None and not 0 <= seed < 2**32:
        raise ConfigError("sampler.seed", f"must be in [0, 2**32) or null, got {seed}")
    only = {"n_startup_trials": (("tpe", "gp"), 0), "population_size": (("nsga2",), 2)}
    values: dict[str, int | None] = {}
    for key, (owners, minimum) in only.items():
        if raw.get(key) is None:
            values[key] = None
            continue
        if name not in owners:
            which = f"sampler {owners[0]}" if len(owners) == 1 else f"samplers {' and '.join(owners)}"
            raise ConfigError(f"sampler.{key}", f"only applies to {which}, not {name}")
        values[key] = _int(raw[key], f"sampler.{key}", minimum)
    return SamplerSpec(name, seed, values["n_startup_trials"], values["population_size"])


def _parse_scheduler(raw: Any, objectives: list[Objective], epochs: int) -> SchedulerSpec:
    raw = {"name": "none"} if raw is None else raw
    keys = ("name", "grace_period", "reduction_factor", "metric", "mode", "objectives")
    raw = _named_section(raw, "scheduler", keys)
    name = _string(raw.get("name", "none"), "scheduler.name")
    if name not in SCHEDULERS:
        raise ConfigError(
            "scheduler.name",
            f"unknown scheduler {short(name)}; known: {', '.join(SCHEDULERS)}",
        )
    if name == "none":
        for key in raw:
            if key != "name":
                raise ConfigError(f"scheduler.{key}", "only applies to scheduler asha or mo_asha")
        return SchedulerSpec("none")
    if name == "mo_asha":
        mo = parse_mo_asha(raw, objectives, epochs)
        return SchedulerSpec("mo_asha", mo.grace_period, mo.reduction_factor, objectives=mo.objectives)
    if "objectives" in raw:
        raise ConfigError("scheduler.objectives", "only applies to scheduler mo_asha (asha compares one metric)")
    grace = _int(raw.get("grace_period", 1), "scheduler.grace_period", 1)
    factor = _number(raw.get("reduction_factor", 2.0), "scheduler.reduction_factor")
    if factor <= 1:
        raise ConfigError("scheduler.reduction_factor", f"must be > 1, got {factor}")
    metric = raw.get("metric")
    if metric is not None:
        metric = _string(metric, "scheduler.metric")
        info = METRICS.get(metric)
        if info is None or not info.per_epoch:
            known = ", ".join(per_epoch_metrics())
            raise ConfigError(
                "scheduler.metric",
                f"must be a per-epoch metric ({known}), got {short(metric)}",
            )
    mode = raw.get("mode")
    if mode is not None and _string(mode, "scheduler.mode") not in MODES:
        raise ConfigError("scheduler.mode", f"must be max or min, got {short(mode)}")
    return SchedulerSpec("asha", grace, factor, metric, mode or "")


def _resolve_scheduler(s: SchedulerSpec, objectives: list[Objective], train: TrainConfig) -> SchedulerSpec:
    """ASHA gets a concrete per-epoch metric and mode, and a grace period that fits the epochs."""
    if s.name != "asha":
        return s
    metric = s.metric
    if metric is None:
        if len(objectives) > 1:
            raise ConfigError(
                "scheduler.metric",
                "required with several objectives: name the per-epoch metric ASHA compares (e.g. val_acc)",
            )
        if not METRICS[objectives[0].metric].per_epoch:
            raise ConfigError(
                "scheduler.metric",
                f"required: the objective {objectives[0].metric} is known only at the end; "
                "name a per-epoch metric (e.g. val_acc)",
            )
        metric = objectives[0].metric
    mode = s.mode or next((o.mode for o in objectives if o.metric == metric), METRICS[metric].mode)
    if s.grace_period > train.epochs:
        raise ConfigError(
            "scheduler.grace_period",
            f"must be <= train.epochs ({train.epochs}), got {s.grace_period}",
        )
    return dataclasses.replace(s, metric=metric, mode=mode)


def _check_sampler(sampler: SamplerSpec, search: dict[str, Param], samples: int) -> None:
    if sampler.name != "grid":
        return
    size = space_size(search)
    if samples > size:
        raise ConfigError("samples", f"the grid has {size} points; samples must be <= {size}, got {samples}")


def _check_objectives(objectives: list[Objective], train: TrainConfig, evaluation: EvaluationSpec) -> None:
    for i, o in enumerate(objectives):
        if METRICS[o.metric].evaluation and not evaluation.enabled:
            raise ConfigError(
                f"objectives[{i}].metric",
                f"{o.metric} comes from the evaluation, which is off (evaluation.enabled: false)",
            )
        if METRICS[o.metric].needs_parts and train.dataset not in PART_DATASETS:
            raise ConfigError(
                f"objectives[{i}].metric",
                f"{o.metric} needs part annotations: dataset {', '.join(PART_DATASETS)}, not {train.dataset}",
            )


def _parse_resources(raw: Any) -> Resources:
    raw = mapping(raw, "resources", ("cpu", "gpu"))
    cpu = _number(raw.get("cpu", 1.0), "resources.cpu")
    if cpu <= 0:
        raise ConfigError("resources.cpu", f"must be > 0 CPUs per trial, got {cpu:g}")
    gpu = _number(raw.get("gpu", 0.0), "resources.gpu")
    if gpu < 0:
        raise ConfigError("resources.gpu", f"must be >= 0 (0 = no GPU), got {gpu:g}")
    if gpu > 1:
        raise ConfigError(
            "resources.gpu",
            f"must be <= 1: a trial trains on one device (0.25 packs four trials per GPU), got {gpu:g}",
        )
    for key, value in (("cpu", cpu), ("gpu", gpu)):
        _check_granularity(value, f"resources.{key}")
    return Resources(cpu, gpu)


# Ray counts resources in units of 1/10000 (ray._raylet.RESOURCE_UNIT_SCALING): a finer request
# crashes ray.init or the trial's scheduling (below one unit), or is silently cut (above).
RESOURCE_UNITS = 10_000


def _check_granularity(value: float, path: str) -> None:
    units = value * RESOURCE_UNITS
    if abs(units - round(units)) > 1e-6 * max(1.0, units):
        nearest = round(units) / RESOURCE_UNITS
        hint = f"e.g. {nearest:g}" if nearest > 0 else f"at least {1 / RESOURCE_UNITS:g}"
        raise ConfigError(
            path,
            f"Ray counts resources in steps of {1 / RESOURCE_UNITS:g}; got {value!r}, use {hint}",
        )


def _parse_evaluation(raw: Any) -> EvaluationSpec:
    raw = mapping(raw, "evaluation", ("enabled", "max_images", "pictures", "split"))
    enabled = coerce(raw.get("enabled", True), bool, "evaluation.enabled")
    max_images = _int(raw.get("max_images", 1000), "evaluation.max_images", 1)
    pictures = coerce(raw.get("pictures", True), bool, "evaluation.pictures")
    split = _string(raw.get("split", "val"), "evaluation.split")
    if split not in EVAL_SPLITS:
        raise ConfigError("evaluation.split", f"must be {' or '.join(EVAL_SPLITS)}, got {short(split)}")
    return EvaluationSpec(enabled, max_images, pictures, split)


def _check_evaluation_split(evaluation: EvaluationSpec, train: TrainConfig) -> None:
    """An evaluation on the validation split needs one: val_fraction 0 holds none out (it
    cannot be searched: the data set is shared by all trials)."""
    if evaluation.enabled and evaluation.split == "val" and train.val_fraction == 0:
        raise ConfigError(
            "evaluation.split",
            "val: the evaluation measures the validation split, and train.val_fraction 0 holds none "
            "out: hold one out, or set evaluation.split: test (objectives from the evaluation are then "
            "selected on test images) or evaluation.enabled: false",
        )


def selection_note(spec: StudySpec) -> str | None:
    """The one-line warning `validate` prints when objectives are selected on test images
    (`evaluation.split: test` and an objective the evaluation computes); None otherwise."""
    e = spec.evaluation
    chosen = [o.metric for o in spec.objectives if METRICS[o.metric].evaluation]
    if not e.enabled or e.split != "test" or not chosen:
        return None
    return (
        f"evaluation.split: test: the objective{'s' if len(chosen) > 1 else ''} {', '.join(chosen)} "
        "will be selected on test images, so the chosen trials' test values are optimistic; "
        "split: val (the default) selects on the validation split"
    )


def _parse_tracking(raw: Any) -> TrackingSpec:
    raw = mapping(raw, "tracking", ("uri", "experiment", "artifact_location"))
    experiment = raw.get("experiment")
    if experiment is not None:
        experiment = _string(experiment, "tracking.experiment")
    artifacts = raw.get("artifact_location")
    if artifacts is not None:
        artifacts = _location(_string(artifacts, "tracking.artifact_location"), "tracking.artifact_location")
    uri = raw.get("uri")
    if uri is None:
        return TrackingSpec(None, experiment, artifacts)
    template = _string(uri, "tracking.uri")
    _refuse_secrets(template)
    template, note = _drop_sqlite_query(template)
    expanded = _expand_env(template)
    source = template if expanded != template else None
    return TrackingSpec(_tracking_uri(expanded), experiment, artifacts, source, note)


def _drop_sqlite_query(template: str) -> tuple[str, str | None]:
    """A sqlite URI without its `?query`, and the one line that says so (None: nothing dropped).

    SQLAlchemy would take the query for connection options and the store's file for the rest:
    `tok.db?token=${TOK}` made a file whose name held the token. A sqlite store has no
    credentials and launch passes it no options, so the query is ignored, with a warning.
    """
    if not template.lower().startswith("sqlite:") or "?" not in template:
        return template, None
    path, _, query = template.partition("?")
    shown = redact(f"sqlite:///x?{query}").partition("?")[2]
    return path, (
        f"tracking.uri: the query of a sqlite URI (?{shown}) is ignored: a sqlite store takes "
        f"no options or credentials here; the database is {path}"
    )


def _expand_env(template: str) -> str:
    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if not _ENV_NAME.match(var):
            raise ConfigError("tracking.uri", f"${{{var}}} is not an environment variable reference")
        if var not in os.environ:
            raise ConfigError("tracking.uri", f"environment variable {var} is not set")
        return os.environ[var]

    return _ENV_REF.sub(sub, template)


def _refuse_secrets(template: str) -> None:
    """Secrets come from the environment: a literal password in the URI is refused."""
    hint = (
        "secrets are read from the environment: write ${VAR} (e.g. user:${MLFLOW_DB_PASSWORD}@host) "
        "or set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
    )
    try:
        parts = urlsplit(template)
    except ValueError as exc:
        raise ConfigError("tracking.uri", f"not a valid URI: {exc}") from None
    info = userinfo(template)
    if info and parts.scheme.lower() in ("http", "https"):
        # Never sent anywhere: urllib would take TOKEN@host for a host name to resolve.
        raise ConfigError("tracking.uri", f"holds a user name or token before '@'; {HTTP_CREDENTIALS}")
    password = info.partition(":")[2]
    if password and not _ENV_REF.fullmatch(password):
        raise ConfigError("tracking.uri", f"holds a password; {hint}")
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY.search(key) and value and not _ENV_REF.fullmatch(value):
            raise ConfigError("tracking.uri", f"holds a secret in ?{key}=; {hint}")


def _tracking_uri(uri: str) -> str:
    """Known schemes only; local sqlite/file paths and bare folders made absolute."""
    known = ", ".join(TRACKING_SCHEMES)
    if not _SCHEME.match(uri):
        # a folder (MLflow's file store) or `databricks`: launch cannot record into either
        raise ConfigError(
            "tracking.uri",
            f"{redact(uri)!r} is not a URI launch can record into; MLflow 3 needs a database or "
            f"a server: sqlite:///PATH/mlflow.db or http://HOST:PORT (schemes: {known})",
        )
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError as exc:
        raise ConfigError("tracking.uri", f"not a valid URI: {exc}") from None
    if "+" in scheme and scheme.split("+")[0] in TRACKING_SCHEMES:
        raise ConfigError(
            "tracking.uri",
            f"the driver form {scheme}:// is not supported: write {scheme.split('+')[0]}:// "
            "(SQLAlchemy's default driver is used)",
        )
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError("tracking.uri", f"unknown scheme {scheme!r} in {redact(uri)!r}; known: {known}")
    if scheme in DB_DRIVERS:
        module, package = DB_DRIVERS[scheme]
        if importlib.util.find_spec(module) is None:  # found, not imported: validate stays fast
            raise ConfigError(
                "tracking.uri", f"{scheme}:// needs the Python module {module} (pip install {package})"
            )
    if scheme == "sqlite":
        db = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if not db:
            raise ConfigError(
                "tracking.uri",
                "a sqlite URI is sqlite:///relative/path.db or sqlite:////absolute/path.db",
            )
        if db == ":memory:" or db.startswith(":memory:?") or db.startswith("file:"):
            # launch takes the path literally: ./:memory: would be created in the current folder
            raise ConfigError("tracking.uri", "an in-memory sqlite store keeps nothing; give a file: sqlite:///PATH/mlflow.db")
        return uri if db.startswith("/") else "sqlite:///" + _abs(Path(db))
    return uri


def _check_device(train: TrainConfig, resources: Resources) -> None:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", train.device):
        raise ConfigError(
            "train.device",
            f"must be auto, cpu, mps, cuda or cuda:N, got {short(train.device)}",
        )
    if train.device.startswith("cuda") and resources.gpu == 0:
        raise ConfigError(
            "train.device",
            "needs resources.gpu > 0: Ray shows a trial only the GPUs it asked for",
        )
    if train.device in ("cpu", "mps") and resources.gpu > 0:
        raise ConfigError(
            "resources.gpu",
            f"train.device is {train.device}: the GPU share would sit idle; set it to 0",
        )


def _check_data(train: TrainConfig, check: bool) -> TrainConfig:
    """Data sets read from files need their folder here (unless download: true, or `check` is
    off: the data lives on a cluster's workers); paths made absolute."""
    if train.dataset not in DATA_FILES:
        return train
    root = _abs(Path(train.data_root or "data"))
    if check and not train.download and not os.path.isdir(root):
        raise ConfigError(
            "train.data_root",
            f"folder {root} does not exist; put {DATA_FILES[train.dataset]} there, or set train.download: true",
        )
    return train.replace(data_root=root)


def _check_names(train: TrainConfig, search: dict[str, Param]) -> None:
    """Names syncmodel resolves (syncmodel.catalog: no torch import)."""
    for name in REGISTRIES:  # dataset, backbone, focus_kind: TrainConfig fields
        p = search.get(name)
        if p is not None and p.kind == "categorical":
            values = [(f"search.{name}.choices[{i}]", c) for i, c in enumerate(p.choices or ())]
        elif p is not None:
            values = [(f"search.{name}", p.value)]
        else:
            values = [(f"train.{name}", getattr(train, name))]
        names = known_names(name)
        for where, value in values:
            if value not in names:
                raise ConfigError(where, f"unknown {name} {short(value)}; known: {', '.join(names)}")


def _check_storage(storage: str, writable: bool = True) -> None:
    """The study folder can be made here: not a file, not under one, no symlink loop, and
    (`writable`) writable, checked with a real file like the tracking store (root passes
    access() in /proc)."""
    if _SCHEME.match(storage):
        return
    path = Path(storage)
    for folder in (path, *path.parents):
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            if os.path.lexists(folder):
                raise ConfigError(
                    "storage", f"{folder} is a symbolic link to {os.readlink(folder)}, which does not exist"
                ) from None
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError("storage", f"{folder}: a symbolic link loop") from None
            if exc.errno == errno.ENOTDIR:  # a file further up: its own stat names it
                continue
            raise ConfigError("storage", f"{folder}: {exc.strerror or exc}") from None
        if not stat.S_ISDIR(st.st_mode):
            what = "is a file, not a folder" if folder == path else f"cannot be made: {folder} is a file"
            raise ConfigError("storage", f"{path} {what}")
        if writable and not can_create_in(folder):
            where = "" if folder == path else f" ({folder}, where it would be made)"
            raise ConfigError("storage", f"{path}: folder not writable{where}")
        return


def _check_validation_split(objectives: list[Objective], scheduler: SchedulerSpec, train: TrainConfig) -> None:
    """Without a validation split (val_fraction 0) what is measured on it is NaN every epoch:
    an objective or ASHA's metric on it would rank nothing."""
    if train.val_fraction > 0:
        return
    for i, o in enumerate(objectives):
        if o.metric in VAL_FINAL_METRICS:
            raise ConfigError(
                f"objectives[{i}].metric",
                f"{o.metric} is measured on the validation split, and train.val_fraction is 0 "
                "(no validation split): hold one out, or optimise another metric (e.g. test_acc)",
            )
    if scheduler.name == "asha" and scheduler.metric in VAL_EPOCH_METRICS:
        raise ConfigError(
            "scheduler.metric",
            f"ASHA would compare {scheduler.metric} per epoch, measured on the validation split, and "
            "train.val_fraction is 0 (no validation split): hold one out, or name a training "
            "metric (train_acc, train_loss)",
        )


def _check_sizes(train: TrainConfig) -> None:
    """Splits that training cannot use, known without loading (syncmodel.data.splits.check_sizes
    refuses the same when the data is loaded: in a trial, after Ray started)."""
    minimum = MIN_IMAGE_SIZE.get(train.dataset)
    if minimum and train.image_size is not None and train.image_size < minimum:
        raise ConfigError(
            "train.image_size", f"{train.dataset} needs at least {minimum} pixels, got {train.image_size}"
        )
    sizes = split_sizes(train)
    if sizes is None:
        return
    split = f"(train {sizes.train}, val {sizes.val}, test {sizes.test})"
    if sizes.train == 0:
        raise ConfigError(
            "train.val_fraction",
            f"{train.val_fraction} of {train.dataset} holds out every training image {split}; lower it",
        )
    if sizes.val == 0 and train.val_fraction > 0:
        field = "train.n_train" if train.dataset in ("shapes", "shapes-hard", "fake-cifar10") else "train.val_fraction"
        raise ConfigError(
            field,
            f"val_fraction {train.val_fraction} of {train.dataset} with these images holds out none {split}; "
            "use more images, a larger val_fraction, or val_fraction 0 (no validation split)",
        )


def _check_layers(train: TrainConfig, search: dict[str, Param]) -> None:
    """`train.layers` must name modules of every backbone a trial may get, each giving a
    (B, C, H, W) map (syncmodel.nets.build_model and the regularizer refuse the rest, in the
    trial). A stage name is known without torch; any other name (a submodule such as
    layer4.1, or fc) is looked up in the backbone built on the meta device, and its output
    shape read from a forward pass there (no memory, no arithmetic; a second for torch's
    import)."""
    if not train.layers:
        return
    p = search.get("backbone")
    backbones = list(p.choices or ()) if p is not None and p.kind == "categorical" else [
        p.value if p is not None else train.backbone
    ]
    for backbone in backbones:
        stages = BACKBONE_STAGES.get(backbone)
        if stages and all(layer in stages for layer in train.layers):
            continue
        dims = _output_dims(train.replace(backbone=backbone), train.layers)
        for i, layer in enumerate(train.layers):
            if layer not in dims:
                known = ", ".join(stages) if stages else "see the backbone's named_modules()"
                raise ConfigError(
                    f"train.layers[{i}]", f"{backbone} has no layer {short(layer)}; regularisable: {known}"
                )
            if dims[layer] != 4:
                raise ConfigError(
                    f"train.layers[{i}]",
                    f"{backbone}'s {layer} outputs {dims[layer]} dimensions; a regularised layer "
                    "must output a (B, C, H, W) map (e.g. "
                    + (", ".join(stages) if stages else "a convolution stage") + ")",
                )


def _output_dims(config: TrainConfig, layers: list[str]) -> dict[str, int | None]:
    """Of `layers`, those `config`'s backbone has, each with the number of dimensions of its
    output (None: not a tensor), from the backbone built and run on the meta device."""
    import torch

    from syncmodel.nets import BACKBONES

    spec = BACKBONES.get(config.backbone, field="backbone")
    size = config.image_size or 32
    with torch.device("meta"):
        model = spec.build(config.replace(layers=None), 3, 10, size)
    modules = dict(model.named_modules())
    dims: dict[str, int | None] = {}

    def hook(name: str):  # noqa: ANN202 - a forward hook
        def record(_module: object, _inputs: object, output: object) -> None:
            dims[name] = output.dim() if isinstance(output, torch.Tensor) else None

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers if name in modules]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty(2, 3, size, size, device="meta"))
    except Exception:  # noqa: BLE001 - a model that cannot run on meta tensors: names only
        return {name: dims.get(name, 4) for name in layers if name in modules}
    finally:
        for h in handles:
            h.remove()
    return {name: dims.get(name) for name in layers if name in modules}
