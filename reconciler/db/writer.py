"""Writes a plan's changes and runs, inside the caller's transaction, in dependency order.

Creates go through COPY (with ids made here, so children can refer to new parents at once);
updates by id; deletes first, in reverse dependency order. Every written row gets the files'
digest as spec_hash. When the database refuses a batch, the batch is replayed row by row to
name the resource it refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from reconciler.core import problems as codes
from reconciler.core.desired import OPTIONAL_DEFAULTS, DesiredState
from reconciler.core.plan import Change, Plan, RunRequest
from reconciler.core.problems import Problem, Source
from reconciler.db.connection import first_line
from reconciler.db.queries import query
from reconciler.db.state import ActualState, workflow_ids
from reconciler.errors import ReconcilerError

Conn = psycopg.Connection[Any]
MANAGER = "ops-reconciler"
REFUSALS = (psycopg.errors.IntegrityError, psycopg.errors.DataError, psycopg.errors.RaiseException)
_DELETES = {
    "membership": "delete_memberships",
    "tool": "delete_tools",
    "upgrade_advisory": "delete_advisories",
}
_STEPS = {  # kind -> (COPY for creates, UPDATE by id)
    "project": ("create_projects", "update_project"),
    "workflow": ("create_workflows", "update_workflow"),
    "membership": ("create_memberships", "update_membership"),
    "tool": ("create_tools", "update_tool"),
    "upgrade_advisory": ("create_advisories", "update_advisory"),
}


RECORDED_CHANGES = 1000  # per apply record; larger applies keep their summary and the first
_COPY_BATCH = 5000
_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = re.compile(r"[\\\t\n\r]")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def copy_text(rows: list[tuple[Any, ...]], *, plain: bool = False) -> str:
    """Rows in COPY's text format. Faster than psycopg's per-row adaptation for the 160,000
    rows of a first apply; the types are the few the reconciler writes. `plain`: every value
    is a string that needs no escaping (ids, enums, digests), as in a membership row."""
    if plain:
        return "".join("\t".join(row) + "\n" for row in rows)
    return "".join("\t".join(map(_copy_field, row)) + "\n" for row in rows)


def _copy_field(value: Any) -> str:
    text: str
    if type(value) is str:  # the common case first: this runs for every field of every row
        text = value
    elif value is None:
        return "\\N"
    elif isinstance(value, bool):
        return "t" if value else "f"
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif isinstance(value, list):
        text = "{" + ",".join(_array_item(v) for v in value) + "}"
    else:
        text = str(value)
    return text.translate(_ESCAPE) if _SPECIAL.search(text) else text


def _array_item(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DatabaseRefused(ReconcilerError):
    """The database refused a change; `problem` names the resource and where it is written."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class Writer:
    def __init__(
        self,
        conn: Conn,
        desired: DesiredState,
        actual: ActualState,
        user_ids: dict[str, str] | None = None,
    ) -> None:
        """`user_ids`: the users created so far ("new:EMAIL" -> id), shared by the writers
        of a plan written in chunks (a user is created by the first chunk that needs it)."""
        self.conn = conn
        self.desired = desired
        self.project_ids = actual.project_ids()
        self.workflow_ids = actual.workflow_ids()
        self.user_ids: dict[str, str] = {} if user_ids is None else user_ids

    def write(self, plan: Plan) -> None:
        self.write_changes(plan.changes, plan.new_users)
        self.enqueue(plan)

    def write_changes(self, changes: Sequence[Change], users: Iterable[str]) -> None:
        """The changes (of one chunk of groups, or all), after creating the `users` (e-mails)
        not created yet."""
        by_kind: dict[str, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.kind, []).append(change)
        for kind in ("upgrade_advisory", "tool", "membership"):
            deleted = [c.row_id for c in by_kind.get(kind, []) if c.action == "delete"]
            if deleted:
                self.conn.execute(query(_DELETES[kind]), {"ids": deleted})
        self._create_users(tuple(e for e in users if f"new:{e}" not in self.user_ids))
        for kind, (create, update) in _STEPS.items():
            of_kind = by_kind.get(kind, [])
            creates = [c for c in of_kind if c.action == "create"]
            self._copy(create, [self._new_row(c) for c in creates], creates)
            if kind == "project" and creates:
                self._learn_project_ids([c.identity[0] for c in creates])
            self._update(update, [c for c in of_kind if c.action not in ("create", "delete")])

    def _create_users(self, emails: tuple[str, ...]) -> None:
        if not emails:
            return
        self._copy("create_users", [(email,) for email in emails], [])
        for user_id, email in self.conn.execute(query("user_ids"), {"emails": list(emails)}):
            self.user_ids[f"new:{email}"] = user_id

    def _learn_project_ids(self, slugs: list[str]) -> None:
        for slug, project_id in self.conn.execute(query("project_ids"), {"slugs": slugs}):
            self.project_ids[slug] = project_id

    def _new_row(self, change: Change) -> tuple[Any, ...]:
        """The COPY row of a created resource (the database makes its id)."""
        f, digest = change.after or {}, change.digest
        if change.kind in OPTIONAL_DEFAULTS:
            f = {**OPTIONAL_DEFAULTS[change.kind], **f}
        if change.kind == "project":
            return (
                f["slug"],
                f["workspace_key"],
                f["name"],
                f["description"],
                f["odoo_version"],
                f["status"],
                f["config"],
                f.get("repository"),
                MANAGER,
                digest,
                f["acknowledged_advisories"],
            )
        if change.kind == "workflow":
            return (
                self.project_ids[f["project"]],
                f["type"],
                f["name"],
                f["description"],
                f["enabled"],
                f["git_ref"],
                f["triggers"],
                f["config"],
                MANAGER,
                digest,
                f["needs"],
                f["concurrency"],
                f["schedule"],
                f["timezone"],
                f["paths"],
            )
        if change.kind == "membership":
            user = change.identity[1]
            return (
                self.project_ids[change.identity[0]],
                self.user_ids.get(user, user),
                f["role"],
                MANAGER,
                digest,
            )
        if change.kind == "tool":
            return (f["name"], f["version"], f["docker_image"], f["config"], MANAGER, digest)
        return (
            f["key"],
            f["from_version"],
            f["to_version"],
            f["severity"],
            f["title"],
            f["description"],
            f["migration_guide"],
            f["affects_modules"],
            MANAGER,
            digest,
        )

    def _update_values(self, change: Change) -> dict[str, Any]:
        values = {**OPTIONAL_DEFAULTS.get(change.kind, {}), **(change.after or {})}
        if change.kind == "project":
            values.setdefault("repository", None)  # written only when set (desired.py)
        if "config" in values:
            values["config"] = Jsonb(values["config"])
        return {
            **values,
            "id": change.row_id,
            "managed_by": MANAGER,
            "spec_hash": change.digest,
        }

    def enqueue(self, plan: Plan) -> None:
        enqueued = plan.enqueued
        if not enqueued:
            return
        missing = [r.identity for r in enqueued if r.identity not in self.workflow_ids]
        for identity, (workflow_id, project_id) in workflow_ids(self.conn, missing).items():
            self.workflow_ids[identity] = workflow_id
            self.project_ids.setdefault(identity[0], project_id)
        with self.conn.cursor() as cursor:
            try:  # a plain insert: the plan left out the keys that exist, so a conflict is news
                cursor.executemany(
                    query("enqueue_run"), [self._run_row(run, plan) for run in enqueued]
                )
            except psycopg.errors.UniqueViolation as exc:  # never a run dropped in silence
                raise ReconcilerError(
                    "a run this apply enqueues was enqueued by another transaction meanwhile "
                    f"({exc.diag.message_detail or first_line(exc)}); nothing was written; "
                    "make a new plan"
                ) from None
            cursor.executemany(
                query("set_workflow_commit"),
                [{"commit": run.commit, "id": self.workflow_ids[run.identity]} for run in enqueued],
            )

    def _run_row(self, run: RunRequest, plan: Plan) -> dict[str, Any]:
        metadata = {
            "commit": run.commit,
            "ref": run.ref,
            "trigger": "push",
            "workflow": run.workflow,
        }
        if run.own_repository:  # the state commit that enqueued it, for the record
            metadata |= {"state_commit": plan.commit, "state_ref": plan.ref}
        return {
            "project_id": self.project_ids[run.project],
            "workflow_id": self.workflow_ids[run.identity],
            "key": run.idempotency_key,
            "metadata": Jsonb(metadata),
            "repository": run.repository,
            "commit": run.commit,
        }

    def record(self, plan: Plan, actor: str | None = None) -> None:
        """Who (`actor`: the CI actor or the local user) and what was applied: the summary,
        and each change by kind, key, action and field paths
        (the values are in the rows themselves) up to RECORDED_CHANGES, and the runs."""
        changes = [
            {"kind": c.kind, "key": c.key, "action": c.action, "fields": list(c.paths)}
            for c in plan.changes[:RECORDED_CHANGES]
        ]
        runs = [
            {"workflow": r.workflow, "idempotency_key": r.idempotency_key}
            for r in plan.enqueued[:RECORDED_CHANGES]
        ]
        omitted = max(0, len(plan.changes) - RECORDED_CHANGES)
        self.conn.execute(
            query("record_apply"),
            {
                "commit": plan.commit,
                "ref": plan.ref,
                "actor": actor,
                "summary": Jsonb(plan.summary()),
                "plan": Jsonb(
                    {
                        "changes": changes,
                        "changes_omitted": omitted,
                        "runs": runs,
                        "users": list(plan.new_users),
                    },
                    dumps=_dumps,
                ),
            },
        )

    def _copy(self, name: str, rows: list[tuple[Any, ...]], changes: list[Change]) -> None:
        if not rows:
            return
        try:
            self._copy_rows(name, rows)
        except REFUSALS as exc:
            for row, change in zip(rows, changes, strict=False):  # find the refused one
                try:
                    self._copy_rows(name, [row])
                except psycopg.Error as row_exc:
                    raise self._refused(change, row_exc) from None
            if changes:
                raise self._refused(changes[0], exc) from None
            raise

    def _copy_rows(self, name: str, rows: list[tuple[Any, ...]]) -> None:
        plain = name == "create_memberships"  # ids, a role and a digest: nothing to escape
        with (
            self.conn.transaction(),
            self.conn.cursor() as cursor,
            cursor.copy(query(name)) as copy,
        ):
            for start in range(0, len(rows), _COPY_BATCH):
                copy.write(copy_text(rows[start : start + _COPY_BATCH], plain=plain))

    def _update(self, name: str, changes: list[Change]) -> None:
        if not changes:
            return
        values = [self._update_values(c) for c in changes]
        try:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                cursor.executemany(query(name), values)
        except REFUSALS:
            for change, value in zip(changes, values, strict=True):
                try:
                    with self.conn.transaction():
                        self.conn.execute(query(name), value)
                except psycopg.Error as exc:
                    raise self._refused(change, exc) from None

    def _refused(self, change: Change, exc: psycopg.Error) -> DatabaseRefused:
        resource = self.desired.resources.get((change.kind, change.identity))
        source = resource.source if resource else Source("<database>")
        detail = exc.diag.message_primary or str(exc)
        if exc.diag.message_detail:
            detail += f" ({exc.diag.message_detail})"
        return DatabaseRefused(
            Problem(
                source,
                codes.DATABASE_REFUSED,
                f"the database refused {change.kind} {change.key}: {detail}",
            )
        )
