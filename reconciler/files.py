"""The state directory on disk: every *.yaml/*.yml file, checked, with one parse cache.

The cache is keyed by content: an entry is (path relative to the state directory, git blob id
of the file's bytes), so it can never serve a stale parse, it serves a fresh checkout (a CI
runner that restored it), and `reconcile diff` finds a tree's blobs in it by the ids git
already knows, without reading them. An entry holds the file's summary (plain data, quick to
load) and its FileResult (pickled bytes, loaded only when the file's resources are needed),
and a strong digest of the bytes, checked whenever the bytes were hashed here.

A working tree's files are first looked up by (size, mtime, inode) in a small per-directory
index, so a plan over 10,000 unchanged files neither reads nor parses them. An index entry
whose file was modified within two seconds of its making is "racy" (as in git's index: the
file may have changed again within the clock's resolution) and is not trusted: the file is
read and looked up by content.

Many files to parse are parsed by a pool of processes, one per available core.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_data
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from reconciler import __version__
from reconciler.core import pipelines
from reconciler.core import problems as codes
from reconciler.core.desired import Resource, Slot, from_plain
from reconciler.core.problems import Problem, Source
from reconciler.core.summary import FileSummary, group_of, summarize
from reconciler.errors import ReconcilerError
from reconciler.ignore import IGNORE_FILE, Ignored
from reconciler.reading import Refused, StateReader

if TYPE_CHECKING:
    from reconciler.core.validate import FileResult

Progress = Callable[[int, int], None]
_RACY_NS = 2_000_000_000
PARALLEL_FROM = 400  # files to parse; fewer are parsed in this process (a fork costs ~20 ms)
PARTS_PER_WORKER = 16  # parts the files to parse are cut in: the first is at hand sooner
_KEPT_TREES = 8  # working trees whose stat index the cache keeps
StatKey = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns (no tool sets it back), inode


class LoadedFile:
    """One file: its summary at once, its resources and problems when asked for."""

    __slots__ = ("_across", "_blob", "_result", "summary")

    def __init__(
        self,
        summary: FileSummary,
        result: FileResult | None,
        blob: bytes | None,
        across: bytes | None = None,
    ) -> None:
        self.summary = summary
        self._result = result
        self._blob = blob
        self._across = across

    @property
    def result(self) -> FileResult:
        from reconciler.core.validate import FileResult  # noqa: PLC0415  (see _checked)

        if self._result is None:
            assert self._blob is not None, "the file's resources were released"
            plain, problems = pickle.loads(self._blob)  # noqa: S301  (the user's own cache)
            self._result = FileResult(tuple(map(from_plain, plain)), problems)
        return self._result

    def forget(self) -> None:
        """Drop the unpickled result when the pickled one is at hand (it is read again when
        asked for)."""
        if self._blob is not None:
            self._result = None

    def release(self) -> None:
        """Drop the result, pickled or not, of a file without problems whose resources were
        all used (a plan in chunks): a large fleet's parsed files are half of its memory.
        Its summary stays; its resources cannot be asked for again."""
        if not self.summary.has_problems:
            self._result = self._blob = None

    @property
    def blob(self) -> bytes:
        """The result, pickled: what the cache stores and a parsing process sends back."""
        if self._blob is None:
            assert self._result is not None
            plain = (tuple(map(tuple, self._result.resources)), self._result.problems)
            self._blob = pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)
        return self._blob

    @property
    def across(self) -> bytes:
        """What the checks across files need of it (an Across), pickled apart from the result:
        all they need when they find nothing, at a fifth of the result's cost."""
        if self._across is None:
            resources = self.result.resources
            found = (
                [(r.kind, r.identity) for r in resources],
                {r.identity[0] for r in resources if r.kind == "project"},
                {r.identity[0] for r in resources if r.kind in ("workflow", "membership")},
                pipelines.projects_with_needs(resources),
                pipelines.projects_with_paths(resources),
                [(r.identity[0], p) for r in resources for p in pipelines.triggers((r,))],
            )
            self._across = pickle.dumps(found, protocol=pickle.HIGHEST_PROTOCOL)
        return self._across


class Across(NamedTuple):
    """What the checks across files need of the files: the slot of every resource (in file
    order), the projects defined, the projects of the workflows and memberships, the projects
    with a workflow that needs another, those with a workflow that has `paths`, and the
    problems of each workflow's own triggers (pipelines.triggers, as if no project had a code
    repository of its own), each with its project."""

    slots: list[Slot]
    projects: set[str]
    referenced: set[str]
    needs: set[str]
    paths: set[str]
    triggers: list[tuple[str, Problem]]


