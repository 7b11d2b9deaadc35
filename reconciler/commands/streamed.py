"""A cold plan's new projects planned, and written, while the pool still parses the files.

Parsing many files keeps the cores busy and the database idle; planning and writing them after
keeps the database busy and the cores mostly idle. Here each file is taken as soon as the pool
has parsed it (files.finish, in file order), and the projects the database does not have yet
are planned and written in chunks (Chunks.early) while the next files are parsed.

A project is planned early on the belief that the files seen so far hold all of it (the
project of the last file seen is held back: the next file may go on with it). That is checked
as every later file comes: when a later file holds more of a project planned early, or any
file has problems, or the database refused a chunk, or a chunk needed what only the whole
fleet tells (the upgrade gate), or would stop the writes, the early chunks are rolled back (a
savepoint) and the plan is made as without this module, from the files all parsed. So the plan,
its problems, refusals and writes are always those of the plan made after the parse.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from reconciler import files
from reconciler.commands.chunked import EDGE_FRACTION, Chunks
from reconciler.db.writer import DatabaseRefused


class _Unsound(Exception):
    """The early chunks do not stand: rolled back, the plan is made again over `loaded`."""

    def __init__(self, loaded: files.LoadedFiles) -> None:
        super().__init__()
        self.loaded = loaded


def stream(
    chunks: Chunks, scanned: files.Scan, in_database: set[str], progress: files.Progress | None
) -> tuple[Chunks, set[str]]:
    """The files parsed, with the new projects planned and written meanwhile: the chunks to go
    on with (over every file) and the projects already planned; `in_database`: the groups the
    database has (not planned early)."""
    early = _Early(chunks, in_database, {relative: n for n, relative in enumerate(scanned.loaded)})
    for relative, file in scanned.loaded.items():
        if file is not None:
            early.take(relative, file)
    try:
        with chunks.conn.transaction():  # a savepoint: the early chunks' writes
            with early.writer:
                loaded = files.finish(scanned, progress, early.take)
            if early.unsound or not chunks.early_kept():
                raise _Unsound(loaded)
    except _Unsound as unsound:
        return chunks.fresh(unsound.loaded), set()
    chunks.loaded = loaded
    return chunks, early.planned


class _Early:
    def __init__(self, chunks: Chunks, in_database: set[str], order: dict[str, int]) -> None:
        self.chunks = chunks
        self.in_database = in_database
        self.order = order  # every file's place in file order (a project's files are read so)
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="early-writer")
        self.seen: dict[str, files.LoadedFile] = {}
        self.where: dict[str, list[str]] = {}  # group: the files seen holding it
        self.ready: dict[str, None] = {}  # new projects whose files were all seen, not planned
        self.held: set[str] = set()  # the groups of the last file seen
        self.planned: set[str] = set()
        self.unsound = False
        self.next_size = max(1, chunks.size // EDGE_FRACTION)  # a short first chunk
        chunks.loaded = files.LoadedFiles(self.seen)

    def take(self, relative: str, file: files.LoadedFile) -> None:
        self.seen[relative] = file
        if self.unsound:
            return
        groups = {group for group, _ in file.summary.groups}
        if file.summary.has_problems or groups & self.planned:
            self.unsound = True
            return
        for group in groups:
            self.where.setdefault(group, []).append(relative)
        for group in self.held - groups:
            if not group.startswith("@") and group not in self.in_database:
                self.ready[group] = None
        self.held = groups
        if len(self.ready) >= self.next_size:
            self._plan()

    def _plan(self) -> None:
        groups = set(self.ready)
        self.ready = {}
        self.planned |= groups
        self.next_size = self.chunks.size
        paths = sorted({p for g in groups for p in self.where[g]}, key=self.order.__getitem__)
        try:
            self.chunks.early(groups, paths, self.writer)
        except DatabaseRefused:
            self.unsound = True
