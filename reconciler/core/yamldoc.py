"""YAML text -> documents of JSON values, with the source position of every value and key.

The one loader every path uses (validate, plan, apply, diff of git objects). libyaml turns the
text into events; this module composes them into dicts, lists and scalars itself, so that what
a hostile file may cost is bounded while composing, before anything is built:

- nesting depth, nodes per file (an alias counts as many nodes as it expands to) and aliases
  per file are capped (`limits.py`); the first limit crossed ends the file with one problem;
- an alias refers to an already built value (shared, never copied), and an alias to a node
  that is still open (`&c {self: *c}`) is refused instead of recursing forever;
- only JSON's types come out: the core tags (str, int, float, bool, null, map, seq); any
  other tag (`!Ref`, `!!python/name:`, `!!binary`, `!!set`...), a mapping or list used as a
  key, a NUL character, a date, NaN or infinity is a problem at its position;
- lines are counted as editors and git count them (only \\n, \\r\\n and \\r end a line): the
  characters YAML 1.1 also calls line breaks (U+0085, U+2028, U+2029) are read as text.

Duplicate keys, which YAML parsers usually accept silently, are problems too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.resolver import Resolver

from reconciler.core import limits
from reconciler.core.problems import (
    DUPLICATE_KEY,
    LIMIT_EXCEEDED,
    UNSUPPORTED_YAML,
    WRONG_TYPE,
    YAML_SYNTAX,
    Problem,
    Source,
)

Path = tuple[str | int, ...]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null")}
_TEXT_TAGS = {f"{_CORE}str", f"{_CORE}merge", f"{_CORE}value"}  # `<<` and `=` are text here
_MAP_TAGS = {None, "!", f"{_CORE}map"}
_SEQ_TAGS = {None, "!", f"{_CORE}seq"}
# What libyaml accepts in a stream (YAML 1.1's printable set); anything else ends the parse.
_UNPRINTABLE = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# YAML 1.1 breaks lines at these too; YAML 1.2, editors and git do not.
_EXTRA_BREAKS = "\x85\u2028\u2029"
_STAND_INS = [chr(c) for c in range(0xFDD0, 0xFDF0)]  # Unicode noncharacters, never in text


@dataclass
class Document:
    """One `---` document of a file: its value and where each part of it is written."""

    file: str
    value: Any
    positions: dict[Path, Source] = field(default_factory=dict)
    key_positions: dict[Path, Source] = field(default_factory=dict)
    written: dict[Path, str] = field(default_factory=dict)  # plain numbers, as written

    def at(self, path: Path) -> Source:
        """The position of the value at `path`, or of its nearest written parent."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, Source(self.file))

    def key_at(self, path: Path) -> Source:
        return self.key_positions.get(path) or self.at(path)


