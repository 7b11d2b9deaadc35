"""The parse cache: keyed by content, so it serves a fresh checkout, never a stale parse, and
is shared by `validate`/`plan` (working trees) and `diff` (git trees); many files are parsed by
a pool of processes with the same results as one process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.fleet import project_yaml
from reconciler import files
from reconciler.gitrepo import GitTree
from tests.gitrepo import Repo

BROKEN = "apiVersion: ops/v1\nkind: Tool\nname: Odoo\nversion: 18.0\ndocker_image: odoo:18\n"


class Parses:
    """Counts the files actually parsed (the cache's misses)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        checked = files._checked

        def counting(relative: str, content: bytes) -> files.LoadedFile:
            self.files.append(relative)
            return checked(relative, content)

        monkeypatch.setattr(files, "_checked", counting)


def _fleet(repo: Repo, n: int) -> None:
    for i in range(n):
        repo.write(f"projects/fleet-{i:05d}.yaml", project_yaml(i, n))
    repo.write("catalog/odoo.yaml", BROKEN)
    repo.commit("fleet")


def _shape(loaded: files.LoadedFiles) -> tuple[object, ...]:
    return (
        {name: f.summary for name, f in loaded.files.items()},
        loaded.resources(),
        [str(p) for p in loaded.problems],
    )


def test_a_fresh_checkout_is_served_from_a_restored_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "first")
    _fleet(repo, 5)
    first = files.load(repo.root, tmp_path / "cache")
    shutil.copytree(tmp_path / "cache", tmp_path / "restored")
    clone = tmp_path / "clone"
    repo.git("clone", "-q", str(repo.root), str(clone))
    parses = Parses(monkeypatch)
    again = files.load(clone, tmp_path / "restored")
    assert parses.files == []
    assert _shape(again) == _shape(first)


def test_an_edit_that_keeps_size_and_mtime_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "state")
    _fleet(repo, 3)
    path = repo.root / "projects/fleet-00001.yaml"
    long_ago = (1_600_000_000, 1_600_000_000)
    os.utime(path, long_ago)  # so the index entry made now is not racy
    files.load(repo.root, tmp_path / "cache")
    text = path.read_text()
    edited = text.replace("tier: standard", "tier: premiumm")
    assert len(edited) == len(text)
    with path.open("r+") as handle:  # in place: same inode, same size
        handle.write(edited)
    os.utime(path, long_ago)
    parses = Parses(monkeypatch)
    loaded = files.load(repo.root, tmp_path / "cache")
    assert parses.files == ["projects/fleet-00001.yaml"]
    [project] = [r for r in loaded.resources() if r.identity == ("fleet-00001",)]
    assert project.fields["config"]["tier"] == "premiumm"


def test_diff_reads_no_blob_that_validate_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "state")
    _fleet(repo, 4)
    files.load(repo.root, tmp_path / "cache")
    tree = GitTree(repo.root, "HEAD")
    read: list[str] = []

    def reading(sha: str) -> bytes:
        read.append(sha)
        return tree.read(sha)

    parses = Parses(monkeypatch)
    try:
        at_head = files.load_blobs(tree.blobs(), reading, tmp_path / "cache", tree.root)
    finally:
        tree.close()
    assert read == [] and parses.files == []
    assert _shape(at_head) == _shape(files.load(repo.root, None))


def test_the_pool_parses_as_one_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "state")
    _fleet(repo, 12)
    alone = files.load(repo.root, None)
    monkeypatch.setattr(files, "PARALLEL_FROM", 2)
    monkeypatch.setattr(files, "_cores", lambda: 2)
    pooled = files.load(repo.root, tmp_path / "cache")
    assert _shape(pooled) == _shape(alone)
    assert [str(p) for p in pooled.problems] == [
        "catalog/odoo.yaml:3:7: E113 name: 'Odoo' does not match ^[a-z0-9][a-z0-9._-]*$",
        'catalog/odoo.yaml:4:10: E111 version: expected string, got number (quote it: "18.0")',
    ]
    cached = files.load(repo.root, tmp_path / "cache")
    assert _shape(cached) == _shape(alone)


def test_a_state_directory_below_the_repository_root_shares_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("ops/projects/a.yaml", project_yaml(1, 3))
    repo.write("ops/.hidden/b.yaml", project_yaml(2, 3))
    repo.write("other/c.yaml", project_yaml(3, 3))
    repo.commit("nested")
    files.load(repo.root / "ops", tmp_path / "cache")
    tree = GitTree(repo.root / "ops", "HEAD")
    try:
        blobs = tree.blobs()
        parses = Parses(monkeypatch)
        files.load_blobs(blobs, tree.read, tmp_path / "cache", tree.root)
    finally:
        tree.close()
    assert [relative for relative, _ in blobs] == ["projects/a.yaml"]
    assert parses.files == []


_PARENT = os.getpid()
_PARSE_CHUNK = files._parse_chunk


def _dying(bounds: tuple[int, int]) -> list[tuple[tuple[object, ...], bytes]]:
    """Parses the first chunk; a forked process given any other dies, as if OOM-killed."""
    if os.getpid() != _PARENT and bounds[0] > 0:
        os._exit(9)
    return _PARSE_CHUNK(bounds)


def test_a_parsing_process_that_dies_costs_time_not_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "state")
    _fleet(repo, 12)
    alone = files.load(repo.root, None)
    monkeypatch.setattr(files, "PARALLEL_FROM", 2)
    monkeypatch.setattr(files, "_cores", lambda: 2)
    monkeypatch.setattr(files, "_parse_chunk", _dying)
    assert _shape(files.load(repo.root, tmp_path / "cache")) == _shape(alone)
