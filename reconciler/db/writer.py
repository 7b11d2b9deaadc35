"""Writes a plan's changes and runs, inside the caller's transaction, in dependency order.

Creates go through COPY (with ids made here, so children can refer to new parents at once);
updates by id; deletes first, in reverse dependency order. When the database refuses a batch,
the batch is replayed row by row to name the resource it refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from reconciler.core import problems as codes
from reconciler.core.desired import DesiredState
from reconciler.core.plan import Change, Plan
from reconciler.core.problems import Problem, Source
from reconciler.db.queries import query
from reconciler.db.state import ActualState
from reconciler.errors import ReconcilerError

Conn = psycopg.Connection[Any]
MANAGER = "ops-reconciler"
_DELETES = {
    "membership": "delete_memberships",
    "tool": "delete_tools",
    "upgrade_advisory": "delete_advisories",
}


class DatabaseRefused(ReconcilerError):
    """The database refused a change; `problem` names the resource and where it is written."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class Writer:
    def __init__(self, conn: Conn, desired: DesiredState, actual: ActualState) -> None:
        self.conn = conn
        self.desired = desired
        self.project_ids = actual.project_ids()
        self.workflow_ids = actual.workflow_ids()
        self.user_ids: dict[str, str] = {}

    def write(self, plan: Plan) -> None:
        by_kind: dict[str, list[Change]] = {}
        for change in plan.changes:
            by_kind.setdefault(change.kind, []).append(change)
        for kind in ("upgrade_advisory", "tool", "membership"):
            deleted = [c.row_id for c in by_kind.get(kind, []) if c.action == "delete"]
            if deleted:
                self.conn.execute(query(_DELETES[kind]), {"ids": deleted})
        self._create_users(plan.new_users)
        for kind, step in (
            ("project", self._projects),
            ("workflow", self._workflows),
            ("membership", self._memberships),
            ("tool", self._tools),
            ("upgrade_advisory", self._advisories),
        ):
            changes = [c for c in by_kind.get(kind, []) if c.action != "delete"]
            if changes:
                step(changes)
        self._enqueue(plan)

    # -- per kind ------------------------------------------------------------------------

    def _create_users(self, emails: Iterable[str]) -> None:
        rows = []
        for email in emails:
            user_id = str(uuid.uuid4())
            self.user_ids[f"new:{email}"] = user_id
            rows.append((user_id, email))
        self._copy("create_users", rows, [])

    def _projects(self, changes: list[Change]) -> None:
        creates = [c for c in changes if c.action == "create"]
        rows = []
        for change in creates:
            f = change.after or {}
            new_id = uuid.uuid4()
            self.project_ids[f["slug"]] = new_id
            rows.append(
                (
                    new_id,
                    f["slug"],
                    f["workspace_key"],
                    f["name"],
                    f["description"],
                    f["odoo_version"],
                    f["status"],
                    Jsonb(f["config"]),
                    MANAGER,
                )
            )
        self._copy("create_projects", rows, creates)
        self._update(
            "update_project",
            [c for c in changes if c.action != "create"],
            lambda f: {**f, "config": Jsonb(f["config"])},
        )

    def _workflows(self, changes: list[Change]) -> None:
        creates = [c for c in changes if c.action == "create"]
        rows = []
        for change in creates:
            f = change.after or {}
            new_id = uuid.uuid4()
            self.workflow_ids[change.identity] = new_id
            rows.append(
                (
                    new_id,
                    self.project_ids[f["project"]],
                    f["type"],
                    f["name"],
                    f["description"],
                    f["enabled"],
                    f["git_ref"],
                    f["triggers"],
                    Jsonb(f["config"]),
                    MANAGER,
                )
            )
        self._copy("create_workflows", rows, creates)
        self._update(
            "update_workflow",
            [c for c in changes if c.action != "create"],
            lambda f: {**f, "config": Jsonb(f["config"])},
        )

    def _memberships(self, changes: list[Change]) -> None:
        creates = [c for c in changes if c.action == "create"]
        rows = [
            (
                uuid.uuid4(),
                self.project_ids[c.identity[0]],
                self.user_ids.get(c.identity[1], c.identity[1]),
                (c.after or {})["role"],
                MANAGER,
            )
            for c in creates
        ]
        self._copy("create_memberships", rows, creates)
        self._update("update_membership", [c for c in changes if c.action != "create"], lambda f: f)

    def _tools(self, changes: list[Change]) -> None:
        creates = [c for c in changes if c.action == "create"]
        rows = [
            (uuid.uuid4(), f["name"], f["version"], f["docker_image"], Jsonb(f["config"]), MANAGER)
            for f in (c.after or {} for c in creates)
        ]
        self._copy("create_tools", rows, creates)
        self._update(
            "update_tool",
            [c for c in changes if c.action != "create"],
            lambda f: {**f, "config": Jsonb(f["config"])},
        )

    def _advisories(self, changes: list[Change]) -> None:
        creates = [c for c in changes if c.action == "create"]
        rows = [
            (
                uuid.uuid4(),
                f["key"],
                f["from_version"],
                f["to_version"],
                f["severity"],
                f["title"],
                f["description"],
                f["migration_guide"],
                f["affects_modules"],
                MANAGER,
            )
            for f in (c.after or {} for c in creates)
        ]
        self._copy("create_advisories", rows, creates)
        self._update("update_advisory", [c for c in changes if c.action != "create"], lambda f: f)

    # -- runs -----------------------------------------------------------------------------

    def _enqueue(self, plan: Plan) -> None:
        enqueued = plan.enqueued
        if not enqueued:
            return
        with self.conn.cursor() as cursor:
            cursor.executemany(
                query("enqueue_run"),
                [
                    {
                        "project_id": self.project_ids[run.project],
                        "workflow_id": self.workflow_ids[run.identity],
                        "key": run.idempotency_key,
                        "metadata": Jsonb(
                            {
                                "commit": plan.commit,
                                "ref": plan.ref,
                                "trigger": "push",
                                "workflow": run.workflow,
                            }
                        ),
                    }
                    for run in enqueued
                ],
            )
            cursor.executemany(
                query("set_workflow_commit"),
                [
                    {"commit": plan.commit, "id": self.workflow_ids[run.identity]}
                    for run in enqueued
                ],
            )

    def record(self, plan: Plan, plan_json: dict[str, Any]) -> None:
        self.conn.execute(
            query("record_apply"),
            {
                "commit": plan.commit,
                "ref": plan.ref,
                "summary": Jsonb(plan.summary()),
                "plan": Jsonb(json.loads(json.dumps(plan_json, default=str))),
            },
        )

    # -- mechanics ------------------------------------------------------------------------

    def _copy(self, name: str, rows: list[tuple[Any, ...]], changes: list[Change]) -> None:
        if not rows:
            return
        try:
            with (
                self.conn.transaction(),
                self.conn.cursor() as cursor,
                cursor.copy(query(name)) as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        except (
            psycopg.errors.IntegrityError,
            psycopg.errors.DataError,
            psycopg.errors.RaiseException,
        ) as exc:
            self._blame(name, rows, changes, exc)

    def _blame(
        self, name: str, rows: list[tuple[Any, ...]], changes: list[Change], exc: psycopg.Error
    ) -> None:
        """Replay the batch one row at a time to name the resource the database refused."""
        for row, change in zip(rows, changes, strict=False):
            try:
                with (
                    self.conn.transaction(),
                    self.conn.cursor() as cursor,
                    cursor.copy(query(name)) as copy,
                ):
                    copy.write_row(row)
            except psycopg.Error as row_exc:
                raise self._refused(change, row_exc) from None
        raise self._refused(changes[0], exc) if changes else exc

    def _update(
        self, name: str, changes: list[Change], params: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        if not changes:
            return
        values = [
            {**params(dict(c.after or {})), "id": c.row_id, "managed_by": MANAGER} for c in changes
        ]
        try:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                cursor.executemany(query(name), values)
        except (
            psycopg.errors.IntegrityError,
            psycopg.errors.DataError,
            psycopg.errors.RaiseException,
        ):
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
