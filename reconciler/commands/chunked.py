"""The plan (and its writes) of many groups, a chunk of projects at a time.

A first apply or a cold plan of 100,000 projects compares 1.6 million resources: held at once,
with their rows and changes, they take gigabytes. The stale groups are taken CHUNK_PROJECTS
projects at a time, in slug order: a chunk's resources are loaded from the parsed files, its
rows indexed in the database (the projects only the database has are chunks like the others,
so what is pruned is found as before), diffed, and written before the next chunk is loaded.
Each change is then kept without the row contents the output does not show (`slim`: a
create's fields, a delete's row), unless the caller needs the whole plan (JSON, a saved or a
confirmed plan). The global groups (tools, advisories) are planned first and written last.

Everything stays in the caller's one transaction, under its lock. The last chunk is written
only after the checks of the whole plan (problems, the upgrade gate, the apply's safety), so a
plan of one chunk behaves exactly as before; with more, a refusal found in a later chunk rolls
back the chunks written before it, and once a refusal is certain nothing more is written.
The plan's order (kind, then key) and its problems are those of a plan made at once.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reconciler import files
from reconciler.core import pipelines, upgrades
from reconciler.core.desired import KIND_ORDER, DesiredState, Slot, assemble
from reconciler.core.plan import Change, Safety, diff, needs_detail, resolve_members
from reconciler.core.problems import Problem
from reconciler.core.upgrades import Advisory
from reconciler.db import state
from reconciler.db.writer import Step, Writer

CHUNK_PROJECTS = 2000  # projects per chunk: ~32,000 resources, some 50 MiB while in hand
EDGE_FRACTION = 8  # the first and the last chunk of many hold size / EDGE_FRACTION projects
GateEntry = tuple[tuple[int, str], list[dict[str, Any]], list[Problem]]


def chunk_projects() -> int:
    """RECONCILE_CHUNK_PROJECTS overrides the chunk size (tests, tuning); at least 1."""
    try:
        return max(1, int(os.environ.get("RECONCILE_CHUNK_PROJECTS", CHUNK_PROJECTS)))
    except ValueError:
        return CHUNK_PROJECTS


@dataclass
class Chunk:
    desired: DesiredState
    actual: state.ActualState
    changes: list[Change]
    new_users: list[str]
    writes: Prepared | None = None  # its writes, made ahead (`_prepare`)


@dataclass
class Prepared:
    writer: Writer
    steps: list[Step]


@dataclass
class Outcome:
    """What the chunks make together: the plan's parts, in the order of a plan made at once."""

    changes: list[Change]
    new_users: list[str]
    problems: list[Problem]  # of the compared groups (the files' own ones are the caller's)
    advisories: list[dict[str, Any]]
    blocked: list[Problem]
    kept: int  # managed rows compared that the files still ask for


