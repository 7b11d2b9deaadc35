"""The state directory on disk: every *.yaml/*.yml file, checked, with a per-file cache.

The cache maps a file (path, size, mtime, inode) to its FileResult, so a plan over 10,000
unchanged files does not parse and validate them again. An entry whose file was modified within
two seconds of the entry's making is "racy" (as in git's index: the file may have changed again
within the clock's resolution) and is trusted only if the file's content hash still matches.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from reconciler import __version__
from reconciler.core import problems as codes
from reconciler.core.problems import Problem, Source
from reconciler.core.validate import FileResult, check_file

_SUFFIXES = (".yaml", ".yml")
_RACY_NS = 2_000_000_000
CacheKey = tuple[int, int, int]


@dataclass(frozen=True)
class LoadedFiles:
    results: dict[str, FileResult]  # by path relative to the state directory

    @property
    def problems(self) -> list[Problem]:
        return sorted(p for r in self.results.values() for p in r.problems)


def state_files(root: Path) -> list[Path]:
    """Every YAML file under root, recursively, skipping hidden folders, in a stable order."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [Path(folder) / f for f in files if f.endswith(_SUFFIXES)]
    return sorted(found)


def load(root: Path, cache_dir: Path | None) -> LoadedFiles:
    cache = _Cache(cache_dir, root) if cache_dir else None
    results: dict[str, FileResult] = {}
    for path in state_files(root):
        relative = path.relative_to(root).as_posix()
        results[relative] = _load_one(path, relative, cache)
    if cache:
        cache.save()
    return LoadedFiles(results)


def _load_one(path: Path, relative: str, cache: _Cache | None) -> FileResult:
    try:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if cache and (hit := cache.get(relative, key, path)):
            return hit
        content = path.read_bytes()
        text = content.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(Source(relative), codes.UNREADABLE_FILE, f"cannot read the file: {exc}")
        return FileResult((), (problem,))
    result = check_file(relative, text)
    if cache:
        cache.put(relative, key, _digest(content), result)
    return result


def _digest(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class _Entry:
    key: CacheKey
    digest: str
    made_ns: int
    result: FileResult


@cache
def _version() -> str:
    """Cached results are valid for this code and these schemas only."""
    folder = resources.files("reconciler.schemas")
    digest = hashlib.sha256()
    for name in sorted(f.name for f in folder.iterdir() if f.name.endswith(".json")):
        digest.update(folder.joinpath(name).read_bytes())
    return f"{__version__}:{digest.hexdigest()[:16]}"


class _Cache:
    def __init__(self, folder: Path, root: Path) -> None:
        digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        self.path = folder / f"files-{digest}.pickle"
        self.entries: dict[str, _Entry] = self._read()
        self.seen: set[str] = set()
        self.dirty = False

    def _read(self) -> dict[str, _Entry]:
        try:
            with self.path.open("rb") as handle:
                version, entries = pickle.load(handle)  # noqa: S301  (our own file, per user)
        except (OSError, pickle.PickleError, EOFError, ValueError, AttributeError, ImportError):
            return {}
        return entries if version == _version() else {}

    def get(self, relative: str, key: CacheKey, path: Path) -> FileResult | None:
        self.seen.add(relative)
        entry = self.entries.get(relative)
        if entry is None or entry.key != key:
            return None
        if entry.made_ns - key[1] > _RACY_NS or _digest(path.read_bytes()) == entry.digest:
            return entry.result
        return None

    def put(self, relative: str, key: CacheKey, digest: str, result: FileResult) -> None:
        self.entries[relative] = _Entry(key, digest, time.time_ns(), result)
        self.dirty = True

    def save(self) -> None:
        if not self.dirty and self.seen == set(self.entries):
            return
        self.entries = {k: v for k, v in self.entries.items() if k in self.seen}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            staging = self.path.with_suffix(f".tmp-{os.getpid()}")
            with staging.open("wb") as handle:
                pickle.dump((_version(), self.entries), handle, protocol=pickle.HIGHEST_PROTOCOL)
            staging.replace(self.path)
        except OSError:
            pass  # a cache that cannot be written only costs time
