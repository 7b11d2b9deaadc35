"""Validated documents -> resources keyed by natural key, and the checks across files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from reconciler.core import problems as codes
from reconciler.core.problems import Problem, Source
from reconciler.core.yamldoc import Document

KIND_ORDER = ("project", "workflow", "membership", "tool", "upgrade_advisory")
Identity = tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """One row the files ask for. `fields` has the shape the database rows are compared in."""

    kind: str
    identity: Identity
    fields: dict[str, Any]
    source: Source
    inline: bool = False
    refs: dict[str, Source] = field(default_factory=dict)  # where `project`/`user` are written
    label: str | None = None  # the key as written, where the identity is resolved (memberships)

    @property
    def key(self) -> str:
        return self.label or resource_key(self.kind, self.identity)


def resource_key(kind: str, identity: Identity) -> str:
    """The key users see: acme-erp, acme-erp/build/build-main, acme-erp/alice@x, odoo@18.0."""
    if kind == "tool":
        return f"{identity[0]}@{identity[1]}"
    return "/".join(identity)


def resources_of(document: Document) -> list[Resource]:
    """The resources of one valid document (a Project brings its inline ones)."""
    value = document.value
    kind = value["kind"]
    if kind == "Project":
        return _project(document)
    if kind == "Workflow":
        return [_workflow(document, value, (), value["project"], inline=False)]
    if kind == "Membership":
        return [_membership(document, value, (), value["project"], inline=False)]
    if kind == "Tool":
        return [_tool(document, value)]
    return [_advisory(document, value)]


def _project(document: Document) -> list[Resource]:
    value = document.value
    slug = value["slug"]
    project = Resource(
        "project",
        (slug,),
        {
            "slug": slug,
            "workspace_key": value["workspace_key"],
            "name": value["name"],
            "description": value.get("description"),
            "odoo_version": value["odoo_version"],
            "status": value.get("status", "active"),
            "config": value.get("config", {}),
        },
        document.at(()),
    )
    workflows = [
        _workflow(document, spec, ("workflows", i), slug, inline=True)
        for i, spec in enumerate(value.get("workflows", []))
    ]
    members = [
        _membership(document, spec, ("members", i), slug, inline=True)
        for i, spec in enumerate(value.get("members", []))
    ]
    return [project, *workflows, *members]


def _workflow(
    document: Document, spec: dict[str, Any], path: tuple[Any, ...], project: str, *, inline: bool
) -> Resource:
    return Resource(
        "workflow",
        (project, spec["type"], spec["name"]),
        {
            "project": project,
            "type": spec["type"],
            "name": spec["name"],
            "description": spec.get("description"),
            "enabled": spec.get("enabled", True),
            "git_ref": spec.get("git_ref"),
            "triggers": sorted(spec.get("on", [])),
            "config": spec.get("config", {}),
        },
        document.at(path),
        inline,
        {"project": document.at((*path, "project")) if not inline else document.at(path)},
    )


def _membership(
    document: Document, spec: dict[str, Any], path: tuple[Any, ...], project: str, *, inline: bool
) -> Resource:
    user = spec["user"]
    return Resource(
        "membership",
        (project, user.lower()),
        {"project": project, "user": user.lower(), "role": spec["role"]},
        document.at(path),
        inline,
        {
            "project": document.at((*path, "project")) if not inline else document.at(path),
            "user": document.at((*path, "user")),
        },
        label=f"{project}/{user}",
    )


def _tool(document: Document, value: dict[str, Any]) -> Resource:
    return Resource(
        "tool",
        (value["name"], value["version"]),
        {
            "name": value["name"],
            "version": value["version"],
            "docker_image": value["docker_image"],
            "config": value.get("config", {}),
        },
        document.at(()),
    )


def _advisory(document: Document, value: dict[str, Any]) -> Resource:
    return Resource(
        "upgrade_advisory",
        (value["key"],),
        {
            "key": value["key"],
            "from_version": value["from_version"],
            "to_version": value["to_version"],
            "severity": value["severity"],
            "title": value["title"],
            "description": value["description"],
            "migration_guide": value.get("migration_guide"),
            "affects_modules": value.get("affects_modules"),
        },
        document.at(()),
    )


@dataclass(frozen=True)
class DesiredState:
    """Every resource the files ask for, by (kind, identity), in a deterministic order."""

    resources: dict[tuple[str, Identity], Resource]

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for (k, _), r in self.resources.items() if k == kind]

    def projects(self) -> set[str]:
        return {identity[0] for kind, identity in self.resources if kind == "project"}


def assemble(
    resources: Iterable[Resource], known_projects: set[str]
) -> tuple[DesiredState, list[Problem]]:
    """Index the resources; report duplicates and references to projects nobody defines."""
    indexed: dict[tuple[str, Identity], Resource] = {}
    found: list[Problem] = []
    for resource in sorted(resources, key=_order):
        slot = (resource.kind, resource.identity)
        first = indexed.get(slot)
        if first is None:
            indexed[slot] = resource
        else:
            found.append(_duplicate(resource, first))
    state = DesiredState(indexed)
    projects = state.projects() | known_projects
    for resource in indexed.values():
        project = resource.fields.get("project")
        if resource.kind in ("workflow", "membership") and project not in projects:
            found.append(
                Problem(
                    resource.refs["project"],
                    codes.UNKNOWN_PROJECT,
                    f"{resource.kind} {resource.key}: project {project!r} is neither in the files "
                    "nor in the database",
                )
            )
    return state, found


def _duplicate(resource: Resource, first: Resource) -> Problem:
    code = (
        codes.INLINE_AND_STANDALONE if resource.inline != first.inline else codes.DUPLICATE_RESOURCE
    )
    return Problem(
        resource.source,
        code,
        f"{resource.kind} {resource.key} is already defined at {first.source}",
    )


def _order(resource: Resource) -> tuple[int, Identity, Source]:
    return KIND_ORDER.index(resource.kind), resource.identity, resource.source
