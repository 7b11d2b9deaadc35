"""One file's text -> its resources and problems (pure; what the per-file cache stores)."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core import schema
from reconciler.core.desired import Resource, resources_of
from reconciler.core.problems import Problem, Source
from reconciler.core.yamldoc import parse


@dataclass(frozen=True)
class FileResult:
    resources: tuple[Resource, ...]
    problems: tuple[Problem, ...]


def check_file(file: str, text: str) -> FileResult:
    documents, problems = parse(file, text)
    resources: list[Resource] = []
    for document in documents:
        found = schema.check(document)
        if not found:
            resources += resources_of(document)
        problems += _not_at(found, {p.source for p in problems})
    return FileResult(tuple(resources), tuple(sorted(problems)))


def _not_at(found: list[Problem], reported: set[Source]) -> list[Problem]:
    """The schema's problems, less those at a value the loader already refused (a `!Ref`
    where a string is expected is one problem, not two)."""
    return [p for p in found if p.source not in reported]
