"""Validation of documents against the JSON Schemas in `schemas/` (the single source of rules).

Two engines read the same schema files. A compiled one (jsonschema-rs) answers "is this
document valid?" about 90 times faster than the pure-Python one, and a fleet's documents are
nearly all valid; only a document it rejects (or cannot take: a value JSON has no type for) goes
through the detailed one (jsonschema), whose errors carry the paths the problems are reported
at, so every problem's code, message and position is the detailed engine's, as before.
"""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import jsonschema_rs

if TYPE_CHECKING:  # jsonschema is imported when a document fails (0.12 s of every start)
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

from reconciler.core import problems as codes
from reconciler.core.problems import Problem
from reconciler.core.yamldoc import Document, shown

KINDS = {
    "Project": "project",
    "Workflow": "workflow",
    "Membership": "membership",
    "Tool": "tool",
    "UpgradeAdvisory": "upgrade_advisory",
}
API_VERSION = "ops/v1"
_CODES = {
    "required": codes.MISSING_FIELD,
    "type": codes.WRONG_TYPE,
    "enum": codes.NOT_ALLOWED,
    "const": codes.NOT_ALLOWED,
    "pattern": codes.BAD_FORMAT,
    "additionalProperties": codes.UNKNOWN_FIELD,
    "unevaluatedProperties": codes.UNKNOWN_FIELD,
}
_LONGEST_PATTERN_SHOWN = 60
NEWLINE_GUARD = "(?!\\n)"
_UNEXPECTED = re.compile(r"\((.*) (?:was|were) unexpected\)")
_JSON_TYPES = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    type(None): "null",
}


@cache
def _schemas() -> dict[str, Any]:
    folder = resources.files("reconciler.schemas")
    return {
        name: json.loads(folder.joinpath(f"{name}.json").read_text(encoding="utf-8"))
        for name in KINDS.values()
    }


# Python's `\s` (what jsonschema's `re` matches): the compiled engine's `\s` differs (it takes
# U+FEFF, and not U+001C-U+001F or U+0085), so its patterns spell Python's class out.
_PY_SPACE = r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def python_pattern(pattern: str) -> str:
    r"""`pattern` with every `\s` written as the class Python's `re` means by it."""
    out: list[str] = []
    class_start = -1  # where the open character class's items start; -1: not in one
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escaped = pattern[i : i + 2]
            if escaped == r"\s":
                escaped = _PY_SPACE if class_start >= 0 else f"[{_PY_SPACE}]"
            out.append(escaped)
            i += 2
            continue
        out.append(char)
        i += 1
        if char == "[" and class_start < 0:
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            class_start = len(out)
        elif char == "]" and class_start >= 0 and len(out) - 1 > class_start:
            class_start = -1
    return "".join(out)


def _python_patterns(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: python_pattern(v) if k == "pattern" and isinstance(v, str) else _python_patterns(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_python_patterns(v) for v in schema]
    return schema


@cache
def compiled() -> dict[str, Any]:
    """The fast path: one compiled validator per kind, the same files and $refs (patterns
    in Python's meaning, see `python_pattern`)."""
    schemas = {name: _python_patterns(schema) for name, schema in _schemas().items()}
    registry = jsonschema_rs.Registry([(schema["$id"], schema) for schema in schemas.values()])
    return {
        kind: jsonschema_rs.Draft202012Validator(schemas[name], registry=registry)
        for kind, name in KINDS.items()
    }


@cache
def validators() -> dict[str, Draft202012Validator]:
    """One validator per kind, with every schema file registered for the cross-file $refs."""
    from jsonschema import Draft202012Validator  # noqa: PLC0415  (see the imports)
    from referencing import Registry, Resource  # noqa: PLC0415

    schemas = _schemas()
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in schemas.values()
    )
    return {
        kind: Draft202012Validator(schemas[name], registry=registry) for kind, name in KINDS.items()
    }


