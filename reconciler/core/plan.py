"""Desired state + actual rows -> the plan: changes per resource and the runs to enqueue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from reconciler.core import globs
from reconciler.core import problems as codes
from reconciler.core.desired import (
    ANY_BRANCH,
    KIND_ORDER,
    DesiredState,
    Identity,
    Resource,
    Slot,
    resource_key,
)
from reconciler.core.problems import Problem

ACTIONS = ("create", "update", "delete", "archive", "disable", "adopt")


@dataclass(frozen=True)
class Row:
    """A row of the database in the shape of a Resource, with its id and ownership."""

    kind: str
    identity: Identity
    id: Any
    fields: dict[str, Any]
    managed: bool
    label: str


class Change(NamedTuple):  # a tuple: a first apply makes 160,000 of them
    kind: str
    key: str
    action: str
    paths: tuple[str, ...]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    identity: Identity
    row_id: Any = None
    digest: str | None = None  # the files' digest, which the written row keeps as spec_hash
    drift: bool = False  # the row was changed outside reconcile; the update puts it back


@dataclass(frozen=True)
class GitContext:
    commit: str | None
    ref: str | None
    clean: bool
    reason: str | None = None  # why no run can be enqueued, when that is so
    repository: str | None = None  # where workers fetch the state repository (no credentials)
    # The files (repository paths) the push changed since `since`, the last applied commit of
    # the branch; None when that is unknown (the first apply of a branch): every path counts.
    changed: frozenset[str] | None = None
    since: str | None = None


@dataclass(frozen=True)
class CodeHead:
    """A code repository's branch head, asked of the remote when the plan is made."""

    commit: str | None
    reason: str | None = None  # why it could not be told


@dataclass(frozen=True)
class Code:
    """The projects whose code is in a repository of their own, and the heads of the
    branches their workflows run on: (URL, branch or ANY_BRANCH) -> head."""

    repositories: Mapping[str, str] = field(default_factory=dict)  # project slug -> URL
    heads: Mapping[tuple[str, str], CodeHead] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRequest:
    project: str
    workflow: str
    identity: Identity
    idempotency_key: str | None
    action: str  # enqueue | exists | skip
    reason: str | None = None
    commit: str | None = None  # the code's commit the run checks out
    ref: str | None = None
    repository: str | None = None  # where the worker fetches it
    own_repository: bool = False  # the project's own code repository, not the state one


@dataclass(frozen=True)
class Plan:
    changes: tuple[Change, ...]
    runs: tuple[RunRequest, ...]
    commit: str | None
    ref: str | None
    new_users: tuple[str, ...] = ()
    database: str | None = None  # which database was compared (None: a diff of two refs)
    advisories: tuple[dict[str, Any], ...] = ()  # on the way of the version changes it makes
    blocked: tuple[Problem, ...] = ()  # unacknowledged high/critical advisories: no apply

    @property
    def changes_present(self) -> bool:
        return bool(self.changes or self.new_users or self.enqueued)

    @property
    def enqueued(self) -> tuple[RunRequest, ...]:
        return tuple(r for r in self.runs if r.action == "enqueue")

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(ACTIONS, 0)
        for change in self.changes:
            counts[change.action] += 1
        counts["runs"] = len(self.enqueued)
        counts["drift"] = sum(1 for c in self.changes if c.drift)
        return counts

    def pruned(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("delete", "archive", "disable")]


class Indexed(NamedTuple):
    """What the cheap read of the database says of a row: enough to see it did not change."""

    id: Any
    spec_hash: str | None
    managed: bool


def needs_detail(desired: DesiredState, index: dict[Slot, Indexed]) -> list[Slot]:
    """The rows whose full content the diff needs: those that may differ, and the prunes."""
    slots = [
        slot
        for slot, want in desired.resources.items()
        if (row := index.get(slot)) is not None
        and (not row.managed or row.spec_hash != want.digest)
    ]
    slots += [s for s, row in index.items() if row.managed and s not in desired.resources]
    return slots


def diff(desired: DesiredState, index: dict[Slot, Indexed], rows: dict[Slot, Row]) -> list[Change]:
    """What to do per resource, in kind order then key order. Pure and deterministic.

    `index` has every row; `rows` the full content of those `needs_detail` named.
    """
    changes = []
    for slot, want in desired.resources.items():
        if slot not in index:
            changes.append(
                Change(
                    want.kind,
                    want.key,
                    "create",
                    (),
                    None,
                    _after(slot, want),
                    slot[1],
                    digest=want.digest,
                )
            )
        elif (row := rows.get(slot)) is not None and (
            change := _against(slot, want, row, drifted=_drifted(index[slot], row))
        ):
            changes.append(change)
    changes += [
        c
        for slot, row in rows.items()
        if row.managed and slot not in desired.resources and (c := _prune(row))
    ]
    return sorted(changes, key=lambda c: (KIND_ORDER.index(c.kind), c.key))


