"""Per-project summaries, so a plan compares in full only the projects that may differ.

Every resource hashes to a number from its kind, identity and digest; a group (a project with
its workflows and memberships, or all tools, or all advisories) sums its resources' numbers.
The sum does not depend on order or on which file a resource is in, so each file's part is
computed once (and cached) and the parts add up. The database computes the same sums over its
managed rows in one query (`group_summaries`); only groups whose sums differ are read and
diffed row by row. The same hash is written in SQL there: keep the two in step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import NamedTuple

from reconciler.core.desired import Identity, Resource, Slot

Groups = dict[str, int]
# A push workflow: its identity, the branch whose pushes run it, its `paths` globs (or none).
RunEntry = tuple[Identity, str, tuple[str, ...]]


def group_of(slot: Slot) -> str:
    kind, identity = slot
    if kind in ("project", "workflow", "membership"):
        return identity[0]
    return f"@{kind}"


def row_hash(kind: str, identity: Identity, digest: str) -> int:
    """md5 of `kind|identity...|digest`, first 15 hex digits (60 bits), as in SQL."""
    text = "|".join((kind, *identity, digest))
    return int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:15], 16)


class FileSummary(NamedTuple):
    """What a plan needs of a file when nothing in it changed. Plain data, cheap to cache."""

    groups: tuple[tuple[str, int], ...]
    runs: tuple[RunEntry, ...]
    has_problems: bool
    code: tuple[tuple[str, str | None], ...] = ()  # each project's own code repository, or None


def summarize(resources: Iterable[Resource], has_problems: bool) -> FileSummary:
    groups: Groups = {}
    runs: list[RunEntry] = []
    code: list[tuple[str, str | None]] = []
    for resource in resources:
        group = group_of((resource.kind, resource.identity))
        digest = row_hash(resource.kind, resource.identity, resource.digest)
        groups[group] = groups.get(group, 0) + digest
        if resource.runs_on is not None:
            paths = tuple(resource.fields.get("paths", ()))
            runs.append((resource.identity, resource.runs_on, paths))
        if resource.kind == "project":
            code.append((resource.identity[0], resource.fields.get("repository")))
    return FileSummary(tuple(groups.items()), tuple(runs), has_problems, tuple(code))


def combine(summaries: Iterable[FileSummary]) -> tuple[Groups, list[RunEntry]]:
    groups: Groups = {}
    runs: list[RunEntry] = []
    for summary in summaries:
        for group, value in summary.groups:
            groups[group] = groups.get(group, 0) + value
        runs += summary.runs
    return groups, runs


def code_repositories(summaries: Iterable[FileSummary]) -> dict[str, str | None]:
    """The projects the files define, each with its own code repository or None."""
    return {slug: url for summary in summaries for slug, url in summary.code}


class GroupState(NamedTuple):
    """The database's side of a group: the sum over managed rows with a spec_hash, how many
    managed rows lack one without having been pruned, and how many managed rows it has."""

    total: int
    unsettled: int
    managed: int


def stale_groups(desired: Groups, actual: dict[str, GroupState]) -> set[str]:
    """The groups whose rows must be read and compared one by one."""
    stale = {
        g
        for g, total in desired.items()
        if (state := actual.get(g)) is None or state.total != total or state.unsettled
    }
    stale |= {
        g for g, state in actual.items() if g not in desired and (state.total or state.unsettled)
    }
    return stale