def check(document: Document) -> list[Problem]:
    """Every problem of one document: its header, then its schema."""
    value = document.value
    if not isinstance(value, dict):
        return [
            Problem(
                document.at(()),
                codes.NOT_A_MAPPING,
                f"a document must be a mapping with apiVersion and kind, not {_type_name(value)}",
            )
        ]
    header = _check_header(document)
    if header:
        return header
    if _valid(value["kind"], value):
        return []
    validator = validators()[value["kind"]]
    return sorted(_problem(document, error) for error in validator.iter_errors(value))


def _valid(kind: str, value: dict[str, Any]) -> bool:
    """The compiled engine's verdict; False (ask the detailed one) when it cannot decide."""
    try:
        return bool(compiled()[kind].is_valid(value))
    except (ValueError, TypeError, OverflowError):
        return False


def _check_header(document: Document) -> list[Problem]:
    value = document.value
    if value.get("apiVersion") != API_VERSION:
        where = document.at(("apiVersion",)) if "apiVersion" in value else document.at(())
        got = f"got {shown(value['apiVersion'])}" if "apiVersion" in value else "it is missing"
        return [Problem(where, codes.BAD_HEADER, f"apiVersion must be {API_VERSION!r}; {got}")]
    kind = value.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        where = document.at(("kind",)) if "kind" in value else document.at(())
        if kind is None:
            return [Problem(where, codes.BAD_HEADER, "kind is missing; one of " + _kinds())]
        message = f"unknown kind {shown(kind)}; one of {_kinds()}"
        return [Problem(where, codes.UNKNOWN_KIND, message)]
    return []


def _problem(document: Document, error: ValidationError) -> Problem:
    path = tuple(error.absolute_path)
    code = _CODES.get(str(error.validator), codes.INVALID_VALUE)
    if code == codes.UNKNOWN_FIELD:
        return _unknown_fields(document, path, error)
    if code == codes.MISSING_FIELD:
        return Problem(document.at(path), code, _at(path, error.message))
    where = document.at(path)
    return Problem(where, code, _at(path, _message(error, document.written.get(path))))


def _unknown_fields(document: Document, path: tuple[Any, ...], error: ValidationError) -> Problem:
    match = _UNEXPECTED.search(error.message)
    listed = match[1] if match else ""
    instance = error.instance if isinstance(error.instance, dict) else {}
    unknown = sorted(k for k in instance if repr(k) in listed)
    where = document.key_at((*path, unknown[0])) if unknown else document.at(path)
    names = ", ".join(shown(k) for k in unknown)
    return Problem(where, codes.UNKNOWN_FIELD, _at(path, f"unknown field {names}"))


def _message(error: ValidationError, written: str | None) -> str:
    """`written`: the value's text in the file when YAML read it as a number or boolean
    (`18.10` is the float 18.1: the hint quotes what the user wrote)."""
    if error.validator == "type":
        expected = error.validator_value
        hint = ""
        if expected == "string" and written is not None:
            hint = f' (quote it: "{written}")'
        return f"expected {_expected(expected)}, got {_type_name(error.instance)}{hint}"
    if error.validator in ("enum", "const"):
        allowed: Any = error.validator_value
        options = list(allowed) if error.validator == "enum" else [allowed]
        return f"{shown(error.instance)} is not one of {', '.join(repr(o) for o in options)}"
    if error.validator == "pattern":
        pattern = documented(error.validator_value)
        described = error.schema.get("description") if isinstance(error.schema, dict) else None
        if described and len(pattern) > _LONGEST_PATTERN_SHOWN:
            return f"{shown(error.instance)} is not {described[0].lower()}{described[1:]}"
        return f"{shown(error.instance)} does not match {pattern}"
    return error.message


def documented(pattern: Any) -> str:
    """A schema pattern as the docs write it: without the guard `(?!\n)` that makes Python's
    `$` refuse a final newline as ECMA-262's and Rust's `$` do."""
    return str(pattern).replace(NEWLINE_GUARD, "")


def _at(path: tuple[Any, ...], message: str) -> str:
    if not path:
        return message
    return f"{'.'.join(str(p) for p in path)}: {message}"


def _expected(expected: Any) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _kinds() -> str:
    return ", ".join(KINDS)
