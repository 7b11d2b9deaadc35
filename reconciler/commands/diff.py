"""`reconcile diff --base REF [--head REF]`: what a pull request changes, with no database.

The desired state at two git refs (the head defaults to the working tree), read from git's
object database without a checkout, compared like a plan compares files with rows: resources
by natural key, so moving a resource to another file or renaming a file is no change. Only the
groups (projects, tools, advisories) whose summaries differ are parsed and compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler import files, gitrepo
from reconciler.commands.shared import Echo, InvalidFiles, Options, cache_dir, show
from reconciler.core import pipelines
from reconciler.core.desired import DesiredState, assemble
from reconciler.core.plan import Indexed, Plan, Row, collect, diff
from reconciler.core.summary import combine


@dataclass(frozen=True)
class Refs:
    base: str
    head: str | None = None  # None: the working tree


def run(options: Options, refs: Refs, out: Echo) -> int:
    with files.without_cyclic_gc():
        return _run(options, refs, out)


def _run(options: Options, refs: Refs, out: Echo) -> int:
    base = _at_ref(options.state_dir, refs.base)
    head = _at_ref(options.state_dir, refs.head) if refs.head else _working_tree(options)
    base_groups, _ = combine(f.summary for f in base.files.values())
    head_groups, _ = combine(f.summary for f in head.files.values())
    changed = {
        g
        for g in base_groups.keys() | head_groups.keys()
        if base_groups.get(g) != head_groups.get(g)
    }
    wanted, problems = assemble(head.resources(changed), known_projects=set())
    found = collect(head.problems, problems, pipelines.check(wanted))
    if found:
        raise InvalidFiles(found, options.state_dir)
    before, _ = assemble(base.resources(changed), known_projects=set())
    index, rows = _as_rows(before)
    commit, branch = _head_commit(options.state_dir, refs.head)
    result = Plan(tuple(diff(wanted, index, rows)), (), commit, branch)
    return show(result, options, out, title="reconcile diff")


def _at_ref(state_dir: Path, ref: str) -> files.LoadedFiles:
    tree = gitrepo.GitTree(state_dir, ref)
    try:
        loaded = files.load_blobs(tree.blobs(), tree.read, cache_dir(), tree.root)
    finally:
        tree.close()
    refused = {relative: files.refused_file(relative, why) for relative, why in tree.refused}
    return files.LoadedFiles(dict(sorted({**loaded.files, **refused}.items())))


def _working_tree(options: Options) -> files.LoadedFiles:
    return files.load(options.state_dir, cache_dir() if options.use_cache else None)


def _as_rows(
    state: DesiredState,
) -> tuple[dict[tuple[str, tuple[str, ...]], Indexed], dict[tuple[str, tuple[str, ...]], Row]]:
    """The base side in the shape of database rows, all managed, so removals are prunes.
    Each carries its own digest as its spec_hash: files never drift (only rows can)."""
    index = {slot: Indexed(None, r.digest, True) for slot, r in state.resources.items()}
    rows = {
        slot: Row(r.kind, r.identity, None, r.fields, True, r.key)
        for slot, r in state.resources.items()
    }
    return index, rows


def _head_commit(state_dir: Path, head: str | None) -> tuple[str | None, str | None]:
    """The head's commit and the branch it names (HEAD or a sha: the checked-out branch, or
    the CI's variables on a detached checkout)."""
    if head is None:
        return None, None
    tree = gitrepo.GitTree(state_dir, head)
    try:
        return str(tree.commit.hexsha), tree.branch_name(head)
    finally:
        tree.close()
