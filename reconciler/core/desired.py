"""Validated documents -> resources keyed by natural key, and the checks across files.

A Resource is compact on purpose: the per-file cache holds 160,000 of them for a large fleet.
Its fields are kept as canonical JSON (`body`) with a digest of what the database row is
compared on, so an unchanged resource is recognised without comparing field by field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from reconciler.core import problems as codes
from reconciler.core.emails import email_key
from reconciler.core.problems import Problem, Source
from reconciler.core.yamldoc import Document

KIND_ORDER = ("project", "workflow", "membership", "tool", "upgrade_advisory")
Identity = tuple[str, ...]
Slot = tuple[str, Identity]
ANY_BRANCH = "*"


class Resource(NamedTuple):
    """One row the files ask for. Plain data all the way down (positions are numbers, not
    Source objects), so the cache stores plain tuples and rebuilds Resources in C
    (`from_plain`): a large fleet has hundreds of thousands."""

    kind: str
    identity: Identity
    fields: dict[str, Any]  # in the shape database rows are compared in; treat as read-only
    digest: str  # of the compared fields; stored on the row as spec_hash when applied
    file: str
    line: int
    col: int
    inline: bool = False
    refs: tuple[tuple[str, int, int], ...] = ()  # where `project` / `user` are written
    label: str | None = None  # the key users see (for memberships, the user as written)
    runs_on: str | None = None  # workflows: the branch whose pushes run it, ANY_BRANCH, or None

    @property
    def key(self) -> str:
        return self.label or resource_key(self.kind, self.identity)

    @property
    def source(self) -> Source:
        return Source(self.file, self.line, self.col)

    def ref(self, name: str) -> Source:
        for ref_name, line, col in self.refs:
            if ref_name == name:
                return Source(self.file, line, col)
        return self.source


from_plain = partial(tuple.__new__, Resource)  # a Resource from tuple(resource), in C


def resource_key(kind: str, identity: Identity) -> str:
    """The key users see: acme-erp, acme-erp/build/build-main, acme-erp/alice@x, odoo@18.0."""
    if kind == "tool":
        return f"{identity[0]}@{identity[1]}"
    return "/".join(identity)


# json.dumps with options builds an encoder per call; this runs for every resource of a fleet.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_of(kind: str, fields: dict[str, Any]) -> str:
    """What a row is compared on; a membership's user is its identity, resolved elsewhere."""
    compared = {k: v for k, v in fields.items() if not (kind == "membership" and k == "user")}
    text = _CANONICAL.encode(compared)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def make(
    kind: str,
    identity: Identity,
    fields: dict[str, Any],
    source: Source,
    refs: tuple[tuple[str, Source], ...] = (),
    **extra: Any,
) -> Resource:
    extra.setdefault("label", resource_key(kind, identity))  # computed once, cached with it
    return Resource(
        kind,
        identity,
        fields,
        digest_of(kind, fields),
        source.file,
        source.line,
        source.col,
        refs=tuple((name, where.line, where.col) for name, where in refs),
        **extra,
    )


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
    project = make(
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
            **optional_fields(
                acknowledged_advisories=sorted(value.get("acknowledged_advisories", []))
            ),
            **_optional(repository=value.get("repository")),
        },
        document.at(()),
        refs=(("odoo_version", document.at(("odoo_version",))),),
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


def _optional(**fields: Any) -> dict[str, Any]:
    """Fields added after v1 are compared only when set, so the digest of every resource
    that does not use them stays what it was (no full re-read of a fleet after an upgrade)."""
    return {name: value for name, value in fields.items() if value is not None}