@dataclass(frozen=True)
class LoadedFiles:
    files: dict[str, LoadedFile]  # by path relative to the state directory

    @property
    def problems(self) -> list[Problem]:
        with without_cyclic_gc():
            return sorted(
                p for f in self.files.values() if f.summary.has_problems for p in f.result.problems
            )

    def across(self) -> Across:
        """What the checks across files need of every file, without loading the resources."""
        found = Across([], set(), set(), set(), set(), [])
        with without_cyclic_gc():
            for f in self.files.values():
                slots, projects, referenced, needs, paths, triggers = pickle.loads(f.across)  # noqa: S301
                found.slots.extend(slots)
                found.projects.update(projects)
                found.referenced.update(referenced)
                found.needs.update(needs)
                found.paths.update(paths)
                found.triggers.extend(triggers)
        return found

    def resources(self, groups: set[str] | None = None) -> list[Resource]:
        """The resources of these groups (all when None), in file order."""
        with without_cyclic_gc():
            return self._resources(groups)

    def resources_of(self, paths: list[str], groups: set[str]) -> list[Resource]:
        """The resources of these groups in these files (in the order given), without keeping
        the files' unpickled results: a plan in chunks holds one chunk's resources at a time."""
        found = []
        with without_cyclic_gc():
            for path in paths:
                loaded = self.files[path]
                result = loaded.result
                found += [r for r in result.resources if group_of((r.kind, r.identity)) in groups]
                loaded.forget()
        return found

    def _resources(self, groups: set[str] | None) -> list[Resource]:
        found = []
        for loaded in self.files.values():
            if groups is None or any(g in groups for g, _ in loaded.summary.groups):
                found += [
                    r
                    for r in loaded.result.resources
                    if groups is None or group_of((r.kind, r.identity)) in groups
                ]
        return found


def state_files(root: Path) -> list[str]:
    """Every YAML file under root, relative to it, recursively, skipping hidden and ignored
    files and folders (reconciler/ignore.py), in a stable order. (Strings, not Paths: this
    runs over every file of the fleet on every plan.)"""
    ignored = _ignore_rules(root)
    found = []
    top = str(root)
    for folder, subfolders, files in os.walk(top):
        relative = os.path.relpath(folder, top)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        subfolders[:] = sorted(d for d in subfolders if not ignored.folder(prefix + d))
        found += [prefix + f for f in files if not ignored.file(prefix + f)]
        # a link to a folder is not followed; it is listed so that its files are not
        # silently missing (the reader refuses it with a problem on the link)
        found += [prefix + d for d in subfolders if os.path.islink(os.path.join(folder, d))]
    return sorted(found)


def _ignore_rules(root: Path) -> Ignored:
    """The state directory's .reconcileignore, read as safely as a state file (a regular file
    inside the directory, bounded); one that cannot be read is an error, not no rules."""
    path = root / IGNORE_FILE
    if not os.path.lexists(path):
        return Ignored()
    reader = StateReader(root)
    try:
        reader.stat(path)
        return Ignored.parse(reader.read(path).decode("utf-8", errors="replace"))
    except Refused as refused:
        raise ReconcilerError(f"{path}: {refused.problem(IGNORE_FILE).message}") from None
    except OSError as exc:
        raise ReconcilerError(f"{path}: cannot read it: {exc.strerror}") from None


def load(root: Path, cache_dir: Path | None, progress: Progress | None = None) -> LoadedFiles:
    """The files of a working tree: unchanged ones (same stat) from the cache's index, others
    from the cache by content, the rest parsed. `progress(done, total)` is told of each file
    (for a progress line on a terminal)."""
    return finish(scan(root, cache_dir), progress)


@dataclass
class Scan:
    """A working tree's files before parsing: those found (from the cache's index, or refused,
    or unreadable) and those to look up by content or parse (`pending`)."""

    loaded: dict[str, LoadedFile | None]
    pending: list[_Pending]
    store: _Store | None

    @property
    def parallel(self) -> bool:
        """Whether the files to parse (not in the cache by content either) are parsed by a
        pool of processes: this one is free meanwhile."""
        entries = self.store.entries if self.store else {}
        unknown = sum((p.relative, p.blob_id) not in entries for p in self.pending)
        return _in_pool(unknown)