class _Stop(Exception):
    """The file cannot be read further: its one problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def parse(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    """Every document of a file, or the problem that stopped the parse."""
    try:
        _check_text(file, text)
        prepared, restore = _yaml12_breaks(file, text)
        composer = _Composer(file, restore)
        _feed_all(composer, prepared)
    except _Stop as stop:
        return [], [stop.problem]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Source(file, mark.line + 1, mark.column + 1) if mark else Source(file)
        if "maximum nesting depth" in str(exc.problem):  # libyaml's own cap, past ours
            return [], [Problem(where, LIMIT_EXCEEDED, limits.too_deep())]
        return [], [Problem(where, YAML_SYNTAX, f"invalid YAML: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:
        return [], [Problem(Source(file), YAML_SYNTAX, f"invalid YAML: {exc}")]
    return composer.documents, composer.problems


def _feed_all(composer: _Composer, text: str) -> None:
    """libyaml's events, straight from its parser (not through yaml.parse's generator)."""
    loader = _Loader(text)
    handlers = composer.handlers()
    try:
        while (event := loader.get_event()) is not None:
            if (handler := handlers.get(type(event))) is not None:
                handler(event)
    finally:
        loader.dispose()


def _check_text(file: str, text: str) -> None:
    if len(text) > limits.MAX_FILE_BYTES:
        raise _Stop(Problem(Source(file), LIMIT_EXCEEDED, limits.too_large(len(text))))
    if bad := _UNPRINTABLE.search(text):
        line = _line_of(text, bad.start())
        col = bad.start() - max(text.rfind("\n", 0, bad.start()), text.rfind("\r", 0, bad.start()))
        raise _Stop(
            Problem(
                Source(file, line, col),
                YAML_SYNTAX,
                f"invalid YAML: character U+{ord(bad.group()):04X} is not allowed in a YAML file "
                "(write it as an escape in a double-quoted string, or remove it)",
            )
        )


def _line_of(text: str, offset: int) -> int:
    before = text[:offset]
    return before.count("\n") + before.count("\r") - before.count("\r\n") + 1


def _yaml12_breaks(file: str, text: str) -> tuple[str, dict[int, str] | None]:
    """The text with U+0085/U+2028/U+2029 swapped for stand-ins libyaml reads as text (one
    character each, so columns hold), and the table that swaps them back in values."""
    if not any(c in text for c in _EXTRA_BREAKS):
        return text, None
    free = [c for c in _STAND_INS if c not in text][: len(_EXTRA_BREAKS)]
    if len(free) < len(_EXTRA_BREAKS):
        message = "invalid YAML: too many Unicode noncharacters (U+FDD0-U+FDEF)"
        raise _Stop(Problem(Source(file), YAML_SYNTAX, message))
    there = dict(zip(_EXTRA_BREAKS, free, strict=True))
    back = {ord(stand_in): original for original, stand_in in there.items()}
    return text.translate({ord(k): v for k, v in there.items()}), back


@dataclass
class _Node:
    """A mapping or list being composed."""

    value: dict[str, Any] | list[Any]
    path: Path
    record: bool  # False under a refused or duplicate key: built for its cost, then dropped
    anchor: str | None
    start_nodes: int  # the file's count of values when it opened, for its anchor's size
    key: Any  # a mapping's key awaiting its value; _NO_KEY when none is pending


_NO_KEY = object()
_PENDING_DROP = object()  # a mapping or list used as a key is being composed
_DROP = object()  # a key that cannot be kept (duplicate, complex): its value is dropped


@dataclass
class _Anchor:
    value: Any
    nodes: int
    text: str | None  # a scalar's text, when the anchor is used as a key


class _Composer:
    """Events -> documents, with every limit checked as each event arrives."""

    def __init__(self, file: str, restore: dict[int, str] | None) -> None:
        self.file = file
        self.restore = restore
        self.documents: list[Document] = []
        self.problems: list[Problem] = []
        self.nodes = 0
        self.aliases = 0
        self._resolver = Resolver()
        self._constructor = SafeConstructor()
        self._begin()

    def _begin(self) -> None:
        self.stack: list[_Node] = []
        self.anchors: dict[str, _Anchor] = {}
        self.open_anchors: set[str] = set()
        self.document = Document(self.file, None)
        self.has_root = False
        self.empty_root = False  # a stray `---` holds an empty document: nothing

    def source(self, event: yaml.Event) -> Source:
        mark = event.start_mark
        return Source(self.file, mark.line + 1, mark.column + 1) if mark else Source(self.file)

    def problem(self, event: yaml.Event, code: str, message: str) -> None:
        self.problems.append(Problem(self.source(event), code, message))

    def handlers(self) -> dict[type[yaml.Event], Callable[[Any], None]]:
        """What each event does, looked up by its type (once per event: the hot path)."""
        return {
            yaml.DocumentStartEvent: lambda _: self._begin(),
            yaml.DocumentEndEvent: lambda _: self._end_document(),
            yaml.ScalarEvent: self._scalar,
            yaml.AliasEvent: self._alias,
            yaml.MappingStartEvent: self._open,
            yaml.SequenceStartEvent: self._open,
            yaml.MappingEndEvent: lambda _: self._close(),
            yaml.SequenceEndEvent: lambda _: self._close(),
        }

    def _end_document(self) -> None:
        if self.has_root and not self.empty_root:
            self.documents.append(self.document)

    # --- counting -------------------------------------------------------------------------

    def _count(self, event: yaml.Event, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > limits.MAX_NODES:
            raise _Stop(Problem(self.source(event), LIMIT_EXCEEDED, limits.too_many_nodes()))

    # --- where a value goes ---------------------------------------------------------------

    def _slot(self, event: yaml.Event) -> tuple[Path, bool] | None:
        """The path and recording of the value that starts at `event`; None for a key."""
        if not self.stack:
            return (), True
        parent = self.stack[-1]
        if isinstance(parent.value, list):
            return (*parent.path, len(parent.value)), parent.record
        if parent.key is _NO_KEY:
            return None
        if parent.key is _DROP:
            return (*parent.path, "?"), False
        return (*parent.path, parent.key), parent.record

    def _place(self, value: Any) -> None:
        if not self.stack:
            self.document.value = value
            self.has_root = True
            return
        parent = self.stack[-1]
        if isinstance(parent.value, list):
            parent.value.append(value)
        elif parent.key is _NO_KEY:
            raise AssertionError("a key is placed by _key")
        else:
            if parent.key is not _DROP:
                parent.value[parent.key] = value
            parent.key = _NO_KEY

    def _record(self, path: Path, record: bool, event: yaml.Event) -> None:
        if record:
            self.document.positions[path] = self.source(event)

    # --- events ---------------------------------------------------------------------------

    def _scalar(self, event: yaml.ScalarEvent) -> None:
        self._count(event, 1)
        text = event.value if self.restore is None else event.value.translate(self.restore)
        slot = self._slot(event)
        if slot is None:
            if event.anchor:
                self.anchors[event.anchor] = _Anchor(text, 1, text)
            self._key(event, text)
            return
        path, record = slot
        if not self.stack and text == "" and event.implicit[0]:
            self.empty_root = True
        value = self._construct(event, text, record)
        self._record(path, record, event)
        if record and tag_is_plain(event) and not isinstance(value, str) and value is not None:
            self.document.written[path] = text
        if event.anchor:
            self.anchors[event.anchor] = _Anchor(value, 1, text)
        self._place(value)

    def _construct(self, event: yaml.ScalarEvent, text: str, record: bool) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _resolved(self._resolver, text, event.implicit)
        if tag in _TEXT_TAGS:
            return self._text(event, text, record)
        if tag not in _SCALAR_TAGS:
            if tag == f"{_CORE}timestamp" and event.tag is None:
                self._refuse(event, WRONG_TYPE, f'a date is not a JSON value; quote it: "{text}"')
            else:
                self._refuse(event, UNSUPPORTED_YAML, _unsupported_tag(tag))
            return text
        return self._number(event, tag, text)

    def _number(self, event: yaml.ScalarEvent, tag: str, text: str) -> Any:
        try:
            value = self._constructor.construct_object(yaml.ScalarNode(tag, text))
        except (ConstructorError, ValueError):
            value = None
        finite = not isinstance(value, float) or math.isfinite(value)
        if (value is None and tag != f"{_CORE}null") or not finite:
            message = f"{shown(text)} is not a JSON number; quote it if it is text"
            self._refuse(event, WRONG_TYPE, message)
            return text
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and tag_is_plain(event) and not _JSON_NUMBER.fullmatch(text):
            self._refuse(event, WRONG_TYPE, _not_decimal(text, value))
            return text
        return value

    def _text(self, event: yaml.ScalarEvent, text: str, record: bool) -> str:
        if "\x00" in text and record:
            self._refuse(event, UNSUPPORTED_YAML, _NUL)
        return text

    def _refuse(self, event: yaml.Event, code: str, message: str) -> None:
        if self._recording():
            self.problem(event, code, message)

    def _recording(self) -> bool:
        return not self.stack or self.stack[-1].record

    def _key(self, event: yaml.ScalarEvent | yaml.AliasEvent, text: str | None) -> None:
        parent = self.stack[-1]
        tag = event.tag if isinstance(event, yaml.ScalarEvent) else None
        if text is None:  # an alias to a mapping or list
            self._refuse(event, UNSUPPORTED_YAML, "a key must be a text, not a mapping or list")
            parent.key = _DROP
            return
        if tag not in (None, "!") and tag not in _SCALAR_TAGS:
            self._refuse(event, UNSUPPORTED_YAML, _unsupported_tag(tag))
        if "\x00" in text:
            self._refuse(event, UNSUPPORTED_YAML, _NUL)
        assert isinstance(parent.value, dict)
        path = (*parent.path, text)
        if text in parent.value:
            first = self.document.key_positions.get(path)
            line = f" (first at line {first.line})" if first else ""
            self._refuse(event, DUPLICATE_KEY, f"duplicate key {shown(text)}{line}")
            parent.key = _DROP
            return
        if parent.record:
            self.document.key_positions[path] = self.source(event)
        parent.key = text

    def _alias(self, event: yaml.AliasEvent) -> None:
        self.aliases += 1
        if self.aliases > limits.MAX_ALIASES:
            raise _Stop(Problem(self.source(event), LIMIT_EXCEEDED, limits.too_many_aliases()))
        anchor = self.anchors.get(event.anchor or "")
        if event.anchor in self.open_anchors:
            message = f"alias *{event.anchor} refers to a value that contains it (recursive)"
            self._refuse(event, UNSUPPORTED_YAML, message)
            anchor = _Anchor(None, 1, None)
        elif anchor is None:
            raise _Stop(Problem(self.source(event), YAML_SYNTAX, _undefined(event.anchor)))
        self._count(event, anchor.nodes)
        slot = self._slot(event)
        if slot is None:
            self._key(event, anchor.text)
            return
        path, record = slot
        self._record(path, record, event)
        self._place(anchor.value)

    def _open(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        self._count(event, 1)
        if len(self.stack) >= limits.MAX_DEPTH:
            raise _Stop(Problem(self.source(event), LIMIT_EXCEEDED, limits.too_deep()))
        is_map = isinstance(event, yaml.MappingStartEvent)
        slot = self._slot(event)
        if slot is None:  # a mapping or list as a key: composed for its cost, then dropped
            self._refuse(event, UNSUPPORTED_YAML, "a key must be a text, not a mapping or list")
            self.stack[-1].key = _PENDING_DROP
            slot = ((), False)
        path, record = slot
        if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS) and record:
            self.problem(event, UNSUPPORTED_YAML, _unsupported_tag(event.tag))
        self._record(path, record, event)
        if event.anchor:
            self.open_anchors.add(event.anchor)
        value: dict[str, Any] | list[Any] = {} if is_map else []
        node = _Node(value, path, record, event.anchor, self.nodes, _NO_KEY)
        self.stack.append(node)

    def _close(self) -> None:
        node = self.stack.pop()
        if node.anchor:
            self.open_anchors.discard(node.anchor)
            self.anchors[node.anchor] = _Anchor(node.value, self.nodes - node.start_nodes + 1, None)
        if self.stack and self.stack[-1].key is _PENDING_DROP:
            self.stack[-1].key = _DROP  # the complex key is over: its value is dropped
            return
        self._place(node.value)


# A plain number is read only when written as JSON writes it: YAML 1.1 also reads octal
# (`017` is 15, where YAML 1.2 and JSON read 17), hex, binary, `1_000` and sexagesimal
# (`10:30` is 630) numbers, which silently change what was meant.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def _not_decimal(text: str, value: float) -> str:
    return (
        f"{shown(text)} is read by YAML 1.1 as the number {value!r}; write the number in "
        f'decimal as JSON does, or quote it if it is text: "{text}"'
    )


_RESOLVED: dict[tuple[str, tuple[bool, bool]], str] = {}  # untagged scalar -> its tag
_RESOLVED_MAX = 4096


def _resolved(resolver: Resolver, text: str, implicit: tuple[bool, bool]) -> str:
    """The tag YAML gives an untagged scalar: a pure function of its text and style, run
    through a few regular expressions; a fleet repeats the same short values (main, build,
    true, 18.0...), so the answers for short texts are remembered (a bounded table)."""
    key = (text, implicit)
    tag = _RESOLVED.get(key)
    if tag is None:
        tag = resolver.resolve(yaml.ScalarNode, text, implicit)  # type: ignore[no-untyped-call]
        if len(text) <= 64 and len(_RESOLVED) < _RESOLVED_MAX:
            _RESOLVED[key] = tag
    return tag


_NUL = "a NUL character (U+0000) cannot be stored (PostgreSQL text cannot hold it)"


def shown(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: quoted, escaped, and cut when long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def tag_is_plain(event: yaml.ScalarEvent) -> bool:
    """An unquoted scalar without a tag: its type comes from how it looks."""
    return event.tag is None and bool(event.implicit[0])


def _unsupported_tag(tag: str | None) -> str:
    tag_text = "!!" + tag.removeprefix(_CORE) if tag and tag.startswith(_CORE) else tag
    return (
        f"unsupported tag {shown(tag_text)}: only JSON's types are read "
        "(text, number, true/false, null, mapping, list)"
    )


def _undefined(anchor: str | None) -> str:
    return f"invalid YAML: found undefined alias {anchor!r}"
