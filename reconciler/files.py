"""The state directory on disk: every *.yaml/*.yml file, checked, with a per-file cache.

The cache maps a file (path, size, mtime, inode) to its summary (plain data, quick to load) and
its FileResult (pickled bytes, loaded only when the file's resources are needed), so a plan
over 10,000 unchanged files neither parses nor validates them again. An entry whose file was
modified within two seconds of the entry's making is "racy" (as in git's index: the file may
have changed again within the clock's resolution) and is trusted only if its content hash
still matches.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources as package_data
from pathlib import Path
from typing import Any

from reconciler import __version__
from reconciler.core import problems as codes
from reconciler.core.desired import Resource, from_plain
from reconciler.core.problems import Problem, Source
from reconciler.core.summary import FileSummary, group_of, summarize
from reconciler.core.validate import FileResult, check_file
from reconciler.reading import Refused, StateReader

_SUFFIXES = (".yaml", ".yml")
_RACY_NS = 2_000_000_000
CacheKey = tuple[int, int, int]


class LoadedFile:
    """One file: its summary at once, its resources and problems when asked for."""

    __slots__ = ("_blob", "_result", "summary")

    def __init__(self, summary: FileSummary, result: FileResult | None, blob: bytes | None):
        self.summary = summary
        self._result = result
        self._blob = blob

    @property
    def result(self) -> FileResult:
        if self._result is None:
            assert self._blob is not None
            plain, problems = pickle.loads(self._blob)  # noqa: S301  (the user's own cache)
            self._result = FileResult(tuple(map(from_plain, plain)), problems)
        return self._result


@dataclass(frozen=True)
class LoadedFiles:
    files: dict[str, LoadedFile]  # by path relative to the state directory

    @property
    def problems(self) -> list[Problem]:
        return sorted(
            p for f in self.files.values() if f.summary.has_problems for p in f.result.problems
        )

    def resources(self, groups: set[str] | None = None) -> list[Resource]:
        """The resources of these groups (all when None), in file order."""
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
    """Every YAML file under root, relative to it, recursively, skipping hidden folders, in a
    stable order. (Strings, not Paths: this runs over every file of the fleet on every plan.)"""
    found = []
    top = str(root)
    for folder, subfolders, files in os.walk(top):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        relative = os.path.relpath(folder, top)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        found += [prefix + f for f in files if f.endswith(_SUFFIXES)]
        # a link to a folder is not followed; it is listed so that its files are not
        # silently missing (the reader refuses it with a problem on the link)
        found += [prefix + d for d in subfolders if os.path.islink(os.path.join(folder, d))]
    return sorted(found)


def load(root: Path, cache_dir: Path | None) -> LoadedFiles:
    """The files of a working tree; unchanged ones (same stat) come from the cache."""
    cache = _Cache(cache_dir, f"files-{_path_digest(root)}") if cache_dir else None
    reader = StateReader(root)
    loaded = {
        relative: _load_one(reader, root / relative, relative, cache)
        for relative in state_files(root)
    }
    if cache:
        cache.save()
    return LoadedFiles(loaded)


def load_blobs(
    blobs: list[tuple[str, str]], read: Callable[[str], bytes], cache_dir: Path | None, repo: Path
) -> LoadedFiles:
    """The files of a git tree, as (relative path, blob sha): content-addressed, so a cached
    blob is trusted as it is and `read` (the blob's bytes) is called only for new ones."""
    cache = _Cache(cache_dir, f"blobs-{_path_digest(repo)}") if cache_dir else None
    loaded = {}
    for relative, sha in blobs:
        name = f"{relative}@{sha}"
        hit = cache.get(name, (0, 0, 0), None) if cache else None
        loaded[relative] = hit or _checked_blob(relative, sha, read)
        if cache and hit is None:
            cache.put(name, (0, 0, 0), sha, loaded[relative])
    if cache:
        cache.save()
    return LoadedFiles(loaded)


def _load_one(reader: StateReader, path: Path, relative: str, cache: _Cache | None) -> LoadedFile:
    try:
        stat = reader.stat(path)
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if cache and (hit := cache.get(relative, key, path)):
            return hit
        content = reader.read(path)
    except Refused as refused:
        return refused_file(relative, refused)
    except OSError as exc:
        return _unreadable(relative, exc)
    loaded = _checked(relative, content)
    if cache:
        cache.put(relative, key, _digest(content), loaded)
    return loaded


def _checked_blob(relative: str, sha: str, read: Callable[[str], bytes]) -> LoadedFile:
    try:
        content = read(sha)
    except Refused as refused:  # too large: not read at all
        return refused_file(relative, refused)
    return _checked(relative, content)


def _checked(relative: str, content: bytes) -> LoadedFile:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _not_utf8(relative, content, exc)
    result = check_file(relative, text)
    return LoadedFile(summarize(result.resources, bool(result.problems)), result, None)


def refused_file(relative: str, refused: Refused) -> LoadedFile:
    """A file that is not read (a link out of the state directory, a FIFO, too large)."""
    problems = (refused.problem(relative),)
    return LoadedFile(summarize((), has_problems=True), FileResult((), problems), None)


def _not_utf8(relative: str, content: bytes, exc: UnicodeDecodeError) -> LoadedFile:
    before = content[: exc.start]
    line = before.count(b"\n") + 1
    col = exc.start - before.rfind(b"\n")
    message = f"cannot read the file: not UTF-8 (byte 0x{content[exc.start]:02x}); save it as UTF-8"
    problem = Problem(Source(relative, line, col), codes.UNREADABLE_FILE, message)
    return LoadedFile(summarize((), has_problems=True), FileResult((), (problem,)), None)


def _unreadable(relative: str, exc: Exception) -> LoadedFile:
    problem = Problem(Source(relative), codes.UNREADABLE_FILE, f"cannot read the file: {exc}")
    return LoadedFile(summarize((), has_problems=True), FileResult((), (problem,)), None)


def _path_digest(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


def _digest(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=16).hexdigest()


# A cache entry, as plain tuples: (key, content digest, made at (ns), summary, pickled result)
_Entry = tuple[CacheKey, str, int, tuple[Any, ...], bytes]


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


class _Cache:
    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f"{name}.pickle"
        self.entries: dict[str, _Entry] = self._read()
        self.seen: set[str] = set()
        self.dirty = False

    def _read(self) -> dict[str, _Entry]:
        """The entries, if the file was written by this very code; else nothing.
        The version is pickled on its own first, so another version's data never loads."""
        try:
            with self.path.open("rb") as handle:
                if pickle.load(handle) != _version():  # noqa: S301  (the user's own cache)
                    return {}
                return pickle.load(handle)  # type: ignore[no-any-return]  # noqa: S301
        except Exception:  # a broken cache costs time, never the command
            return {}

    def get(self, relative: str, key: CacheKey, path: Path | None) -> LoadedFile | None:
        """The entry if its key matches; a racy one only if the file at `path` still has the
        same content (no `path`: the key is the content's own address, always trusted)."""
        self.seen.add(relative)
        entry = self.entries.get(relative)
        if entry is None or entry[0] != key:
            return None
        _, digest, made_ns, summary, blob = entry
        if path is None or made_ns - key[1] > _RACY_NS or _digest(path.read_bytes()) == digest:
            return LoadedFile(FileSummary(*summary), None, blob)
        return None

    def put(self, relative: str, key: CacheKey, digest: str, loaded: LoadedFile) -> None:
        result = loaded.result
        plain = (tuple(map(tuple, result.resources)), result.problems)
        blob = pickle.dumps(plain, protocol=pickle.HIGHEST_PROTOCOL)
        self.entries[relative] = (key, digest, time.time_ns(), tuple(loaded.summary), blob)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty and self.seen == set(self.entries):
            return
        self.entries = {k: v for k, v in self.entries.items() if k in self.seen}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_suffix(f".tmp-{os.getpid()}")
            with staging.open("wb") as handle:
                pickle.dump(_version(), handle, protocol=pickle.HIGHEST_PROTOCOL)
                pickle.dump(self.entries, handle, protocol=pickle.HIGHEST_PROTOCOL)
            staging.replace(self.path)
        except OSError:
            pass  # a cache that cannot be written only costs time
