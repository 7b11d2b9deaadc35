"""`reconcile validate | plan | apply`: the pipeline from files to database, composed here.

files -> check -> desired state; database -> actual state; diff -> plan -> (write) -> render.
Plan and apply share the pipeline: a plan executes the writes and rolls them back (so the
database's own checks speak at plan time), an apply commits them.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from reconciler import checkout, files, gitrepo
from reconciler.commands import streamed
from reconciler.commands.chunked import Chunks, Outcome
from reconciler.commands.shared import Echo, InvalidFiles, Options, cache_dir, show
from reconciler.core import render
from reconciler.core.desired import ANY_BRANCH, DesiredState
from reconciler.core.plan import (
    Code,
    CodeHead,
    GitContext,
    Plan,
    Safety,
    code_heads_wanted,
    collect,
    plan_runs,
    refusal,
)
from reconciler.core.saved import SAVED_FORMAT, moved, saved
from reconciler.core.summary import RunEntry, code_repositories, combine, stale_groups
from reconciler.db import migrations, state
from reconciler.db.connection import apply_lock, connect, user_errors
from reconciler.db.target import open_target
from reconciler.db.writer import DatabaseRefused, Writer
from reconciler.errors import CheckoutError, ReconcilerError

HEAD_TIMEOUT_S = 20.0  # per `git ls-remote` of a project's code repository
HEAD_LOOKUPS = 8  # at once


class PlanChanged(ReconcilerError):
    """The database or the files changed between the plan shown and the apply."""


def plan(options: Options, out: Echo, save_to: Path | None = None, say: Echo = print) -> int:
    shown_only = save_to is None and options.output != "json"
    result = reconcile(options, commit=False, slim=shown_only)
    if save_to is not None:
        document = saved(render.as_dict(result), str(options.state_dir.resolve()), options.ref)
        try:
            save_to.write_text(json.dumps(document, indent=2, default=str) + "\n")
        except OSError as exc:
            raise ReconcilerError(f"cannot write the plan to {save_to}: {exc.strerror}") from None
        say(f"Saved the plan to {save_to}; apply it with `reconcile apply {save_to}`.")
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
        if not shown.changes_present:
            return 0
        if not confirm("Apply this plan?"):
            out("Nothing was applied.")
            return 0
        expected = render.as_dict(shown)
    shown_only = confirm is None and options.output != "json"
    result = reconcile(options, commit=True, expected=expected, slim=shown_only)
    if confirm is None:
        show(result, options, out)
    else:
        out(f"Applied. {render.summary_line(result)}")
    return 0


def reconcile(
    options: Options,
    *,
    commit: bool,
    expected: dict[str, Any] | None = None,
    slim: bool = False,
) -> Plan:
    """`slim`: the plan is only shown as text or Markdown (or recorded): its creates and
    deletes need not keep the rows' contents (commands/chunked.py)."""
    try:
        with files.without_cyclic_gc():
            return _reconcile(options, commit=commit, expected=expected, slim=slim)
    except InvalidFiles as invalid:
        raise InvalidFiles(invalid.problems, options.state_dir) from None


