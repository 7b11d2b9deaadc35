"""One file's text -> its resources and problems (pure; what the per-file cache stores)."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core import schema
from reconciler.core.desired import Resource, resources_of
from reconciler.core.problems import Problem
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
        problems += found
        if not found:
            resources += resources_of(document)
    return FileResult(tuple(resources), tuple(sorted(problems)))
