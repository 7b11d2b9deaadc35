"""The actual state: an index of every row (cheap), and full rows for those the diff needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from reconciler.core.desired import Identity, Slot, optional_fields, resource_key
from reconciler.core.plan import Indexed, Row
from reconciler.core.summary import GroupState
from reconciler.core.upgrades import Advisory, advisory_of
from reconciler.db.queries import query

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class ActualState:
    index: dict[Slot, Indexed]
    users: dict[str, str]  # lower-case e-mail or uuid -> user id

    def project_ids(self) -> dict[str, Any]:
        return {
            identity[0]: row.id for (kind, identity), row in self.index.items() if kind == "project"
        }

    def workflow_ids(self) -> dict[tuple[str, ...], Any]:
        return {
            identity: row.id for (kind, identity), row in self.index.items() if kind == "workflow"
        }


def group_states(conn: Conn) -> dict[str, GroupState]:
    """The database's summary of every group (see core/summary.py)."""
    return {
        group: GroupState(int(total), unsettled, managed)
        for group, total, unsettled, managed in conn.execute(query("group_summaries"))
    }


def read(conn: Conn, groups: set[str], users: dict[str, str] | None = None) -> ActualState:
    """The index of the rows of these groups (and the users, when any group is read and
    `users` is not given: a plan in chunks reads them once)."""
    index: dict[Slot, Indexed] = {}
    projects = sorted(g for g in groups if not g.startswith("@"))
    for kind, name, width in (
        ("project", "index_projects", 1),
        ("workflow", "index_workflows", 3),
        ("membership", "index_memberships", 2),
        ("tool", "index_tools", 2),
        ("upgrade_advisory", "index_advisories", 1),
    ):
        global_kind = kind in ("tool", "upgrade_advisory")
        if (global_kind and f"@{kind}" not in groups) or (not global_kind and not projects):
            continue
        records = conn.execute(query(name), {"projects": projects}).fetchall()
        index.update(((kind, r[:width]), Indexed(*r[width:])) for r in records)
    if users is None:
        users = read_users(conn) if groups else {}
    return ActualState(index, users)


def workflow_ids(conn: Conn, identities: list[Identity]) -> dict[Identity, tuple[Any, Any]]:
    """(workflow id, project id) of existing workflows, by identity."""
    if not identities:
        return {}
    slugs, types, names = (list(column) for column in zip(*identities, strict=True))
    rows = conn.execute(query("workflow_ids"), {"slugs": slugs, "types": types, "names": names})
    return {(slug, type_, name): (wid, pid) for slug, type_, name, wid, pid in rows}


def read_rows(conn: Conn, actual: ActualState, slots: Iterable[Slot]) -> dict[Slot, Row]:
    """The full content of the rows at these slots."""
    ids: dict[str, list[Any]] = {}
    for kind, identity in slots:
        ids.setdefault(kind, []).append(actual.index[(kind, identity)].id)
    rows: dict[Slot, Row] = {}
    for kind, reader in _READERS.items():
        if ids.get(kind):
            rows.update((row_slot(r), r) for r in reader(conn, ids[kind]))
    return rows


def row_slot(row: Row) -> Slot:
    return row.kind, row.identity


def _projects(conn: Conn, ids: list[Any]) -> list[Row]:
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
        repository,
        managed,
        acknowledged,
    ) in conn.execute(query("read_projects"), {"ids": ids}):
        fields = {
            "slug": slug,
            "workspace_key": workspace_key,
            "name": name,
            "description": description,
            "odoo_version": version,
            "status": status,
            "config": config,
            **optional_fields(acknowledged_advisories=sorted(acknowledged)),
        }
        if repository is not None:  # compared only when set, as the files do (desired.py)
            fields["repository"] = repository
        rows.append(Row("project", (slug,), id_, fields, managed, slug))
    return rows


def _workflows(conn: Conn, ids: list[Any]) -> list[Row]:
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
        needs,
        concurrency,
        schedule,
        timezone,
        paths,
    ) in conn.execute(query("read_workflows"), {"ids": ids}):
        identity = (slug, type_, name)
        fields = {
            "project": slug,
            "type": type_,
            "name": name,
            "description": description,
            "enabled": enabled,
            "git_ref": git_ref,
            "triggers": sorted(triggers),
            "config": config,
            **optional_fields(
                needs=sorted(needs),
                concurrency=concurrency,
                schedule=schedule,
                timezone=timezone,
                paths=paths,
            ),
        }
        rows.append(
            Row("workflow", identity, id_, fields, managed, resource_key("workflow", identity))
        )
    return rows


def _memberships(conn: Conn, ids: list[Any]) -> list[Row]:
    return [
        Row(
            "membership",
            (slug, user_id),
            id_,
            {"project": slug, "user": user_id, "role": role},
            managed,
            f"{slug}/{shown}",
        )
        for id_, slug, user_id, shown, role, managed in (
            conn.execute(query("read_memberships"), {"ids": ids})
        )
    ]


def _tools(conn: Conn, ids: list[Any]) -> list[Row]:
    return [
        Row(
            "tool",
            (name, version),
            id_,
            {"name": name, "version": version, "docker_image": image, "config": config},
            managed,
            resource_key("tool", (name, version)),
        )
        for id_, name, version, image, config, managed in (
            conn.execute(query("read_tools"), {"ids": ids})
        )
    ]


def _advisories(conn: Conn, ids: list[Any]) -> list[Row]:
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
    ) in conn.execute(query("read_advisories"), {"ids": ids}):
        fields = {
            "key": key,
            "from_version": from_v,
            "to_version": to_v,
            "severity": severity,
            "title": title,
            "description": description,
            "migration_guide": guide,
            "affects_modules": modules,
        }
        rows.append(Row("upgrade_advisory", (key,), id_, fields, managed, key))
    return rows


_READERS = {
    "project": _projects,
    "workflow": _workflows,
    "membership": _memberships,
    "tool": _tools,
    "upgrade_advisory": _advisories,
}


def read_users(conn: Conn) -> dict[str, str]:
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


def last_applied_commit(conn: Conn, ref: str | None, commit: str | None) -> str | None:
    """The commit of the branch's latest apply before this commit (what `paths` compare to)."""
    if ref is None or commit is None:
        return None
    row = conn.execute(query("last_applied_commit"), {"ref": ref, "commit": commit}).fetchone()
    return None if row is None else str(row[0])


def advisories(conn: Conn) -> list[Advisory]:
    return [
        advisory_of(
            {
                "key": key,
                "from_version": low,
                "to_version": high,
                "severity": severity,
                "title": title,
                "affects_modules": modules,
            }
        )
        for key, low, high, severity, title, modules in conn.execute(query("gate_advisories"))
    ]


def project_repositories(conn: Conn, slugs: list[str]) -> dict[str, str | None]:
    """The `repository` of projects in the database, by slug (None: the state repository)."""
    if not slugs:
        return {}
    return dict(conn.execute(query("project_repositories"), {"slugs": slugs}).fetchall())
