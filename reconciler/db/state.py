"""The actual state: the rows of the ops.* tables in the shape of the desired resources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from reconciler.core.desired import Identity, resource_key
from reconciler.core.plan import Row
from reconciler.db.queries import query

Conn = psycopg.Connection[Any]
Slot = tuple[str, Identity]


@dataclass(frozen=True)
class ActualState:
    rows: dict[Slot, Row]
    users: dict[str, str]  # lower-case e-mail or uuid -> user id

    def project_ids(self) -> dict[str, Any]:
        return {
            row.identity[0]: row.id for (kind, _), row in self.rows.items() if kind == "project"
        }

    def workflow_ids(self) -> dict[Identity, Any]:
        return {row.identity: row.id for (kind, _), row in self.rows.items() if kind == "workflow"}


def read(conn: Conn) -> ActualState:
    rows: dict[Slot, Row] = {}
    for row in (
        _projects(conn) + _workflows(conn) + _memberships(conn) + _tools(conn) + _advisories(conn)
    ):
        rows[(row.kind, row.identity)] = row
    return ActualState(rows, _users(conn))


def _projects(conn: Conn) -> list[Row]:
    rows = []
    for (
        id_,
        slug,
        workspace_key,
        name,
        description,
        version,
        status,
        config,
        managed,
    ) in conn.execute(query("read_projects")):
        fields = {
            "slug": slug,
            "workspace_key": workspace_key,
            "name": name,
            "description": description,
            "odoo_version": version,
            "status": status,
            "config": config,
        }
        rows.append(Row("project", (slug,), id_, fields, managed, slug))
    return rows


def _workflows(conn: Conn) -> list[Row]:
    rows = []
    for (
        id_,
        slug,
        type_,
        name,
        description,
        enabled,
        git_ref,
        triggers,
        config,
        managed,
    ) in conn.execute(query("read_workflows")):
        identity = (slug, type_, name)
        rows.append(
            Row(
                "workflow",
                identity,
                id_,
                {
                    "project": slug,
                    "type": type_,
                    "name": name,
                    "description": description,
                    "enabled": enabled,
                    "git_ref": git_ref,
                    "triggers": sorted(triggers),
                    "config": config,
                },
                managed,
                resource_key("workflow", identity),
            )
        )
    return rows


def _memberships(conn: Conn) -> list[Row]:
    return [
        Row(
            "membership",
            (slug, user_id),
            id_,
            {"project": slug, "user": user_id, "role": role},
            managed,
            f"{slug}/{shown}",
        )
        for id_, slug, user_id, shown, role, managed in conn.execute(query("read_memberships"))
    ]


def _tools(conn: Conn) -> list[Row]:
    return [
        Row(
            "tool",
            (name, version),
            id_,
            {"name": name, "version": version, "docker_image": image, "config": config},
            managed,
            resource_key("tool", (name, version)),
        )
        for id_, name, version, image, config, managed in conn.execute(query("read_tools"))
    ]


def _advisories(conn: Conn) -> list[Row]:
    rows = []
    for (
        id_,
        key,
        from_v,
        to_v,
        severity,
        title,
        description,
        guide,
        modules,
        managed,
    ) in conn.execute(query("read_advisories")):
        rows.append(
            Row(
                "upgrade_advisory",
                (key,),
                id_,
                {
                    "key": key,
                    "from_version": from_v,
                    "to_version": to_v,
                    "severity": severity,
                    "title": title,
                    "description": description,
                    "migration_guide": guide,
                    "affects_modules": modules,
                },
                managed,
                key,
            )
        )
    return rows


def _users(conn: Conn) -> dict[str, str]:
    users: dict[str, str] = {}
    for user_id, email in conn.execute(query("read_users")):
        users[user_id] = user_id
        if email:
            users[email] = user_id
    return users


def existing_run_keys(conn: Conn, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    return {k for (k,) in conn.execute(query("existing_run_keys"), {"keys": keys})}