def _after(slot: Slot, want: Resource) -> dict[str, Any]:
    fields = want.fields
    if want.kind == "membership":
        fields = dict(fields)
        fields["user"] = slot[1][1]  # the resolved user id
    return fields


def _drifted(indexed: Indexed, row: Row) -> bool:
    """A managed row whose spec_hash was cleared: something other than reconcile changed it
    (the trigger of migration 0008). Rows reconcile pruned have none either, and are not."""
    pruned = row.fields.get("status") == "archived" or row.fields.get("enabled") is False
    return indexed.managed and indexed.spec_hash is None and not pruned


def _against(slot: Slot, want: Resource, row: Row, *, drifted: bool = False) -> Change | None:
    after = _after(slot, want)
    paths = tuple(changed_paths(row.fields, after))
    if not row.managed:
        return Change(
            want.kind, want.key, "adopt", paths, row.fields, after, slot[1], row.id, want.digest
        )
    if paths:
        return Change(
            want.kind,
            want.key,
            "update",
            paths,
            row.fields,
            after,
            slot[1],
            row.id,
            want.digest,
            drift=drifted,
        )
    return None


def _prune(row: Row) -> Change | None:
    """Removal keeps history: a project is archived, a workflow disabled, the rest deleted."""
    if row.kind == "project":
        if row.fields["status"] == "archived":
            return None
        after = {**row.fields, "status": "archived"}
        return Change(
            row.kind, row.label, "archive", ("status",), row.fields, after, row.identity, row.id
        )
    if row.kind == "workflow":
        if not row.fields["enabled"]:
            return None
        after = {**row.fields, "enabled": False}
        return Change(
            row.kind, row.label, "disable", ("enabled",), row.fields, after, row.identity, row.id
        )
    return Change(row.kind, row.label, "delete", (), row.fields, None, row.identity, row.id)


def changed_paths(before: Any, after: Any, prefix: str = "") -> list[str]:
    """Dotted paths where two values differ, descending into nested mappings."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in before or key not in after:
                paths.append(path)
            else:
                paths += changed_paths(before[key], after[key], path)
        return paths
    if before != after or type(before) is not type(after):
        return [prefix]
    return []


def plan_runs(
    entries: Iterable[tuple[Identity, str, tuple[str, ...]]],
    git: GitContext,
    existing_keys: set[str],
    code: Code | None = None,
) -> list[RunRequest]:
    """What becomes of each enabled `on: [push]` workflow: enqueued, already there, or skipped
    with the reason (another branch, no clean commit, `paths` not matched). A workflow runs for
    the state repository's commit when its git_ref is the ref applied, or for the project's own
    code repository (`code`) at the head of its git_ref (`paths` filter only state commits).
    `entries`: (workflow identity, its git_ref or ANY_BRANCH, its paths)."""
    code = code or Code()
    runs = []
    for identity, runs_on, paths in entries:
        if identity[0] in code.repositories:
            runs.append(_code_run(identity, runs_on, code, git, existing_keys))
        else:
            runs.append(_run((identity, runs_on, paths), git, existing_keys))
    return runs


def code_heads_wanted(
    entries: Iterable[tuple[Identity, str, tuple[str, ...]]], repositories: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The (URL, branch) pairs whose heads `plan_runs` needs, each once, sorted."""
    return sorted(
        {(repositories[i[0]], runs_on) for i, runs_on, _ in entries if i[0] in repositories}
    )


def idempotency_key(commit: str, workflow_key: str) -> str:
    """Derived from the commit and the workflow's identity: re-applying never enqueues twice."""
    return f"push:{commit}:{workflow_key}"


