"""Writes a plan's changes and runs, inside the caller's transaction, in dependency order.

Creates go through COPY; updates by id; deletes first, in reverse dependency order. Every
written row gets the files' digest as spec_hash. When the database refuses a batch, the batch
is replayed row by row to name the resource it refused.

A write is made in two steps: `prepare` makes every statement's rows and COPY text without
the database (new projects and users get their ids here, so their workflows and memberships
can refer to them before they are written), `execute` sends them. A plan in chunks prepares
the next chunk while the database takes this one, and each COPY then streams text already
made: the server never waits for this process in the middle of a statement.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
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
    return "".join([_copy_line(row) for row in rows])


def _copy_line(row: tuple[Any, ...]) -> str:
    """One row: its values written as they are (a string) or converted, then escaped only
    when the line shows that one needs it (a backslash but those of its nulls' \\N, a line
    break, or a tab more than the separators), which almost no line does."""
    line = "\t".join([value if type(value) is str else _unescaped(value) for value in row])
    if (
        line.count("\\") == row.count(None)
        and line.count("\t") == len(row) - 1
        and "\n" not in line
        and "\r" not in line
    ):
        return line + "\n"
    return "\t".join(map(_copy_field, row)) + "\n"


def _unescaped(value: Any) -> str:
    """A value that is not a string, as COPY's text reads it, before COPY's escaping."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dict):
        return _json(value)
    if isinstance(value, list):
        return "{" + ",".join([_array_item(v) for v in value]) + "}"
    return str(value)


def _copy_field(value: Any) -> str:
    if value is None:
        return "\\N"
    text = value if type(value) is str else _unescaped(value)
    return text.translate(_ESCAPE) if _SPECIAL.search(text) else text


def _json(value: dict[str, Any]) -> str:
    """Compact JSON, as json.dumps(ensure_ascii=False) writes it (orjson: 10 times faster),
    but for what only json writes (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _array_item(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_VARIANT = "89ab89ab89ab89ab"  # RFC 4122's variant: the two high bits of the 17th digit, 10


def new_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs, as gen_random_uuid() makes them: from the system's
    random source at once, many times faster than uuid.uuid4() one by one."""
    digits = os.urandom(16 * count).hex()
    return [
        f"{d[:8]}-{d[8:12]}-4{d[13:16]}-{_VARIANT[int(d[16], 16)]}{d[17:20]}-{d[20:32]}"
        for d in (digits[i : i + 32] for i in range(0, 32 * count, 32))
    ]


@dataclass
class Step:
    """One statement of a write, made ahead: a DELETE of `rows` (ids), a COPY of `rows` (its
    `text` formatted), or an UPDATE per row (`rows`: their parameters); `changes`: the changes
    the rows write, in the same order (to name a refused one)."""

    action: str  # "delete", "copy" or "update"
    name: str  # the query
    rows: list[Any]
    changes: list[Change] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


def _copy_batches(name: str, rows: list[tuple[Any, ...]]) -> list[str]:
    """The COPY text of these rows, _COPY_BATCH rows a piece. A membership's row is ids, a
    role and a digest: nothing to escape (an e-mail may hold a backslash)."""
    plain = name == "create_memberships"
    return [
        copy_text(rows[start : start + _COPY_BATCH], plain=plain)
        for start in range(0, len(rows), _COPY_BATCH)
    ]


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
        self.execute(self.prepare(changes, users))

    def prepare(self, changes: Sequence[Change], users: Iterable[str]) -> list[Step]:
        """The statements of `write_changes`, made without the database: the deletes, the
        users to create, then per kind its creates (COPY) and its updates. The users and
        projects created get their ids now (`user_ids` is shared: once prepared, a user is
        one the next chunks refer to; a prepared write that is not executed is the end of
        the writes: see commands/chunked.py)."""
        by_kind: dict[str, list[Change]] = {}
        for change in changes:
            by_kind.setdefault(change.kind, []).append(change)
        steps = []
        for kind in ("upgrade_advisory", "tool", "membership"):
            deleted = [c.row_id for c in by_kind.get(kind, []) if c.action == "delete"]
            if deleted:
                steps.append(Step("delete", _DELETES[kind], deleted))
        steps.append(self._users_step(tuple(e for e in users if f"new:{e}" not in self.user_ids)))
        for kind, (create, update) in _STEPS.items():
            of_kind = by_kind.get(kind, [])
            creates = [c for c in of_kind if c.action == "create"]
            if kind == "project":
                self._new_project_ids(creates)
            rows = [self._new_row(c) for c in creates]
            steps.append(Step("copy", create, rows, creates, _copy_batches(create, rows)))
            updates = [c for c in of_kind if c.action not in ("create", "delete")]
            steps.append(Step("update", update, [self._update_values(c) for c in updates], updates))
        return [step for step in steps if step.rows]

    def execute(self, steps: list[Step]) -> None:
        """Send the prepared statements, in their order."""
        for step in steps:
            if step.action == "delete":
                self.conn.execute(query(step.name), {"ids": step.rows})
            elif step.action == "copy":
                self._copy(step)
            else:
                self._update(step)

    def _users_step(self, emails: tuple[str, ...]) -> Step:
        ids = new_ids(len(emails))
        self.user_ids.update((f"new:{email}", id_) for email, id_ in zip(emails, ids, strict=True))
        rows = list(zip(ids, emails, strict=True))
        return Step("copy", "create_users", rows, [], _copy_batches("create_users", rows))

    def _new_project_ids(self, creates: list[Change]) -> None:
        for change, project_id in zip(creates, new_ids(len(creates)), strict=True):
            self.project_ids[change.identity[0]] = project_id

    def _new_row(self, change: Change) -> tuple[Any, ...]:
        """The COPY row of a created resource (the database makes its id, but a project's:
        its children refer to it in the same write)."""
        f, digest = change.after or {}, change.digest
        if change.kind in OPTIONAL_DEFAULTS:
            f = {**OPTIONAL_DEFAULTS[change.kind], **f}
        if change.kind == "project":
            return (
                self.project_ids[f["slug"]],
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

    def _copy(self, step: Step) -> None:
        try:
            self._copy_text(step.name, step.text)
        except REFUSALS as exc:
            for row, change in zip(step.rows, step.changes, strict=False):  # the refused one
                try:
                    self._copy_text(step.name, _copy_batches(step.name, [row]))
                except psycopg.Error as row_exc:
                    raise self._refused(change, row_exc) from None
            if step.changes:
                raise self._refused(step.changes[0], exc) from None
            raise

    def _copy_text(self, name: str, batches: list[str]) -> None:
        with (
            self.conn.transaction(),
            self.conn.cursor() as cursor,
            cursor.copy(query(name)) as copy,
        ):
            for batch in batches:
                copy.write(batch)

    def _update(self, step: Step) -> None:
        try:
            with self.conn.transaction(), self.conn.cursor() as cursor:
                cursor.executemany(query(step.name), step.rows)
        except REFUSALS:
            for change, value in zip(step.changes, step.rows, strict=True):
                try:
                    with self.conn.transaction():
                        self.conn.execute(query(step.name), value)
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
