"""`reconcile validate | plan | apply`: the pipeline from files to database, composed here.

files -> check -> desired state; database -> actual state; diff -> plan -> (write) -> render.
Plan and apply share the pipeline: a plan executes the writes and rolls them back (so the
database's own checks speak at plan time), an apply commits them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import files, gitrepo
from reconciler.core import pipelines, render, upgrades
from reconciler.core.desired import DesiredState, assemble
from reconciler.core.plan import (
    Change,
    GitContext,
    Plan,
    Safety,
    collect,
    diff,
    needs_detail,
    plan_runs,
    refusal,
    resolve_members,
)
from reconciler.core.problems import Problem
from reconciler.core.saved import SAVED_FORMAT, moved, saved
from reconciler.core.summary import RunEntry, combine, stale_groups
from reconciler.db import migrations, state
from reconciler.db.connection import advisory_xact_lock, connect, lock_key, user_errors
from reconciler.db.target import open_target
from reconciler.db.writer import DatabaseRefused, Writer
from reconciler.errors import ReconcilerError

APPLY_LOCK_KEY = lock_key("ops-reconciler:apply")
Echo = Callable[[str], None]


class InvalidFiles(ReconcilerError):
    """The files have problems; nothing was written."""

    def __init__(self, problems: list[Problem], root: Path | None = None) -> None:
        super().__init__(f"{len(problems)} problem(s) in the files; nothing was written")
        self.problems = problems
        self.root = root  # the state directory the problems' files are relative to


class PlanChanged(ReconcilerError):
    """The database or the files changed between the plan shown and the apply."""


@dataclass(frozen=True)
class Options:
    state_dir: Path
    database_url: str | None = None
    lock_timeout_s: float = 30.0
    output: str = "text"
    detailed_exitcode: bool = False
    ref: str | None = None
    safety: Safety = field(default_factory=Safety)
    use_cache: bool = True
    colour: Callable[[str, str], str] = render.plain
    read_only: bool = False  # plan without executing the writes (a read-only database user)
    markdown_limit: int = render.MARKDOWN_LIMIT


def validate(options: Options, out: Echo) -> int:
    """Schema and cross-reference checks of the files alone."""
    loaded = _load(options)
    resources = loaded.resources()
    desired, problems = assemble(resources, known_projects=set())
    found = collect(loaded.problems, problems, pipelines.check(desired))
    if found:
        raise InvalidFiles(found, options.state_dir)
    out(f"{len(loaded.files)} file(s), {len(resources)} resource(s): valid")
    return 0


def plan(options: Options, out: Echo, save_to: Path | None = None) -> int:
    result = reconcile(options, commit=False)
    if save_to is not None:
        document = saved(render.as_dict(result), str(options.state_dir.resolve()), options.ref)
        save_to.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return show(result, options, out)


def apply_saved(options: Options, plan_file: Path, out: Echo) -> int:
    """Apply exactly the saved plan, or refuse it when anything moved since it was made."""
    try:
        document = json.loads(plan_file.read_text())
    except (OSError, ValueError):
        document = None
    if not isinstance(document, dict) or document.get("format") != SAVED_FORMAT:
        raise ReconcilerError(f"{plan_file} is not a plan saved by `reconcile plan --out`")
    options = dataclasses.replace(
        options, state_dir=Path(document["state_dir"]), ref=document["ref"]
    )
    result = reconcile(options, commit=True, expected=document["plan"])
    out(f"Applied {plan_file}. {render.summary_line(result)}")
    return 0


def apply(options: Options, out: Echo, confirm: Callable[[str], bool] | None) -> int:
    """Apply; `confirm` (None without a terminal and --yes) sees the plan before it is written."""
    expected = None
    if confirm is not None:
        shown = reconcile(options, commit=False)
        show(shown, options, out)
        if not shown.changes_present or not confirm("Apply this plan?"):
            return 0
        expected = render.as_dict(shown)
    result = reconcile(options, commit=True, expected=expected)
    if confirm is None:
        show(result, options, out)
    else:
        out(f"Applied. {render.summary_line(result)}")
    return 0


def show(result: Plan, options: Options, out: Echo, title: str = "reconcile plan") -> int:
    if options.output == "json":
        out(render.to_json(result))
    elif options.output == "markdown":
        out(render.to_markdown(result, options.markdown_limit, title))
    else:
        out(render.to_text(result, options.colour))
    return 2 if options.detailed_exitcode and result.changes_present else 0


def reconcile(options: Options, *, commit: bool, expected: dict[str, Any] | None = None) -> Plan:
    try:
        return _reconcile(options, commit=commit, expected=expected)
    except InvalidFiles as invalid:
        raise InvalidFiles(invalid.problems, options.state_dir) from None


def _reconcile(options: Options, *, commit: bool, expected: dict[str, Any] | None) -> Plan:
    """The pipeline. Only groups (projects, tools, advisories) whose summary differs from the
    database's are read and compared row by row (core/summary.py)."""
    loaded = _load(options)
    wanted, run_entries = combine(f.summary for f in loaded.files.values())
    git = gitrepo.context(options.state_dir, options.ref)
    with (
        open_target(options.database_url, lock_timeout_s=options.lock_timeout_s) as target,
        connect(target.conninfo) as conn,
        user_errors("reconcile"),
    ):
        status = migrations.read_status(conn)
        migrations.require_current(status)
        with conn.transaction(force_rollback=not commit):
            if options.read_only and not commit:
                conn.execute("set transaction read only")
            advisory_xact_lock(conn, APPLY_LOCK_KEY, options.lock_timeout_s)
            groups = state.group_states(conn)
            stale = stale_groups(wanted, groups)
            actual = state.read(conn, stale)
            desired = _desired(loaded, stale, actual, create_users=status.auth == "compatible")
            git = _with_changes(conn, options.state_dir, git, run_entries)
            result = _plan(conn, desired, actual, git, run_entries)
            _refuse_if_moved(result, expected)
            if commit and result.blocked:
                raise InvalidFiles(list(result.blocked))
            if commit:
                kept = sum(
                    g.managed for name, g in groups.items() if name not in stale and name in wanted
                )
                _refuse_if_unsafe(result, desired, actual, kept, options.safety)
            if options.read_only and not commit:
                return result
            writer = Writer(conn, desired, actual)
            try:
                writer.write(result)
            except DatabaseRefused as refused:
                raise InvalidFiles([refused.problem]) from None
            if commit and result.changes_present:
                writer.record(result)
    return result