def _workflow(
    document: Document, spec: dict[str, Any], path: tuple[Any, ...], project: str, *, inline: bool
) -> Resource:
    enabled = spec.get("enabled", True)
    triggers = sorted(spec.get("on", []))
    runs_on = (spec.get("git_ref") or ANY_BRANCH) if enabled and "push" in triggers else None
    return make(
        "workflow",
        (project, spec["type"], spec["name"]),
        {
            "project": project,
            "type": spec["type"],
            "name": spec["name"],
            "description": spec.get("description"),
            "enabled": enabled,
            "git_ref": spec.get("git_ref"),
            "triggers": triggers,
            "config": spec.get("config", {}),
            **optional_fields(
                needs=sorted(spec.get("needs", [])),
                concurrency=spec.get("concurrency"),
                schedule=spec.get("schedule"),
                timezone=spec.get("timezone"),
                paths=spec.get("paths", []),
            ),
        },
        document.at(path),
        inline=inline,
        refs=tuple(
            (name, document.at((*path, name)))
            for name in ("project", "needs", "schedule", "timezone", "enabled", "paths")
            if name in spec and not (inline and name == "project")
        ),
        runs_on=runs_on,
    )


# Fields added after 0.1 (pipelines) are in a resource only when set, so that the digests of
# resources that do not use them stay what they were.
OPTIONAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "project": {"acknowledged_advisories": []},
    "workflow": {"needs": [], "concurrency": None, "schedule": None, "timezone": None, "paths": []},
}


def optional_fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v not in (None, [], ())}


def _membership(
    document: Document, spec: dict[str, Any], path: tuple[Any, ...], project: str, *, inline: bool
) -> Resource:
    user = spec["user"]
    refs = [("user", document.at((*path, "user")))]
    if not inline:
        refs.append(("project", document.at((*path, "project"))))
    return make(
        "membership",
        (project, email_key(user)),
        {"project": project, "user": email_key(user), "role": spec["role"]},
        document.at(path),
        inline=inline,
        refs=tuple(refs),
        label=f"{project}/{user}",
    )


def _tool(document: Document, value: dict[str, Any]) -> Resource:
    return make(
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
    return make(
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
    """Every resource the files ask for, by slot (kind, identity). A membership's slot holds
    the resolved user id once `resolve_members` has run."""

    resources: dict[Slot, Resource]


def assemble(
    resources: Iterable[Resource], known_projects: set[str]
) -> tuple[DesiredState, list[Problem]]:
    """Index the resources (in file order); report duplicates and unknown projects. (A new
    check here needs its slot-only twin in `clean_across_files`.)"""
    indexed: dict[Slot, Resource] = {}
    found: list[Problem] = []
    for resource in resources:
        slot = (resource.kind, resource.identity)
        first = indexed.setdefault(slot, resource)
        if first is not resource:
            found.append(_duplicate(resource, first))
    projects = {identity[0] for kind, identity in indexed if kind == "project"} | known_projects
    for (kind, identity), resource in indexed.items():
        if kind in ("workflow", "membership") and identity[0] not in projects:
            found.append(
                Problem(
                    resource.ref("project"),
                    codes.UNKNOWN_PROJECT,
                    f"{kind} {resource.key}: project {identity[0]!r} is neither in the files "
                    "nor in the database",
                )
            )
    return DesiredState(indexed), found


def clean_across_files(slots: Iterable[Slot]) -> bool:
    """Whether `assemble` (with no projects known from a database) would find nothing: no
    slot twice, no workflow or membership of a project not among them. Needs only slots, so
    a valid fleet is checked without loading its resources; when False, `assemble` tells."""
    seen: set[Slot] = set()
    count = 0
    for slot in slots:
        seen.add(slot)
        count += 1
    if len(seen) != count:
        return False
    projects = {identity[0] for kind, identity in seen if kind == "project"}
    return all(
        identity[0] in projects for kind, identity in seen if kind in ("workflow", "membership")
    )


def clean_across(slots: list[Slot], projects: set[str], referenced: set[str]) -> bool:
    """`clean_across_files`, given the projects the resources define and those their
    workflows and memberships belong to (gathered file by file): set operations in C."""
    return len(set(slots)) == len(slots) and referenced <= projects


def _duplicate(resource: Resource, first: Resource) -> Problem:
    code = (
        codes.INLINE_AND_STANDALONE if resource.inline != first.inline else codes.DUPLICATE_RESOURCE
    )
    return Problem(
        resource.source,
        code,
        f"{resource.kind} {resource.key} is already defined at {first.source}",
    )
