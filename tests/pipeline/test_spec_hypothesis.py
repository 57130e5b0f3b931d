"""Property: whatever a spec file holds, the loader returns a valid `StudySpec` or raises the
project's error with a one-line message; never another exception, never a traceback."""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.spec import StudySpec, dump_resolved, load_spec
from syncmodel.errors import SyncStudyError

# CI runs a fixed sample; SYNCSTUDY_HYPOTHESIS_EXAMPLES=5000 explores afresh (random seed).
_DEEP = os.environ.get("SYNCSTUDY_HYPOTHESIS_EXAMPLES")
SETTINGS = settings(
    max_examples=int(_DEEP or 150), derandomize=not _DEEP, database=None, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
WORKDIR = Path(tempfile.mkdtemp(prefix="syncstudy-spec-hypothesis-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)

# Words a spec uses, so that random documents reach past the first unknown key.
WORDS = [
    "name", "train", "search", "objectives", "sampler", "scheduler", "samples", "concurrency",
    "resources", "tracking", "evaluation", "storage", "retries", "smoke", "low", "high", "log",
    "step", "choices", "metric", "mode", "cpu", "gpu", "uri", "enabled", "max_images", "epochs",
    "lambda_focus", "coupling_K", "epsilon", "lr", "dataset", "backbone", "focus_kind", "seed",
    "test_acc", "val_acc", "interpretability", "max", "min", "tpe", "nsga2", "grid", "asha", "digits",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS), st.text(max_size=12),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)

VALID: dict[str, Any] = {
    "name": "prop",
    "train": {"epochs": 2, "dataset": "digits"},
    "search": {
        "lambda_focus": {"low": 1e-3, "high": 1.0, "log": True},
        "epsilon": {"low": 0.2, "high": 0.8},
        "focus_kind": {"choices": ["spread", "template"]},
    },
    "objectives": [{"metric": "test_acc", "mode": "max"}, {"metric": "interpretability"}],
    "sampler": {"name": "nsga2", "seed": 0, "population_size": 4},
    "scheduler": {"name": "asha", "metric": "val_acc"},
    "samples": 4,
    "concurrency": 2,
    "resources": {"cpu": 1, "gpu": 0},
    "evaluation": {"enabled": True, "max_images": 100},
    "smoke": {"samples": 2, "train": {"epochs": 1}},
}


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _like(value: Any) -> st.SearchStrategy[Any]:
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-2, 64)
    if isinstance(value, float):
        return st.floats(-1.0, 4.0)
    if isinstance(value, str):
        return st.sampled_from([value, *WORDS])
    return st.just(value)


def _load(text: str | bytes, smoke: bool = False) -> StudySpec | None:
    path = WORKDIR / "spec.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    try:
        spec = load_spec(path, smoke=smoke)
    except SyncStudyError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        return None
    assert isinstance(spec, StudySpec)
    return spec


def _round_trips(spec: StudySpec) -> None:
    again = load_spec(dump_resolved(spec, WORKDIR / "resolved.yaml"))
    assert dataclasses.replace(again, source=None, smoke=False) == dataclasses.replace(
        spec, source=None, smoke=False
    )


@SETTINGS
@given(values)
def test_random_documents(doc: Any) -> None:
    _load(yaml.safe_dump(doc))


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("name: train{}[],-&*!|>'\"#\n\t 01e.a%@`")), max_size=80))
def test_random_text(text: str) -> None:
    _load(text)


@SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes(data: bytes) -> None:
    _load(data)


@SETTINGS
@given(st.data())
def test_mutations_of_a_valid_spec(data: st.DataObject) -> None:
    doc = yaml.safe_load(yaml.safe_dump(VALID))  # a deep copy
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:]))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["tweak", "tweak", "replace", "delete", "add"]))
        if action == "tweak":  # a value of the same type: often still valid
            parent[path[-1]] = data.draw(_like(parent[path[-1]]))
        elif action == "replace":
            parent[path[-1]] = data.draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(keys)] = data.draw(values)
        if not doc:
            break
    smoke = data.draw(st.booleans())
    spec = _load(yaml.safe_dump(doc), smoke=smoke)
    if spec is not None:
        _round_trips(spec)


def test_the_valid_base_is_valid() -> None:
    spec = _load(yaml.safe_dump(VALID))
    assert spec is not None
    _round_trips(spec)
