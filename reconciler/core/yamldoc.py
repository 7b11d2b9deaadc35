"""YAML text -> documents of plain values, with the source position of every value and key.

PyYAML's composer gives nodes with marks; this turns them into dicts, lists and scalars and keeps
a position per path. Duplicate keys, which PyYAML silently accepts, are problems here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.core.problems import DUPLICATE_KEY, YAML_SYNTAX, Problem, Source

Path = tuple[str | int, ...]
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class Document:
    """One `---` document of a file: its value and where each part of it is written."""

    file: str
    value: Any
    positions: dict[Path, Source] = field(default_factory=dict)
    key_positions: dict[Path, Source] = field(default_factory=dict)

    def at(self, path: Path) -> Source:
        """The position of the value at `path`, or of its nearest written parent."""
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, Source(self.file))

    def key_at(self, path: Path) -> Source:
        return self.key_positions.get(path) or self.at(path)


def parse(file: str, text: str) -> tuple[list[Document], list[Problem]]:
    """Every document of a file, or the syntax problem that stopped the parse."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Source(file, mark.line + 1, mark.column + 1) if mark else Source(file)
        return [], [Problem(where, YAML_SYNTAX, f"invalid YAML: {exc.problem or exc}")]
    except yaml.YAMLError as exc:
        return [], [Problem(Source(file), YAML_SYNTAX, f"invalid YAML: {exc}")]
    documents, problems = [], []
    for node in nodes:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.value == ""):
            continue  # an empty document (a stray `---`) holds nothing
        builder = _Builder(file)
        value = builder.build(node, ())
        documents.append(Document(file, value, builder.positions, builder.key_positions))
        problems += builder.problems
    return documents, problems


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.positions: dict[Path, Source] = {}
        self.key_positions: dict[Path, Source] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")

    def source(self, node: yaml.Node) -> Source:
        return Source(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.positions[path] = self.source(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._constructor.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            # Keys are names: YAML 1.1 would read `on:` as true; keep the written text.
            key = (
                key_node.value
                if isinstance(key_node, yaml.ScalarNode)
                else str(self._constructor.construct_object(key_node, deep=True))
            )
            child = (*path, key)
            if key in result:
                first = self.key_positions[child]
                self.problems.append(
                    Problem(
                        self.source(key_node),
                        DUPLICATE_KEY,
                        f"duplicate key {key!r} (first at line {first.line})",
                    )
                )
                continue
            self.key_positions[child] = self.source(key_node)
            result[key] = self.build(value_node, child)
        return result
