"""One file's text -> its resources and problems (pure; what the per-file cache stores)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.core import problems as codes
from reconciler.core import schema
from reconciler.core.desired import Resource, resources_of
from reconciler.core.problems import Problem, Source
from reconciler.core.repository import (
    CONTROL,
    has_credentials,
    local_path,
    redact,
    ref_refusal,
    refusal,
)
from reconciler.core.yamldoc import Document, parse


@dataclass(frozen=True)
class FileResult:
    resources: tuple[Resource, ...]
    problems: tuple[Problem, ...]


def check_file(file: str, text: str) -> FileResult:
    documents, problems = parse(file, text)
    resources: list[Resource] = []
    for document in documents:
        found = schema.check(document) or code_problems(document)
        if not found:
            resources += resources_of(document)
        problems += _not_at(found, {p.source for p in problems})
    return FileResult(tuple(resources), tuple(sorted(problems)))


def _not_at(found: list[Problem], reported: set[Source]) -> list[Problem]:
    """The schema's problems, less those at a value the loader already refused (a `!Ref`
    where a string is expected is one problem, not two)."""
    return [p for p in found if p.source not in reported]


def code_problems(document: Document) -> list[Problem]:
    """What a schema cannot say of a valid document: a Project's `repository` must be a URL
    git may be handed and hold no credential; a `git_ref` must be a name git accepts."""
    found = [
        Problem(document.at(path), codes.BAD_FORMAT, f"{_dotted(path)}: {message}")
        for path, message in _code_fields(document.value)
    ]
    return sorted(found)


def _code_fields(value: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], str]]:
    url = value.get("repository") if value["kind"] == "Project" else None
    if isinstance(url, str) and (message := _repository_message(url)):
        yield ("repository",), message
    for path, spec in _workflow_specs(value):
        ref = spec.get("git_ref")
        if isinstance(ref, str) and (reason := ref_refusal(ref)):
            yield (*path, "git_ref"), _printable(reason)


def _repository_message(url: str) -> str | None:
    if reason := refusal(url):
        return f"{_printable(repr(redact(url)))} is refused: {reason}"
    if local_path(url) is not None:
        return (
            f"{_printable(repr(url))} is refused: a local path would be read from the workers' "
            "own disks; use the URL of the git server (https://, ssh://, git://, user@host:path)"
        )
    if has_credentials(url):
        return (
            f"{redact(url)!r} holds a credential, which every member could read; remove it "
            "and give the workers access instead (a git credential helper or an ssh key)"
        )
    return None


def _workflow_specs(value: dict[str, Any]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    if value["kind"] == "Workflow":
        yield (), value
    elif value["kind"] == "Project":
        for i, spec in enumerate(value.get("workflows") or []):
            yield ("workflows", i), spec


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def _printable(text: str) -> str:
    return CONTROL.sub("?", text)