@dataclass
class Chunks:
    """Plans the stale groups chunk by chunk; `write`: each chunk's changes are executed
    (the plan's writes), all but the last at once and the last by `write_last`."""

    conn: state.Conn
    loaded: files.LoadedFiles
    create_users: bool
    write: bool
    slim: bool
    commit: bool
    safety: Safety
    size: int = field(default_factory=chunk_projects)
    stop_writing: bool = False  # a refusal is certain: nothing more is worth writing
    _by_kind: dict[str, list[Change]] = field(default_factory=dict)
    _new_users: set[str] = field(default_factory=set)
    _problems: list[Problem] = field(default_factory=list)
    _gate: list[GateEntry] = field(default_factory=list)
    _kept: int = 0
    _adopted: int = 0
    _pruned: int = 0
    _users: dict[str, str] | None = None
    _user_ids: dict[str, str] = field(default_factory=dict)
    _advisories: list[Advisory] | None = None
    _global: Chunk | None = None
    _last: Chunk | None = None
    _files_broken: bool = False  # the files have problems of their own: nothing is written
    _unused: list[int] = field(default_factory=list)  # per file: its stale groups not loaded
    _names: list[str] = field(default_factory=list)  # the files, in file order

    def run(self, stale: set[str]) -> Outcome:
        """Plan every chunk; write all but the last (see `write_last`)."""
        projects = sorted(g for g in stale if not g.startswith("@"))
        chunks = split(projects, self.size, first=self._last is None)
        where = files_of_groups(self.loaded, stale)
        self._unused = _unused_groups(where)
        self._names = list(self.loaded.files)
        self._files_broken = any(f.summary.has_problems for f in self.loaded.files.values())
        if any(g.startswith("@") for g in stale):
            self._global = self._plan({g for g in stale if g.startswith("@")}, where)
        if len(chunks) > 1 and self.write:
            self._advisory_list()  # read now: the chunks are then planned without the database
        with ThreadPoolExecutor(1, thread_name_prefix="chunk-writer") as writer:
            for groups in chunks:
                self._last = self._next(set(groups), where, writer)
        return self._finish()

    def _next(self, groups: set[str], where: dict[str, list[int]], writer: Executor) -> Chunk:
        """Plan this chunk while the previous one (`self._last`) is written: its rows are
        indexed first, the database then takes the previous chunk's writes while this
        process loads, checks, compares this chunk's resources and prepares its writes (the
        work of each overlaps the other's). Rows to compare in full are read after the
        writes (one statement at a time on the connection); a first apply reads none."""
        return self._overlapped(groups, _paths(self._names, groups, where), writer, where)

    def _overlapped(
        self,
        groups: set[str],
        paths: list[str],
        writer: Executor,
        where: dict[str, list[int]] | None,
    ) -> Chunk:
        """`_next`, over these files; `where` None: no file is released once planned."""
        actual = self._index(groups)
        previous, self._last = self._last, None
        written = writer.submit(self._write, previous) if previous else None
        try:
            desired, found = self._desired(groups, paths, actual, where)
            detail = needs_detail(desired, actual.index)
            if detail and written:
                written.result()
            chunk = self._changes(desired, actual, found, detail)
            if previous:
                self._keep(previous.changes)
        finally:
            if written:
                written.result()  # the refusals of the database are raised here
        return chunk

    def _finish(self) -> Outcome:
        for extra in (self._global, self._last):
            if extra is not None:
                self._keep(extra.changes, final=False)
        return self._outcome()

    def write_last(self) -> None:
        """The last chunk, then the global groups, after the whole plan's checks."""
        for chunk in (self._last, self._global):
            if chunk is not None:
                self._write(chunk)

    def _plan(self, groups: set[str], where: dict[str, list[int]]) -> Chunk:
        actual = self._index(groups)
        paths = _paths(self._names, groups, where)
        desired, found = self._desired(groups, paths, actual, where)
        return self._changes(desired, actual, found)

    def _index(self, groups: set[str]) -> state.ActualState:
        if self._users is None:
            self._users = state.read_users(self.conn)
        return state.read(self.conn, groups, self._users)

    def _desired(
        self,
        groups: set[str],
        paths: list[str],
        actual: state.ActualState,
        where: dict[str, list[int]] | None,
    ) -> tuple[DesiredState, list[Problem]]:
        """The chunk's resources, users resolved, and their problems (no database: this runs
        while the previous chunk is written); the files done with are released, unless
        `where` is None."""
        known = {identity[0] for kind, identity in actual.index if kind == "project"}
        desired, problems = assemble(self.loaded.resources_of(paths, groups), known)
        if where is not None:
            _release_done(self.loaded, self._names, groups, where, self._unused)
        desired, _, unknown = resolve_members(
            desired, actual.users, create_missing=self.create_users
        )
        return desired, [*problems, *unknown, *pipelines.check(desired)]

    def early(self, groups: set[str], paths: list[str], writer: Executor) -> None:
        """Plan these projects, in these files, while the files after them are still parsed
        (commands/streamed.py); as `_next`, the previous chunk is written meanwhile. Nothing
        is released: the plan may have to be made again without these early chunks."""
        self._last = self._overlapped(groups, paths, writer, None)

    def early_kept(self) -> bool:
        """Whether the early chunks stand as planned: nothing refused or gated among them (a
        gate needs the global groups, planned only once every file is parsed)."""
        return not (self.stop_writing or self._gate or self._advisories is not None)

    def fresh(self, loaded: files.LoadedFiles) -> Chunks:
        """A new plan of the same options, over these files, with nothing planned yet."""
        return Chunks(
            self.conn,
            loaded,
            create_users=self.create_users,
            write=self.write,
            slim=self.slim,
            commit=self.commit,
            safety=self.safety,
            size=self.size,
        )

    def _changes(
        self,
        desired: DesiredState,
        actual: state.ActualState,
        found: list[Problem],
        detail: list[Slot] | None = None,
    ) -> Chunk:
        """`detail`: the slots whose rows the diff needs (read here, none: no database; by
        default those `needs_detail` names)."""
        self._problems += found
        if detail is None:
            detail = needs_detail(desired, actual.index)
        rows = state.read_rows(self.conn, actual, detail)
        changes = diff(desired, actual.index, rows)
        new_users = sorted(
            {
                c.identity[1][4:]
                for c in changes
                if c.kind == "membership" and c.identity[1].startswith("new:")
            }
        )
        self._new_users.update(new_users)
        self._kept += sum(
            1 for slot, row in actual.index.items() if row.managed and slot in desired.resources
        )
        self._adopted += sum(1 for c in changes if c.action == "adopt")
        self._pruned += sum(1 for c in changes if c.action in ("delete", "archive", "disable"))
        blocked = self._gate_of(changes, desired)
        if found or (self.commit and (blocked or self._refusal_certain())):
            self.stop_writing = True
        chunk = Chunk(desired, actual, changes, new_users)
        chunk.writes = self._prepare(chunk)
        return chunk

    def _refusal_certain(self) -> bool:
        """What `refusal` would refuse whatever the later chunks hold (an adoption without
        --adopt, more prunes than --max-prune; not a prune of everything: that is only known
        at the end)."""
        if self._adopted and not self.safety.adopt:
            return True
        return self.safety.max_prune is not None and self._pruned > self.safety.max_prune

    def _writing(self) -> bool:
        """Whether writes are still made. Once not, never again in this plan: a chunk whose
        writes were prepared (its new users given ids that later chunks refer to) but not
        executed is followed by none that is."""
        return self.write and not self.stop_writing and not self._files_broken

    def _prepare(self, chunk: Chunk) -> Prepared | None:
        """The chunk's statements, made now (while the previous chunk is written)."""
        if not self._writing():
            return None
        writer = Writer(self.conn, chunk.desired, chunk.actual, self._user_ids)
        return Prepared(writer, writer.prepare(chunk.changes, chunk.new_users))

    def _write(self, chunk: Chunk) -> None:
        writes, chunk.writes = chunk.writes, None  # its text is not kept once sent
        if writes is not None and self._writing():
            writes.writer.execute(writes.steps)

    def _keep(self, changes: list[Change], *, final: bool = True) -> None:
        for change in changes:
            kept = slim(change) if self.slim and final else change
            self._by_kind.setdefault(change.kind, []).append(kept)

    def _gate_of(self, changes: list[Change], desired: DesiredState) -> bool:
        """The upgrade gate of this chunk's version changes, each kept with its change's
        place in the plan's order; whether it blocks."""
        if not upgrades.upgrades(changes, desired):
            return False
        blocks = False
        for change in changes:
            if not upgrades.upgrades([change], desired):
                continue
            shown, refused = upgrades.gate([change], desired, self._advisory_list())
            self._gate.append(((KIND_ORDER.index(change.kind), change.key), shown, refused))
            blocks = blocks or bool(refused)
        return blocks

    def _advisory_list(self) -> list[Advisory]:
        """The database's advisories as the files change them (the files win; deleted ones
        are gone). The global groups are planned first, so their changes are known here."""
        if self._advisories is None:
            found = {a.key: a for a in state.advisories(self.conn)}
            if self._global is not None:
                for change in self._global.changes:
                    if change.kind == "upgrade_advisory" and change.action == "delete":
                        found.pop(change.key, None)
                for (kind, _), resource in self._global.desired.resources.items():
                    if kind == "upgrade_advisory":
                        found[resource.fields["key"]] = upgrades.advisory_of(resource.fields)
            self._advisories = list(found.values())
        return self._advisories

    def _outcome(self) -> Outcome:
        changes: list[Change] = []
        for kind in KIND_ORDER:
            of_kind = self._by_kind.get(kind, [])
            of_kind.sort(key=_key)  # stable: sorted runs (the chunks) merge quickly
            changes += of_kind
        self._by_kind = {}
        self._gate.sort(key=lambda entry: entry[0])
        return Outcome(
            changes,
            sorted(self._new_users),
            self._problems,
            [shown for _, entries, _ in self._gate for shown in entries],
            [problem for _, _, refused in self._gate for problem in refused],
            self._kept,
        )