def _load(options: Options) -> files.LoadedFiles:
    return files.load(options.state_dir, cache_dir() if options.use_cache else None)


def _desired(
    loaded: files.LoadedFiles, stale: set[str], actual: state.ActualState, *, create_users: bool
) -> DesiredState:
    """The desired resources of the stale groups; every problem of the files."""
    known = {identity[0] for kind, identity in actual.index if kind == "project"}
    desired, problems = assemble(loaded.resources(stale), known)
    desired, _, unknown = resolve_members(desired, actual.users, create_missing=create_users)
    found = collect(loaded.problems, problems, unknown, pipelines.check(desired))
    if found:
        raise InvalidFiles(found)
    return desired


def _plan(
    conn: state.Conn,
    desired: DesiredState,
    actual: state.ActualState,
    git: GitContext,
    run_entries: list[RunEntry],
) -> Plan:
    rows = state.read_rows(conn, actual, needs_detail(desired, actual.index))
    changes = diff(desired, actual.index, rows)
    new_users = sorted(
        {
            c.identity[1][4:]
            for c in changes
            if c.kind == "membership" and c.identity[1].startswith("new:")
        }
    )
    candidates = plan_runs(run_entries, git, set())
    keys = [r.idempotency_key for r in candidates if r.idempotency_key]
    runs = plan_runs(run_entries, git, state.existing_run_keys(conn, keys))
    shown, blocked = _upgrade_gate(conn, changes, desired)
    return Plan(
        tuple(changes),
        tuple(runs),
        git.commit,
        git.ref,
        tuple(new_users),
        advisories=tuple(shown),
        blocked=tuple(blocked),
    )


def _upgrade_gate(
    conn: state.Conn, changes: list[Change], desired: DesiredState
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The advisories on the way of the plan's version changes: the database's, as the files
    change them (the files win; deleted ones are gone)."""
    if not upgrades.upgrades(changes, desired):
        return [], []
    advisories = {a.key: a for a in state.advisories(conn)}
    for change in changes:
        if change.kind == "upgrade_advisory" and change.action == "delete":
            advisories.pop(change.key, None)
    for (kind, _), resource in desired.resources.items():
        if kind == "upgrade_advisory":
            advisories[resource.fields["key"]] = upgrades.advisory_of(resource.fields)
    return upgrades.gate(changes, desired, list(advisories.values()))


def _with_changes(
    conn: state.Conn, state_dir: Path, git: GitContext, run_entries: list[RunEntry]
) -> GitContext:
    """What the push changed, read only when some push workflow filters on `paths`."""
    if not any(paths for _, _, paths in run_entries) or git.commit is None:
        return git
    since = state.last_applied_commit(conn, git.ref, git.commit)
    changed = gitrepo.changed_files(state_dir, since, git.commit)
    return dataclasses.replace(git, changed=changed, since=since)


def _refuse_if_moved(result: Plan, expected: dict[str, Any] | None) -> None:
    if expected is None:
        return
    what = moved(expected, render.as_dict(result))
    if what:
        shown = ", ".join(what[:10]) + (f" and {len(what) - 10} more" if len(what) > 10 else "")
        raise PlanChanged(
            f"the plan is stale: the database or the files changed since it was made "
            f"({shown}); nothing was written: make a new plan"
        )


def _refuse_if_unsafe(
    result: Plan, desired: DesiredState, actual: state.ActualState, kept: int, safety: Safety
) -> None:
    """`kept`: managed rows of the groups that did not change, which the files still ask for."""
    kept += sum(
        1 for slot, row in actual.index.items() if row.managed and slot in desired.resources
    )
    if reason := refusal(result, kept, safety):
        raise ReconcilerError(f"{reason}; nothing was written")


def cache_dir() -> Path:
    if explicit := os.environ.get("RECONCILE_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ops-reconciler"