def _reconcile(
    options: Options, *, commit: bool, expected: dict[str, Any] | None, slim: bool
) -> Plan:
    """The pipeline. Only groups (projects, tools, advisories) whose summary differs from the
    database's are read and compared row by row (core/summary.py). Many files to parse are
    parsed while the new projects among them are planned and written (commands/streamed.py)."""
    scanned = _scan(options)
    early = _streams(options, scanned, commit=commit, expected=expected)
    fleet = None if early else _fleet(files.finish(scanned, options.progress), options)
    git = gitrepo.context(options.state_dir, options.ref)
    with (
        open_target(
            options.database_url,
            lock_timeout_s=options.lock_timeout_s,
            repository=options.state_dir,
        ) as target,
        connect(target.conninfo) as conn,
        user_errors("reconcile"),
    ):
        status = migrations.read_status(conn)
        migrations.require_current(status)
        conn.rollback()  # the status was read in a transaction of its own: the plan's is new
        with conn.transaction(force_rollback=not commit):
            if options.read_only and not commit:
                # a read-only login cannot lock: one consistent snapshot instead
                conn.execute("set transaction isolation level repeatable read, read only")
            else:
                apply_lock(conn, options.lock_timeout_s)
            groups = state.group_states(conn)
            chunks = Chunks(
                conn,
                files.LoadedFiles({}),
                create_users=status.auth == "compatible",
                write=not (options.read_only and not commit),
                slim=slim and expected is None,
                commit=commit,
                safety=options.safety,
            )
            planned_early: set[str] = set()
            if fleet is None:
                chunks, planned_early = streamed.stream(
                    chunks, scanned, set(groups), options.progress
                )
                fleet = _fleet(chunks.loaded, options)
            chunks.loaded = fleet.loaded
            stale = _in_scope(
                options.projects, stale_groups(fleet.wanted, groups), fleet.wanted, groups
            )
            if expected is not None:  # compared with the whole plan before anything is written
                chunks.size = max(1, len(stale))
            planned = _planned(chunks, stale - planned_early, fleet.loaded)
            git = _with_changes(conn, options.state_dir, git, fleet.run_entries)
            code = _with_database_projects(conn, fleet.code, set(fleet.defined), fleet.run_entries)
            result = _plan(conn, planned, git, (fleet.run_entries, code))
            result = dataclasses.replace(result, database=target.description)
            _refuse_if_moved(result, expected)
            if commit:
                kept = _kept(groups, stale, fleet.wanted, options.projects) + planned.kept
                _refuse_if_unsafe(result, kept, options.safety)
            if options.read_only and not commit:
                return result
            with _refusals():
                chunks.write_last()
            writer = Writer(conn, DesiredState({}), state.ActualState({}, {}))
            writer.enqueue(result)
            if commit and result.changes_present:
                writer.record(result, actor())
    return result


class _Fleet(NamedTuple):
    """What the plan needs of the files: them, their groups' sums, their push workflows, the
    projects they define (with their own code repositories) and those repositories' heads."""

    loaded: files.LoadedFiles
    wanted: dict[str, int]
    run_entries: list[RunEntry]
    defined: dict[str, str | None]
    code: Code


def _fleet(loaded: files.LoadedFiles, options: Options) -> _Fleet:
    wanted, run_entries = combine(f.summary for f in loaded.files.values())
    if options.projects:
        run_entries = [e for e in run_entries if e[0][0] in options.projects]
    defined = code_repositories(f.summary for f in loaded.files.values())
    return _Fleet(loaded, wanted, run_entries, defined, code_heads(defined, run_entries))


def _streams(
    options: Options, scanned: files.Scan, *, commit: bool, expected: dict[str, Any] | None
) -> bool:
    """Whether the files are parsed while the plan writes (streamed.py): many to parse, the
    plan's writes executed, all projects in scope, no plan shown before to compare with."""
    writes = commit or not options.read_only
    return scanned.parallel and writes and expected is None and not options.projects


def _planned(chunks: Chunks, stale: set[str], loaded: files.LoadedFiles) -> Outcome:
    """The changes of the stale groups (written as they are planned, but for the last chunk);
    every problem of the files refuses the plan."""
    with _refusals():
        planned = chunks.run(stale)
    found = collect(loaded.problems, planned.problems)
    if found:
        raise InvalidFiles(found)
    return planned


@contextmanager
def _refusals() -> Iterator[None]:
    """What the database refused, as a problem of the files (where the resource is written)."""
    try:
        yield
    except DatabaseRefused as refused:
        raise InvalidFiles([refused.problem]) from None


def _refuse_if_unsafe(result: Plan, kept: int, safety: Safety) -> None:
    """`kept`: managed rows that stay, which the files still ask for. A plan blocked by the
    upgrade gate, or one the safety options refuse, is not applied."""
    if result.blocked:
        raise InvalidFiles(list(result.blocked))
    if reason := refusal(result, kept, safety):
        raise ReconcilerError(f"{reason}; nothing was written")


def _scan(options: Options) -> files.Scan:
    cache = cache_dir() if options.use_cache else None
    return files.scan(options.state_dir, cache)