def split(projects: list[str], size: int, *, first: bool = True) -> list[list[str]]:
    """Chunks of at most `size` projects, in order; with more than one, the first and the last
    are short (size / EDGE_FRACTION): the database has nothing to write until the first chunk
    is planned, and the last is written alone, after the whole plan's checks (`write_last`),
    so the shorter those two are, the more of the writing overlaps the planning. Not `first`
    (chunks were planned before these: streamed.py), only the last is short, however few."""
    edge = max(1, size // EDGE_FRACTION)
    if len(projects) <= (size if first else edge):
        return [projects] if projects else []
    start = edge if first else 0
    head = [projects[:start]] if start else []
    middle, tail = projects[start:-edge], projects[-edge:]
    return [*head, *(middle[i : i + size] for i in range(0, len(middle), size)), tail]


def files_of_groups(loaded: files.LoadedFiles, groups: set[str]) -> dict[str, list[int]]:
    """The files (by their place in file order) that hold resources of each of these groups."""
    where: dict[str, list[int]] = {}
    for number, file in enumerate(loaded.files.values()):
        for group, _ in file.summary.groups:
            if group in groups:
                where.setdefault(group, []).append(number)
    return where


def _paths(names: list[str], groups: set[str], where: dict[str, list[int]]) -> list[str]:
    """The files holding resources of these groups, in file order (`names`)."""
    return [names[n] for n in sorted({n for g in groups for n in where.get(g, ())})]


def _unused_groups(where: dict[str, list[int]]) -> list[int]:
    """Per file (by place), how many of the groups to load it holds resources of."""
    counts: dict[int, int] = {}
    for numbers in where.values():
        for number in numbers:
            counts[number] = counts.get(number, 0) + 1
    return [counts.get(n, 0) for n in range(max(counts, default=-1) + 1)]


def _release_done(
    loaded: files.LoadedFiles,
    names: list[str],
    groups: set[str],
    where: dict[str, list[int]],
    unused: list[int],
) -> None:
    """Release the parsed files whose every group has now been loaded: no later chunk reads
    them again, and a fleet's parsed files are as large as its plan."""
    for group in groups:
        for number in where.get(group, ()):
            unused[number] -= 1
            if unused[number] == 0:
                loaded.files[names[number]].release()
    _give_back_freed_memory()


def _give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's malloc_trim): the released files'
    pickled results were allocated there, between objects that stay, so the heap would keep
    them as the process's memory, not reused by Python's own allocator."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc
        return None


_LIBC = _libc()


def _key(change: Change) -> str:
    return change.key


def slim(change: Change) -> Change:
    """The change as the text and Markdown outputs and the apply record show it: a change
    without changed paths (a create, a delete) keeps its kind, key and action only."""
    if change.paths:
        return change
    return Change(change.kind, change.key, change.action, (), None, None, (), drift=change.drift)