def scan(root: Path, cache_dir: Path | None) -> Scan:
    """Every file of the tree read, or found unchanged in the cache's index (see `load`)."""
    store = _store(cache_dir) if cache_dir else None
    index = store.tree_index(root) if store else {}
    loaded: dict[str, LoadedFile | None] = {}
    pending: list[_Pending] = []
    top = str(root)
    reader = StateReader(root)
    for relative in state_files(root):
        loaded[relative] = None
        try:
            hit = _from_index(reader, os.path.join(top, relative), relative, store, index)
        except Refused as refused:
            loaded[relative] = refused_file(relative, refused)
            continue
        except OSError as exc:
            loaded[relative] = _unreadable(relative, exc)
            continue
        if isinstance(hit, LoadedFile):
            loaded[relative] = hit
        else:
            pending.append(hit)
    return Scan(loaded, pending, store)


def finish(
    scanned: Scan,
    progress: Progress | None = None,
    each: Callable[[str, LoadedFile], None] | None = None,
) -> LoadedFiles:
    """The scanned files, the pending ones looked up by content or parsed. `each(relative,
    file)` is told of every pending file as soon as it is at hand (in file order when
    parsed), while the pool parses the next ones (commands/streamed.py plans meanwhile)."""
    loaded = scanned.loaded
    total, done = len(loaded), len(loaded) - len(scanned.pending)
    for relative, parsed in _parse_all(scanned.pending, scanned.store):
        loaded[relative] = parsed
        if each:
            each(relative, parsed)
        done += 1
        if progress:
            progress(done, total)
    if scanned.store:
        scanned.store.save()
    return LoadedFiles({relative: f for relative, f in loaded.items() if f is not None})


def load_blobs(
    blobs: list[tuple[str, str]], read: Callable[[str], bytes], cache_dir: Path | None, repo: Path
) -> LoadedFiles:
    """The files of a git tree, as (relative path, blob id): the cache is keyed by blob ids,
    so a cached blob is trusted as it is and `read` (the blob's bytes) is called only for new
    ones. (`repo` is kept for callers; the cache is shared by every tree and working tree.)"""
    store = _store(cache_dir) if cache_dir else None
    loaded: dict[str, LoadedFile | None] = {}
    pending: list[_Pending] = []
    for relative, sha in blobs:
        loaded[relative] = store.get(relative, sha, None) if store else None
        if loaded[relative] is None:
            try:
                content = read(sha)
            except Refused as refused:  # too large: not read at all
                loaded[relative] = refused_file(relative, refused)
                continue
            pending.append(_Pending(relative, content, sha, None))
    for relative, parsed in _parse_all(pending, store):
        loaded[relative] = parsed
    if store:
        store.save()
    return LoadedFiles({relative: f for relative, f in loaded.items() if f is not None})


@dataclass(frozen=True)
class _Pending:
    """A file to look up by content or parse; `key`: its stat, for a working tree's index."""

    relative: str
    content: bytes
    blob_id: str
    key: StatKey | None


def _from_index(
    reader: StateReader,
    path: str,
    relative: str,
    store: _Store | None,
    index: dict[str, _IndexEntry],
) -> LoadedFile | _Pending:
    """The cached file if its stat is unchanged (and not racy), else the file's bytes (only
    what the reader accepts: reading.py)."""
    stat = reader.stat(path)
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    entry = index.get(relative)
    if store and entry and entry[0] == key and entry[2] - max(key[1], key[2]) > _RACY_NS:
        hit = store.get(relative, entry[1], None)
        if hit:
            store.index_keep(relative, entry)
            return hit
    content = reader.read(path)
    return _Pending(relative, content, blob_id(content), key)


def blob_id(content: bytes) -> str:
    """The id git gives these bytes as a blob (so a working tree and a commit share entries)."""
    digest = hashlib.sha1(b"blob %d\0" % len(content), usedforsecurity=False)
    digest.update(content)
    return digest.hexdigest()


def _parse_all(pending: list[_Pending], store: _Store | None) -> Iterator[tuple[str, LoadedFile]]:
    """Each pending file, from the cache by content or parsed (in a pool when many)."""
    todo = []
    for item in pending:
        strong = _digest(item.content)
        hit = store.get(item.relative, item.blob_id, strong) if store else None
        if hit is None:
            todo.append((item, strong))
            continue
        if store and item.key:
            store.index_put(item.relative, item.key, item.blob_id)
        yield item.relative, hit
    for (item, strong), parsed in zip(todo, _parsed([i for i, _ in todo]), strict=True):
        if store:
            store.put(item.relative, item.blob_id, strong, parsed)
            if item.key:
                store.index_put(item.relative, item.key, item.blob_id)
        yield item.relative, parsed


