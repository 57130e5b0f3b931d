"""Study spec YAML → a checked `StudySpec`, and the resolved spec back to YAML.

    load_spec(path, *, smoke=False, overrides=None) -> StudySpec
raises `SpecError` (a `syncmodel.errors.ConfigError` that names the file and the field, like
`search.coupling_K.low`) on any problem, before anything is started. docs/spec.md is the
reference of every key.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from pipeline.safe_files import write_text
from pipeline.spec.reading import SpecError, error_message, read_yaml
from pipeline.spec.sections import SMOKE_KEYS, TOP_KEYS, build, mapping
from pipeline.spec.types import Param, SchedulerSpec, StudySpec
from syncmodel.errors import ConfigError

# --------------------------------------------------------------------------- loading


def load_spec(
    path: str | Path,
    *,
    smoke: bool = False,
    overrides: dict[str, Any] | None = None,
    check_data: bool = True,
    writable: bool = True,
) -> StudySpec:
    """Read, validate and resolve a study spec. Both forms are checked, full and smoke; the
    smoke form (the `smoke:` section over the rest) is returned when `smoke` is true.

    `overrides` maps `key` or `section.key` to a value that replaces the spec's (after the
    smoke form), e.g. {"storage": DIR, "tracking.uri": URI}; None values are skipped (an
    unset command-line flag). `check_data=False` skips the check that a file-based data set's
    folder exists on this machine (a cluster launch: the data is on the workers).
    `writable=False` skips the check that the study folder can be written (the commands that
    only read a study); a folder that is a file or a symbolic link loop is refused anyway.
    """
    doc = read_yaml(path)
    try:
        if not isinstance(doc, dict):
            raise ConfigError("spec", f"the top level must be a mapping of keys, got {type(doc).__name__}")
        if doc and not any(key in TOP_KEYS for key in doc):
            # Another kind of file (a config, /etc/shadow): name the file, never its content.
            raise ConfigError(
                "spec", "none of its top-level keys is a spec key: not a study spec "
                "(a spec has name, search and objectives: docs/spec.md)",
            )
        smoke_raw = doc.get("smoke")
        if "smoke" in doc:
            mapping(smoke_raw, "smoke", SMOKE_KEYS)
        base_raw = {k: v for k, v in doc.items() if k != "smoke"}
        extra = _expand_overrides(overrides or {})
        try:
            full = build(_merge(base_raw, extra), Path(path), False, check_data, writable)
        except ConfigError as exc:
            raise _blame(exc, extra, "", "(from the command line)") from None
        if smoke_raw is None:
            if smoke:
                raise ConfigError("smoke", "--smoke was asked for, but the spec has no smoke section")
            return full
        try:
            reduced = build(_merge(_merge(base_raw, smoke_raw), extra), Path(path), True, check_data, writable)
        except ConfigError as exc:
            exc = _blame(exc, extra, "", "(from the command line)")
            raise _blame(exc, smoke_raw, "smoke.", "(in the smoke form)", elsewhere=True) from None
        return reduced if smoke else full
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(path, exc.field, error_message(exc)) from None


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """`layer` over `base`: sections (mappings) merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _expand_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if key:
            out.setdefault(section, {})[key] = value
        else:
            out[section] = value
    return out


def _blame(
    exc: ConfigError, layer: dict[str, Any], prefix: str, note: str, elsewhere: bool = False
) -> ConfigError:
    """Point an error at the layer it came from (the smoke section, the command line).

    From the layer: the field gets `prefix` (smoke.train.epochs), or the message gets `note`
    when there is no prefix. Not from it: the message gets `note` only if `elsewhere`.
    """
    head, _, rest = exc.field.partition(".")
    head = head.split("[")[0]
    sub = rest.split(".")[0].split("[")[0]
    value = layer.get(head)
    if head in layer and (not rest or not isinstance(value, dict) or sub in value):
        if prefix:
            return ConfigError(prefix + exc.field, error_message(exc))
        return ConfigError(exc.field, f"{error_message(exc)} {note}")
    if elsewhere:
        return ConfigError(exc.field, f"{error_message(exc)} {note}")
    return exc


# --------------------------------------------------------------------------- helpers for others


def check_fits_local(spec: StudySpec) -> None:
    """Refuse a study whose trials cannot run on this machine (launch without --address)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if spec.resources.cpu > cpus:
        raise SpecError(
            spec.source, "resources.cpu",
            f"a trial asks for {spec.resources.cpu:g} CPUs and this machine has {cpus}; "
            "lower it, or launch on a cluster with --address",
        )
    if spec.resources.gpu > 0 and _visible_gpus() == 0:
        raise SpecError(
            spec.source, "resources.gpu",
            f"a trial asks for {spec.resources.gpu:g} GPU and no GPU is visible here; "
            "set it to 0 (the smoke form may), or launch on a cluster with --address",
        )


def _visible_gpus() -> int:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


# --------------------------------------------------------------------------- output


def _param_to_yaml(p: Param) -> Any:
    if p.kind == "fixed":
        return p.value
    if p.kind == "categorical":
        return {"choices": list(p.choices or ())}
    out: dict[str, Any] = {"low": p.low, "high": p.high, "log": p.log}
    if p.step is not None:
        out["step"] = p.step
    return out


def _scheduler_to_dict(s: SchedulerSpec) -> dict[str, Any]:
    if s.name == "asha":
        return {k: v for k, v in dataclasses.asdict(s).items() if k != "objectives"}
    if s.name == "mo_asha":
        return {
            "name": s.name, "grace_period": s.grace_period, "reduction_factor": s.reduction_factor,
            "objectives": [{"metric": m, "mode": mode} for m, mode in s.objectives],
        }  # fmt: skip
    return {"name": "none"}


def spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    """The resolved spec in the spec format: `load_spec` reads it back to an equal spec."""
    sampler = {k: v for k, v in dataclasses.asdict(spec.sampler).items() if v is not None or k == "seed"}
    scheduler = _scheduler_to_dict(spec.scheduler)
    tracking = {
        "uri": spec.tracking.uri_source or spec.tracking.uri,
        "experiment": spec.tracking.experiment,
        "artifact_location": spec.tracking.artifact_location,
    }
    out: dict[str, Any] = {"name": spec.name}
    if spec.description:
        out["description"] = spec.description
    out.update(
        train={k: v for k, v in spec.train.to_dict().items() if k not in spec.search},
        search={name: _param_to_yaml(p) for name, p in spec.search.items()},
        objectives=[{"metric": o.metric, "mode": o.mode} for o in spec.objectives],
        sampler=sampler,
        scheduler=scheduler,
        samples=spec.samples,
        concurrency=spec.concurrency,
        resources=dataclasses.asdict(spec.resources),
        tracking=tracking,
        evaluation=dataclasses.asdict(spec.evaluation),
        storage=spec.storage,
        retries=spec.retries,
    )
    return out


def dump_resolved(spec: StudySpec, path: str | Path) -> Path:
    """Write the resolved spec as YAML (temporary name, then rename); returns the path."""
    path = Path(path)
    form = "smoke form of " if spec.smoke else ""
    header = f"# resolved study spec: the {form}{spec.source or 'a spec'}; `syncstudy validate` reads it\n"
    text = header + yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=False)
    # never through a link planted in a shared study folder (pipeline.safe_files)
    return write_text(path, text)