def _in_scope(
    projects: tuple[str, ...], stale: set[str], wanted: dict[str, int], groups: dict[str, Any]
) -> set[str]:
    """With --project, only those projects' groups are compared (and can be pruned)."""
    if not projects:
        return stale
    _require_known(projects, wanted, groups)
    return stale & set(projects)


def _kept(
    groups: dict[str, Any], stale: set[str], wanted: dict[str, int], projects: tuple[str, ...]
) -> int:
    """Managed rows of the groups not compared that stay: those the files ask for, and with
    --project those outside it (nothing there is pruned)."""
    return sum(
        g.managed
        for name, g in groups.items()
        if name not in stale and (name in wanted or (projects and name not in projects))
    )


def _require_known(
    projects: tuple[str, ...], wanted: dict[str, int], groups: dict[str, Any]
) -> None:
    unknown = sorted(p for p in set(projects) if p not in wanted and p not in groups)
    if unknown:
        raise ReconcilerError(
            f"--project {unknown[0]}: no such project in the files or in the database"
        )


def _plan(
    conn: state.Conn,
    planned: Outcome,
    git: GitContext,
    runs: tuple[list[RunEntry], Code],
) -> Plan:
    """The plan of the compared groups' changes (`planned`) and the runs the push makes.
    `runs`: the run entries of the files, and the projects' own code repositories."""
    run_entries, code = runs
    candidates = plan_runs(run_entries, git, set(), code)
    keys = [r.idempotency_key for r in candidates if r.idempotency_key]
    planned_runs = plan_runs(run_entries, git, state.existing_run_keys(conn, keys), code)
    return Plan(
        tuple(planned.changes),
        tuple(planned_runs),
        git.commit,
        git.ref,
        tuple(planned.new_users),
        advisories=tuple(planned.advisories),
        blocked=tuple(planned.blocked),
    )


def _with_changes(
    conn: state.Conn, state_dir: Path, git: GitContext, run_entries: list[RunEntry]
) -> GitContext:
    """What the push changed, read only when some push workflow filters on `paths`."""
    if not any(paths for _, _, paths in run_entries) or git.commit is None:
        return git
    since = state.last_applied_commit(conn, git.ref, git.commit)
    changed = gitrepo.changed_files(state_dir, since, git.commit)
    return dataclasses.replace(git, changed=changed, since=since)


def code_heads(repositories: dict[str, str | None], run_entries: list[RunEntry]) -> Code:
    """The heads of the branches that run workflows of projects with a code repository of
    their own, asked of their remotes at once (before the apply's lock is taken)."""
    own = {slug: url for slug, url in repositories.items() if url is not None}
    wanted = code_heads_wanted(run_entries, own)
    if not wanted:
        return Code(own)
    with ThreadPoolExecutor(min(len(wanted), HEAD_LOOKUPS)) as pool:
        heads = dict(zip(wanted, pool.map(_head, wanted), strict=True))
    return Code(own, heads)


def _head(wanted: tuple[str, str]) -> CodeHead:
    repository, runs_on = wanted
    branch = None if runs_on == ANY_BRANCH else runs_on
    try:
        return CodeHead(checkout.remote_head(repository, branch, timeout_s=HEAD_TIMEOUT_S))
    except CheckoutError as error:
        return CodeHead(None, str(error))


def _with_database_projects(
    conn: state.Conn, code: Code, defined: set[str], run_entries: list[RunEntry]
) -> Code:
    """A standalone Workflow may belong to a project only the database holds (not `defined`
    in the files): its code repository is the database's."""
    others = sorted({identity[0] for identity, _, _ in run_entries} - defined)
    found = {s: u for s, u in state.project_repositories(conn, others).items() if u is not None}
    if not found:
        return code
    extra = code_heads(dict(found), run_entries)
    return Code({**code.repositories, **found}, {**code.heads, **extra.heads})


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


# Where CI systems name who triggered the job, in order of preference.
CI_ACTOR_VARIABLES = (
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "BUILD_REQUESTEDFOR",
    "BUILDKITE_BUILD_CREATOR",
)


def actor() -> str | None:
    """Who runs this apply: the CI's actor, else the local login name."""
    for variable in CI_ACTOR_VARIABLES:
        if value := os.environ.get(variable):
            return value[:200]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None