def _run(
    entry: tuple[Identity, str, tuple[str, ...]], git: GitContext, existing_keys: set[str]
) -> RunRequest:
    identity, runs_on, paths = entry
    workflow = resource_key("workflow", identity)
    if runs_on not in (ANY_BRANCH, git.ref):
        reason = f"runs on pushes to {runs_on}, this is {git.ref or 'no branch'}"
        return RunRequest(identity[0], workflow, identity, None, "skip", reason)
    if git.commit is None or not git.clean:
        return RunRequest(identity[0], workflow, identity, None, "skip", git.reason or "no commit")
    if paths and git.changed is not None and not globs.any_match(paths, git.changed):
        since = f" since {git.since[:12]}" if git.since else ""
        reason = f"paths: none of the {len(git.changed)} file(s) changed{since} matches"
        return RunRequest(identity[0], workflow, identity, None, "skip", reason)
    key = idempotency_key(git.commit, workflow)
    action = "exists" if key in existing_keys else "enqueue"
    return RunRequest(
        identity[0], workflow, identity, key, action, None, git.commit, git.ref, git.repository
    )


def _code_run(
    identity: Identity, runs_on: str, code: Code, git: GitContext, existing_keys: set[str]
) -> RunRequest:
    """Keyed by the code's commit: a new head of the code repository is one run, however
    many applies see it. The state files must be committed (they hold the steps)."""
    repository = code.repositories[identity[0]]
    head = code.heads.get((repository, runs_on), CodeHead(None, "its head was not resolved"))
    workflow = resource_key("workflow", identity)
    reason = (git.reason or "no commit") if git.commit is None or not git.clean else head.reason
    if head.commit is None or reason:
        return RunRequest(identity[0], workflow, identity, None, "skip", reason or "no commit")
    key = idempotency_key(head.commit, workflow)
    action = "exists" if key in existing_keys else "enqueue"
    ref = None if runs_on == ANY_BRANCH else runs_on
    return RunRequest(
        identity[0], workflow, identity, key, action, None, head.commit, ref, repository, True
    )


def resolve_members(
    desired: DesiredState, users: dict[str, str], *, create_missing: bool
) -> tuple[DesiredState, list[str], list[Problem]]:
    """Memberships name users by e-mail or uuid: key them by user id instead.

    Unknown users are problems, unless `create_missing` (the compatible auth schema of a plain
    PostgreSQL), where unknown e-mails become users to create (id `new:EMAIL` until then).
    """
    resolved = {s: r for s, r in desired.resources.items() if s[0] != "membership"}
    new_users: set[str] = set()
    found: list[Problem] = []
    for slot in [s for s in desired.resources if s[0] == "membership"]:
        resource = desired.resources[slot]
        project, written = slot[1]
        user_id = users.get(written)
        if user_id is None and create_missing and "@" in written:
            new_users.add(written)
            user_id = f"new:{written}"
        if user_id is None:
            found.append(
                Problem(
                    resource.ref("user"),
                    codes.UNKNOWN_USER,
                    f"membership {resource.key}: no user {written!r} in auth.users",
                )
            )
            continue
        first = resolved.setdefault(("membership", (project, user_id)), resource)
        if first is not resource:
            found.append(
                Problem(
                    resource.source,
                    codes.DUPLICATE_RESOURCE,
                    f"membership {resource.key} names the same user as "
                    f"{first.key} at {first.source}",
                )
            )
    return DesiredState(resolved), sorted(new_users), found


def collect(*groups: Iterable[Problem]) -> list[Problem]:
    return sorted(p for group in groups for p in group)


@dataclass(frozen=True)
class Safety:
    """What an apply may do without being asked twice."""

    adopt: bool = False
    max_prune: int | None = None
    allow_prune_all: bool = False


def refusal(plan: Plan, managed_kept: int, safety: Safety) -> str | None:
    """Why an apply must not go ahead, or None. Pure.

    `managed_kept`: how many managed rows the files still ask for; none left while something
    is pruned means the plan prunes everything reconcile manages.
    """
    adopted = [c.key for c in plan.changes if c.action == "adopt"]
    if adopted and not safety.adopt:
        shown = ", ".join(f"{c.kind} {c.key}" for c in plan.changes if c.action == "adopt")
        return (
            f"{len(adopted)} resource(s) exist in the database but are not managed by "
            f"reconcile: {_clip(shown)}; rerun with --adopt to take them over"
        )
    pruned = plan.pruned()
    if pruned and managed_kept == 0 and not safety.allow_prune_all:
        return (
            f"the plan would prune every managed resource ({len(pruned)}); if the files "
            "really are meant to be empty, rerun with --allow-prune-all"
        )
    if safety.max_prune is not None and len(pruned) > safety.max_prune:
        return (
            f"the plan would prune {len(pruned)} resources, more than --max-prune "
            f"{safety.max_prune}; raise the limit to go ahead"
        )
    return None


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
