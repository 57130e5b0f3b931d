"""Strict YAML reading for study specs: file errors, syntax errors and odd documents → `SpecError`.

YAML 1.2 scalars (`1e-3` is a float; `yes`/`no`/`on`/`off` and dates stay strings; no base 60),
duplicate keys refused, and a size/depth budget so that alias bombs and cycles fail fast.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from syncmodel.errors import ConfigError

MAX_BYTES = 1 << 20  # a spec is a page of YAML; anything near this is a mistake
MAX_NODES = 20_000  # values visited after alias expansion
# The resolved document's size (strings and keys by their characters, other values as 8):
# aliases repeat a value without repeating its bytes (102 KB of YAML expanded to 50 MB of
# `layers`), and everything downstream (validate --json, study.yaml, MLflow params) writes it.
MAX_RESOLVED_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_INT = 2**63
MAX_MESSAGE = 400

_BOOL = "tag:yaml.org,2002:bool"
_FLOAT = "tag:yaml.org,2002:float"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class SpecError(ConfigError):
    """A `ConfigError` that also names the spec file: `<file>: <field>: <message>`, one line."""

    def __init__(self, file: str | Path | None, field: str, message: str):
        message = " ".join(str(message).split())  # one line, whatever the source said
        field = _printable(field)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(field, message)
        self.file = None if file is None else str(file)
        self.message = message
        self.args = (": ".join(p for p in (self.file, field, message) if p),)

    def __reduce__(self):  # picklable across Ray processes despite the three-argument __init__
        return (self.__class__, (self.file, self.field, self.message))


def error_message(exc: ConfigError) -> str:
    """The message of a `ConfigError` without its `field: ` prefix."""
    text = getattr(exc, "message", None) or str(exc)
    prefix = f"{exc.field}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars (no implicit dates) and no duplicate keys."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!timestamp 2024-13-45
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value: {exc}", node.start_mark
            ) from None

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _FLOAT, _INT, _TIMESTAMP)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE:
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key_node.value!r} (first on line {seen[key_node.value]})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
StrictLoader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?(?:0|[1-9][0-9_]*))$"),
    list("-+0123456789"),
)
StrictLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
            |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """The YAML document in `path`; every problem with the file raises `SpecError` naming it."""
    p = Path(path)
    try:
        if p.is_dir():
            raise SpecError(path, "", "is a directory, not a spec file")
        if not p.exists():
            raise SpecError(path, "", "file not found")
        # A FIFO or a device would block the read (or never end): only a regular file is
        # opened (stat first, which never blocks), and the open file is checked again.
        if not stat.S_ISREG(p.stat().st_mode):
            raise SpecError(path, "", "not a regular file (a FIFO, a device or a socket): not a spec file")
        with p.open("rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise SpecError(path, "", "not a regular file (a FIFO, a device or a socket): not a spec file")
            data = fh.read(MAX_BYTES + 1)
    except PermissionError:
        raise SpecError(path, "", "cannot read the file: permission denied") from None
    except OSError as exc:
        raise SpecError(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise SpecError(path, "", f"larger than {MAX_BYTES} bytes: not a study spec")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            path, "", f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        where = f"line {mark.line + 1}" if mark is not None else ""
        col = f" (column {mark.column + 1})" if mark is not None else ""
        started = ""
        if exc.context and exc.context_mark is not None and exc.context_mark.line != mark.line:
            started = f"; {exc.context} started on line {exc.context_mark.line + 1}"
        raise SpecError(path, where, f"YAML error: {what}{col}{started}") from None
    except yaml.YAMLError as exc:
        raise SpecError(path, "", f"YAML error: {exc}") from None
    except RecursionError:
        raise SpecError(path, "", f"YAML nested too deeply (more than {MAX_DEPTH} levels)") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise SpecError(path, "", f"YAML value cannot be read: {exc}") from None
    if doc is None:
        raise SpecError(
            path, "", "the file is empty; a study spec is a mapping with at least "
            "name, search and objectives (see docs/spec.md)"
        )
    try:
        check_tree(doc)
    except ConfigError as exc:
        raise SpecError(path, exc.field, error_message(exc)) from None
    return doc


def check_tree(doc: Any) -> None:
    """Refuse non-string keys, huge integers, cycles and documents too big (in values or in
    resolved bytes) or too deep to be specs."""
    budget = [MAX_NODES, MAX_RESOLVED_BYTES]
    active: set[int] = set()

    def visit(value: Any, path: str, depth: int) -> None:
        budget[0] -= 1
        budget[1] -= len(value) if isinstance(value, str) else 8
        if budget[0] < 0:
            top = re.split(r"[.\[]", path)[0] or "spec"
            raise ConfigError(top, f"more than {MAX_NODES} values (aliases?): not a study spec")
        if budget[1] < 0:
            top = re.split(r"[.\[]", path)[0] or "spec"
            raise ConfigError(
                top, f"expands to more than {MAX_RESOLVED_BYTES} bytes (aliases?): not a study spec"
            )
        if depth > MAX_DEPTH:
            raise ConfigError(path or "spec", f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, bool):
            return
        if isinstance(value, int) and abs(value) >= MAX_INT:
            raise ConfigError(path or "spec", "integer too large")
        if not isinstance(value, (dict, list)):
            return
        if id(value) in active:
            raise ConfigError(path or "spec", "refers to itself (a recursive YAML alias)")
        active.add(id(value))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ConfigError(
                        path or "spec", f"keys must be strings, got {type(key).__name__} {short(key)}"
                    )
                budget[1] -= len(key)
                visit(item, f"{path}.{key_text(key)}" if path else key_text(key), depth + 1)
        else:
            for i, item in enumerate(value):
                visit(item, f"{path}[{i}]", depth + 1)
        active.discard(id(value))

    visit(doc, "", 0)


def key_text(key: str) -> str:
    """A mapping key as it appears in a field path: plain words bare, anything else quoted."""
    return key if _PLAIN_KEY.match(key) else repr(key)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def short(value: Any, limit: int = 60) -> str:
    """`repr(value)`, cut to `limit` characters: error messages stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
