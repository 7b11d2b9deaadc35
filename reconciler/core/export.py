"""Rows of the database -> the YAML files that ask for them (`reconcile export`). Pure.

The files are the ones a team would write: a project per file with its workflows and members
inline (projects/SLUG.yaml), the tools and the advisories of the catalog in one file each.
Values equal to the defaults of the schema are left out, so a plan of the exported files
compares equal to the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from reconciler.core.plan import Row

HEADER = {"apiVersion": "ops/v1"}
_DEFAULTS: dict[str, Any] = {
    "description": None,
    "config": {},
    "status": "active",
    "enabled": True,
    "needs": [],
    "paths": [],
    "acknowledged_advisories": [],
}


def files_of(rows: Iterable[Row]) -> dict[str, str]:
    """Relative path -> YAML text, for every row."""
    by_kind: dict[str, list[Row]] = {}
    for row in rows:
        by_kind.setdefault(row.kind, []).append(row)
    projects = {r.identity[0]: _project(r) for r in by_kind.get("project", [])}
    for row in sorted(by_kind.get("workflow", []), key=lambda r: r.identity):
        projects[row.identity[0]].setdefault("workflows", []).append(_workflow(row))
    for row in sorted(by_kind.get("membership", []), key=lambda r: r.label):
        projects[row.identity[0]].setdefault("members", []).append(_member(row))
    found = {f"projects/{slug}.yaml": _dump([doc]) for slug, doc in sorted(projects.items())}
    for kind, path, convert in (
        ("tool", "catalog/tools.yaml", _tool),
        ("upgrade_advisory", "catalog/advisories.yaml", _advisory),
    ):
        if kind_rows := sorted(by_kind.get(kind, []), key=lambda r: r.identity):
            found[path] = _dump([convert(r) for r in kind_rows])
    return found


def _dump(documents: list[dict[str, Any]]) -> str:
    return "---\n".join(
        yaml.safe_dump(d, sort_keys=False, allow_unicode=True, width=100) for d in documents
    )


def _without_defaults(fields: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    kept = {}
    for name in names:
        value = fields.get(name)
        if name in _DEFAULTS and value == _DEFAULTS[name]:
            continue
        if value is not None:
            kept[name] = value
    return kept


def _project(row: Row) -> dict[str, Any]:
    names = (
        "slug",
        "workspace_key",
        "name",
        "description",
        "odoo_version",
        "status",
        "repository",
        "acknowledged_advisories",
        "config",
    )
    return {**HEADER, "kind": "Project", **_without_defaults(row.fields, names)}


def _workflow(row: Row) -> dict[str, Any]:
    fields = dict(row.fields)
    fields["on"] = fields.pop("triggers") or None
    names = (
        "type",
        "name",
        "description",
        "git_ref",
        "on",
        "needs",
        "concurrency",
        "schedule",
        "timezone",
        "paths",
        "enabled",
        "config",
    )
    return _without_defaults(fields, names)


def _member(row: Row) -> dict[str, Any]:
    user = row.label.split("/", 1)[1]  # the e-mail (the user id when there is none)
    return {"user": user, "role": row.fields["role"]}


def _tool(row: Row) -> dict[str, Any]:
    names = ("name", "version", "docker_image", "config")
    return {**HEADER, "kind": "Tool", **_without_defaults(row.fields, names)}


def _advisory(row: Row) -> dict[str, Any]:
    names = (
        "key",
        "from_version",
        "to_version",
        "severity",
        "title",
        "description",
        "migration_guide",
        "affects_modules",
    )
    fields = {n: row.fields.get(n) for n in names}
    kept = {n: v for n, v in fields.items() if v is not None}
    if "description" in fields and fields["description"] is None:
        kept["description"] = None  # required by the schema, even when empty
    return {**HEADER, "kind": "UpgradeAdvisory", **kept}
