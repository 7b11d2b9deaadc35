"""The state directory on disk: every *.yaml/*.yml file, checked, with a per-file cache.

The cache maps a file (path, size, mtime, inode) to its FileResult, so a plan over 10,000
unchanged files does not parse and validate them again. Files modified within the last two
seconds of the cache's writing are not trusted (the same "racy" rule as git's index).
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
        if cache and (hit := cache.get(relative, key)):
            return hit
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem = Problem(Source(relative), codes.UNREADABLE_FILE, f"cannot read the file: {exc}")
        return FileResult((), (problem,))
    result = check_file(relative, text)
    if cache:
        cache.put(relative, key, result)
    return result


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
        self.entries: dict[str, tuple[CacheKey, FileResult]] = self._read()
        self.seen: set[str] = set()
        self.dirty = False

    def _read(self) -> dict[str, tuple[CacheKey, FileResult]]:
        try:
            with self.path.open("rb") as handle:
                version, entries = pickle.load(handle)  # noqa: S301  (our own file, per user)
        except (OSError, pickle.PickleError, EOFError, ValueError, AttributeError, ImportError):
            return {}
        return entries if version == _version() else {}

    def get(self, relative: str, key: CacheKey) -> FileResult | None:
        self.seen.add(relative)
        entry = self.entries.get(relative)
        return entry[1] if entry and entry[0] == key else None

    def put(self, relative: str, key: CacheKey, result: FileResult) -> None:
        if time.time_ns() - key[1] > _RACY_NS:
            self.entries[relative] = (key, result)
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