def _parsed(items: list[_Pending]) -> Iterator[LoadedFile]:
    if not _in_pool(len(items)):
        return _young_gc_only(_checked(item.relative, item.content) for item in items)
    import reconciler.core.validate  # noqa: F401, PLC0415  (loaded once, before forking)

    return _parsed_in_pool(items, _cores())


def _in_pool(count: int) -> bool:
    """Whether `count` files to parse are parsed by a pool of processes."""
    return count >= PARALLEL_FROM and _cores() >= 2


def _parsed_in_pool(items: list[_Pending], workers: int) -> Iterator[LoadedFile]:
    """Parsed by forked processes (which see `items` without it being sent); each sends back
    the summaries and pickled results, the cache's own form, which this process keeps. A
    process that dies (killed, out of memory) makes the rest be parsed here, never a hang."""
    global _FORKED_ITEMS  # noqa: PLW0603  (read by the forked children only)
    _FORKED_ITEMS = items
    size = max(1, len(items) // (workers * PARTS_PER_WORKER))
    chunks = [(start, min(start + size, len(items))) for start in range(0, len(items), size)]
    done = 0
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            for part in pool.map(_parse_chunk, chunks):
                yield from (LoadedFile(FileSummary(*s), None, b, a) for s, b, a in part)
                done += len(part)
    except BrokenProcessPool:
        yield from _young_gc_only(_checked(i.relative, i.content) for i in items[done:])
    finally:
        _FORKED_ITEMS = []


_FORKED_ITEMS: list[_Pending] = []
_OPEN: dict[Path, _Store] = {}  # the caches this process has read, by folder


def _parse_chunk(bounds: tuple[int, int]) -> list[tuple[tuple[Any, ...], bytes, bytes]]:
    items = _FORKED_ITEMS[bounds[0] : bounds[1]]
    parsed = _young_gc_only(_checked(i.relative, i.content) for i in items)
    return [(tuple(p.summary), p.blob, p.across) for p in parsed]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """For work that makes hundreds of thousands of lasting objects and no reference cycles
    that outlive it (unpickling results, a plan, its writes): the cyclic collector's passes
    over them freed nothing and took 80% of unpickling (0.6 s vs 2.9 s at 10,000 files) and a
    quarter of a first apply's time. Reference counting still frees everything else."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()  # else the first collection after this scans everything made here
            gc.enable()


def _young_gc_only(parsed: Iterator[LoadedFile]) -> Iterator[LoadedFile]:
    """Parsing makes millions of objects and a few reference cycles per file; the cyclic
    collector's full passes over the growing heap of kept results cost 20% of a parse and
    free nothing. Only the young generations are collected (every 16 files) meanwhile."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for count, loaded in enumerate(parsed, 1):
            if count % 16 == 0:
                gc.collect(1)
            yield loaded
    finally:
        if enabled:
            gc.enable()


def _checked(relative: str, content: bytes) -> LoadedFile:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(relative, content, exc)
    # the parser and the validators are loaded only when a file is parsed (not for a cache hit)
    from reconciler.core.validate import check_file  # noqa: PLC0415

    result = check_file(relative, text)
    return LoadedFile(summarize(result.resources, bool(result.problems)), result, None)


def refused_file(relative: str, refused: Refused) -> LoadedFile:
    """A file that is not read (a link out of the state directory, a FIFO, too large)."""
    from reconciler.core.validate import FileResult  # noqa: PLC0415

    problems = (refused.problem(relative),)
    return LoadedFile(summarize((), has_problems=True), FileResult((), problems), None)


def _not_utf8(relative: str, content: bytes, exc: UnicodeDecodeError) -> LoadedFile:
    from reconciler.core.validate import FileResult  # noqa: PLC0415

    before = content[: exc.start]
    line = before.count(b"\n") + 1
    col = exc.start - before.rfind(b"\n")
    message = f"cannot read the file: not UTF-8 (byte 0x{content[exc.start]:02x}); save it as UTF-8"
    problem = Problem(Source(relative, line, col), codes.UNREADABLE_FILE, message)
    return LoadedFile(summarize((), has_problems=True), FileResult((), (problem,)), None)


def _unreadable(relative: str, exc: Exception) -> LoadedFile:
    from reconciler.core.validate import FileResult  # noqa: PLC0415

    problem = Problem(Source(relative), codes.UNREADABLE_FILE, f"cannot read the file: {exc}")
    return LoadedFile(summarize((), has_problems=True), FileResult((), (problem,)), None)


def _path_digest(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def _digest(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=16).hexdigest()


@cache
def _version() -> str:
    """Cached results are valid only for the code and schemas that made them: the digest of
    the schemas, the pure core's modules and this one."""
    digest = hashlib.sha256(__version__.encode())
    for folder in (package_data.files("reconciler.schemas"), package_data.files("reconciler.core")):
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith((".json", ".py")):
                digest.update(entry.read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


# An entry, as plain tuples: (strong digest of the bytes, summary, pickled result, pickled
# Across), by
# (relative path, blob id); an index entry: (stat key, blob id, made at (ns)), by relative path.
_Entry = tuple[str, tuple[Any, ...], bytes, bytes]
_IndexEntry = tuple[StatKey, str, int]


def _store(folder: Path) -> _Store:
    """The parse cache in this folder, read once per process while its file stays as this
    process last read or wrote it (`diff` loads a tree, then the working tree)."""
    store = _OPEN.get(folder)
    if store is None or store.stamp != _stamp(store.path):
        store = _OPEN[folder] = _Store(folder)
    return store


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


class _Store:
    """The parse cache: one file, `parse-cache.pickle`, in the cache directory. Entries not
    used by this run are kept (the other side of a diff, the previous commit) until they
    outnumber the ones used; then they are dropped."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "parse-cache.pickle"
        self.stamp = _stamp(self.path)
        self.entries: dict[tuple[str, str], _Entry] = {}
        self.trees: dict[str, dict[str, _IndexEntry]] = {}
        self._read()
        self.used: set[tuple[str, str]] = set()
        self.index: dict[str, _IndexEntry] | None = None
        self.index_name = ""
        self.old_index: dict[str, _IndexEntry] = {}
        self.dirty = False

    def _read(self) -> None:
        """The entries, if the file was written by this very code; else nothing.
        The version is pickled on its own first, so another version's data never loads."""
        try:
            with self.path.open("rb") as handle:
                if pickle.load(handle) != _version():  # noqa: S301  (the user's own cache)
                    return
                self.entries, self.trees = pickle.load(handle)  # noqa: S301
        except Exception:  # a broken cache costs time, never the command
            self.entries, self.trees = {}, {}

    def tree_index(self, root: Path) -> dict[str, _IndexEntry]:
        """The stat index of a working tree, as last saved (this run's is rebuilt as it goes)."""
        self.index_name = _path_digest(root)
        self.old_index = self.trees.get(self.index_name, {})
        self.index = {}
        return self.old_index

    def index_keep(self, relative: str, entry: _IndexEntry) -> None:
        assert self.index is not None
        self.index[relative] = entry

    def index_put(self, relative: str, key: StatKey, blob: str) -> None:
        assert self.index is not None
        self.index[relative] = (key, blob, time.time_ns())
        self.dirty = True

    def get(self, relative: str, blob: str, strong: str | None) -> LoadedFile | None:
        """The entry for these bytes; `strong`: their digest, checked when known (a blob id
        from git's object database is trusted as it is)."""
        entry = self.entries.get((relative, blob))
        if entry is None or (strong is not None and entry[0] != strong):
            return None
        self.used.add((relative, blob))
        return LoadedFile(FileSummary(*entry[1]), None, entry[2], entry[3])

    def put(self, relative: str, blob: str, strong: str, loaded: LoadedFile) -> None:
        self.entries[(relative, blob)] = (strong, tuple(loaded.summary), loaded.blob, loaded.across)
        self.used.add((relative, blob))
        self.dirty = True

    def save(self) -> None:
        stale = len(self.entries) - len(self.used)
        if self.index is not None and self.index.keys() != self.old_index.keys():
            self.dirty = True
        if not self.dirty and stale <= len(self.used):
            return
        if stale > len(self.used):
            self.entries = {k: v for k, v in self.entries.items() if k in self.used}
        if self.index is not None:
            self.trees.pop(self.index_name, None)
            self.trees[self.index_name] = self.index
            self.trees = dict(list(self.trees.items())[-_KEPT_TREES:])
        self._write()

    def _write(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_suffix(f".tmp-{os.getpid()}")
            with staging.open("wb") as handle:
                pickle.dump(_version(), handle, protocol=pickle.HIGHEST_PROTOCOL)
                pickle.dump((self.entries, self.trees), handle, protocol=pickle.HIGHEST_PROTOCOL)
            staging.replace(self.path)
            self.stamp = _stamp(self.path)
            self.dirty = False
        except OSError:
            pass  # a cache that cannot be written only costs time
