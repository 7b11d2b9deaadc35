"""reconciler.checkout on real git repositories: a commit's files from a local mirror, one fetch
per burst, clear errors, hostile inputs refused before git runs."""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reconciler import checkout
from reconciler.checkout import CheckoutError, materialize
from reconciler.errors import ReconcilerError
from tests.gitrepo import Repo

MISSING = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def code(tmp_path: Path) -> Repo:
    """A code repository: an addons folder, an executable build script, a symlink."""
    repo = Repo(tmp_path / "code")
    repo.write("addons/acme/__manifest__.py", "{'name': 'acme', 'version': '1'}\n")
    repo.write("scripts/build.sh", "#!/bin/sh\necho build one\n")
    (repo.root / "scripts/build.sh").chmod(0o755)
    (repo.root / "build").symlink_to("scripts/build.sh")
    repo.commit("one")
    return repo


@pytest.fixture
def fetches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], int]]:
    """Counts the fetches a remote served: git's own trace of every upload-pack it ran."""
    trace = tmp_path / "trace"
    trace.mkdir()
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))

    def count() -> int:
        served = '"event":"cmd_name"'
        return sum(
            1
            for f in trace.iterdir()
            for line in f.read_text().splitlines()
            if served in line and '"name":"upload-pack"' in line
        )

    yield count


def files_of(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else p.read_text())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def test_each_commit_gets_its_own_files_from_a_file_url(code: Repo, tmp_path: Path) -> None:
    first = code.git("rev-parse", "HEAD")
    code.write("scripts/build.sh", "#!/bin/sh\necho build two\n")
    code.write("addons/acme/models.py", "# two\n")
    second = code.commit("two")
    url = f"file://{code.root}"
    mirrors = tmp_path / "mirrors"

    assert materialize(url, first, tmp_path / "w1", mirrors) == first
    assert materialize(url, second.upper(), tmp_path / "w2", mirrors) == second

    assert files_of(tmp_path / "w1") == {
        "addons/acme/__manifest__.py": "{'name': 'acme', 'version': '1'}\n",
        "build": "scripts/build.sh",
        "scripts/build.sh": "#!/bin/sh\necho build one\n",
    }
    assert files_of(tmp_path / "w2")["scripts/build.sh"] == "#!/bin/sh\necho build two\n"
    assert "addons/acme/models.py" in files_of(tmp_path / "w2")
    built = subprocess.run(
        ["./build"], cwd=tmp_path / "w1", capture_output=True, text=True, check=False
    )
    assert built.stdout == "build one\n"  # executable bit and symlink kept


def test_a_bare_repository_by_absolute_path(code: Repo, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(code.root), str(bare)], check=True)
    sha = code.git("rev-parse", "HEAD")
    assert materialize(str(bare), sha, tmp_path / "ws", tmp_path / "mirrors") == sha
    assert (tmp_path / "ws/addons/acme/__manifest__.py").is_file()


def test_the_workspace_has_no_way_back_into_the_mirror(code: Repo, tmp_path: Path) -> None:
    sha = code.git("rev-parse", "HEAD")
    url, mirrors = f"file://{code.root}", tmp_path / "mirrors"
    ws = tmp_path / "ws"
    materialize(url, sha, ws, mirrors)
    assert not (ws / ".git").exists()
    assert set(files_of(ws)) == {"addons/acme/__manifest__.py", "build", "scripts/build.sh"}
    found = subprocess.run(
        ["git", "rev-parse", "--git-dir"],
        check=False,
        cwd=ws,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)},
    )
    assert found.returncode != 0  # git finds no repository from the workspace

    # a step that wrecks its workspace changes nothing for the next run
    (ws / "scripts/build.sh").write_text("#!/bin/sh\necho tampered\n")
    (ws / "addons/acme/__manifest__.py").unlink()
    materialize(url, sha, tmp_path / "next", mirrors)
    assert files_of(tmp_path / "next")["scripts/build.sh"] == "#!/bin/sh\necho build one\n"
    assert (tmp_path / "next/addons/acme/__manifest__.py").is_file()


def test_mirrors_are_private_to_the_worker(code: Repo, tmp_path: Path) -> None:
    mirrors = tmp_path / "mirrors"
    materialize(f"file://{code.root}", code.git("rev-parse", "HEAD"), tmp_path / "ws", mirrors)
    assert stat.S_IMODE(mirrors.stat().st_mode) == 0o700
    assert [p.name for p in mirrors.iterdir() if p.suffix == ".git"] == [
        checkout.mirror_path(f"file://{code.root}", mirrors).name
    ]
    assert not (checkout.mirror_path(f"file://{code.root}", mirrors) / "hooks").exists()


def test_a_burst_of_runs_costs_one_fetch(
    code: Repo, tmp_path: Path, fetches: Callable[[], int]
) -> None:
    count = fetches
    url, mirrors = f"file://{code.root}", tmp_path / "mirrors"
    first = code.git("rev-parse", "HEAD")

    def burst(commits: list[str], name: str) -> list[str]:
        with ThreadPoolExecutor(8) as pool:
            jobs = [
                pool.submit(materialize, url, sha, tmp_path / f"{name}-{i}", mirrors)
                for i, sha in enumerate(commits * 4)
            ]
            return [job.result() for job in jobs]

    assert burst([first, first], "cold") == [first] * 8
    assert count() == 1

    code.write("addons/acme/models.py", "# two\n")
    second = code.commit("two")
    code.write("addons/acme/models.py", "# three\n")
    third = code.commit("three")
    assert sorted(set(burst([second, third], "new"))) == sorted({second, third})
    assert count() == 2

    burst([first, second, third], "warm")
    assert count() == 2
    assert (tmp_path / "warm-2/addons/acme/models.py").read_text() == "# three\n"


def test_a_commit_that_is_not_there(code: Repo, tmp_path: Path) -> None:
    with pytest.raises(CheckoutError) as caught:
        materialize(f"file://{code.root}", MISSING, tmp_path / "ws", tmp_path / "mirrors")
    message = str(caught.value)
    assert isinstance(caught.value, ReconcilerError)
    assert message.startswith(f"commit {MISSING} is not in file://{code.root}")
    assert "\n" not in message


def test_a_commit_no_branch_holds_is_fetched_by_sha(code: Repo, tmp_path: Path) -> None:
    code.git("checkout", "-q", "-b", "topic")
    code.write("topic.txt", "topic\n")
    dangling = code.commit("topic")
    code.git("checkout", "-q", "main")
    code.git("branch", "-D", "topic")
    code.git("config", "uploadpack.allowAnySHA1InWant", "true")
    ws = tmp_path / "ws"
    assert materialize(f"file://{code.root}", dangling, ws, tmp_path / "mirrors") == dangling
    assert (ws / "topic.txt").read_text() == "topic\n"


def test_an_unreachable_repository_fails_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(CheckoutError) as caught:
        materialize(f"file://{tmp_path}/nowhere", MISSING, tmp_path / "ws", tmp_path / "m")
    assert str(caught.value).startswith(f"cannot fetch file://{tmp_path}/nowhere: ")
    assert "\n" not in str(caught.value)


def test_credentials_never_appear_in_errors(tmp_path: Path) -> None:
    port = _closed_port()
    url = f"https://deploy:s3cr3t-token@127.0.0.1:{port}/acme/erp.git"
    with pytest.raises(CheckoutError) as caught:
        materialize(url, MISSING, tmp_path / "ws", tmp_path / "m", timeout_s=20)
    message = str(caught.value)
    assert "s3cr3t-token" not in message
    assert f"https://deploy:***@127.0.0.1:{port}/acme/erp.git" in message


def test_a_hanging_remote_times_out(tmp_path: Path) -> None:
    """A git:// server that accepts and never answers: the checkout gives up at its limit."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"git://127.0.0.1:{server.getsockname()[1]}/repo.git"
        started = time.monotonic()
        with pytest.raises(CheckoutError, match="timed out"):
            materialize(url, MISSING, tmp_path / "ws", tmp_path / "m", timeout_s=1.5)
        assert time.monotonic() - started < 10


def test_the_mirror_lock_wait_is_bounded(code: Repo, tmp_path: Path) -> None:
    url, mirrors = f"file://{code.root}", tmp_path / "mirrors"
    lock = checkout.mirror_path(url, mirrors).with_suffix(".lock")
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(CheckoutError, match="timed out waiting for another fetch"):
            materialize(url, code.git("rev-parse", "HEAD"), tmp_path / "ws", mirrors, timeout_s=0.5)


def test_a_workspace_that_is_not_empty_is_refused(code: Repo, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "left-over").write_text("x")
    with pytest.raises(CheckoutError, match="not empty"):
        materialize(f"file://{code.root}", code.git("rev-parse", "HEAD"), ws, tmp_path / "m")


@pytest.mark.parametrize(
    "commit",
    [
        "--upload-pack=touch {marker}",
        "-o",
        "--output={marker}",
        "HEAD",
        "main",
        "c325da7",
        MISSING + "\n",
        MISSING + " --help",
        MISSING[:-1] + "g",
        "",
    ],
)
def test_a_commit_that_is_not_a_hex_sha_is_refused(commit: str, code: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(CheckoutError, match="is not a full hex commit sha"):
        materialize(
            f"file://{code.root}", commit.format(marker=marker), tmp_path / "ws", tmp_path / "m"
        )
    assert not marker.exists()
    assert not (tmp_path / "m").exists()  # refused before anything was touched


@pytest.mark.parametrize(
    "repository",
    [
        "ext::sh -c touch% {marker}",
        "ext::sh -c 'touch {marker}'",
        "fd::3",
        "-uhelp",
        "--upload-pack=touch {marker}",
        "ssh://-oProxyCommand=touch% {marker}/repo",
        "ssh://user@-oProxyCommand=touch {marker}/repo",
        "-oProxyCommand=touch {marker}@host:repo",
        "http://example.com/repo.git",
        "ftp://example.com/repo.git",
        "relative/path",
        "./repo",
        "file:///tmp/repo\nfoo",
        "",
    ],
)
def test_hostile_repositories_are_refused(repository: str, code: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(CheckoutError, match="is refused"):
        materialize(
            repository.format(marker=marker),
            code.git("rev-parse", "HEAD"),
            tmp_path / "ws",
            tmp_path / "m",
        )
    assert not marker.exists()


def test_git_itself_refuses_other_transports(code: Repo, tmp_path: Path) -> None:
    """Behind the check: even handed `ext::`, the git this module runs will not use it."""
    marker = tmp_path / "pwned"
    mirror = checkout.mirror_path("x", tmp_path / "m")
    deadline = time.monotonic() + 30
    checkout._init(mirror, deadline)
    with pytest.raises(CheckoutError, match="cannot fetch"):
        checkout._fetch(mirror, f"ext::sh -c touch% {marker}", MISSING, deadline)
    assert not marker.exists()


@pytest.mark.parametrize(
    "repository",
    [
        "https://github.com/acme/erp.git",
        "ssh://git@github.com/acme/erp.git",
        "git+ssh://git@host:2222/acme/erp",
        "git@github.com:acme/erp.git",
        "github.com:acme/erp.git",
        "git://git.example.com/erp",
        "file:///srv/git/erp.git",
        "/srv/git/erp.git",
        "https://[::1]:8443/erp.git",
    ],
)
def test_ordinary_repositories_are_accepted(repository: str) -> None:
    assert checkout.refusal(repository) is None


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://user:pw@h/r.git", "https://user:***@h/r.git"),
        ("https://ghp_token@github.com/a/b", "https://***@github.com/a/b"),
        ("ssh://git@h/r", "ssh://git@h/r"),
        ("ssh://git:pw@h/r", "ssh://git:***@h/r"),
        (
            "fatal: unable to access 'https://u:p@h/r/': refused",
            "fatal: unable to access 'https://u:***@h/r/': refused",
        ),
        ("git@github.com:a/b.git", "git@github.com:a/b.git"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert checkout.redact(text) == shown


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_concurrent_processes_share_one_mirror(
    code: Repo, tmp_path: Path, fetches: Callable[[], int]
) -> None:
    """Two worker processes on one host: the flock keeps them to one fetch."""
    count = fetches
    sha = code.git("rev-parse", "HEAD")
    script = (
        "import sys; from pathlib import Path; from reconciler.checkout import materialize; "
        "print(materialize(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))"
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                f"file://{code.root}",
                sha,
                str(tmp_path / f"p{i}"),
                str(tmp_path / "mirrors"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [p.communicate() for p in procs]
    assert [out.strip() for out, _ in outputs] == [sha] * 4, [err for _, err in outputs]
    assert count() == 1


def test_a_repository_inside_the_mirrors_is_refused(code: Repo, tmp_path: Path) -> None:
    """Another project's mirror is the worker's, never a run's code."""
    mirrors = tmp_path / "mirrors"
    sha = code.git("rev-parse", "HEAD")
    other = checkout.mirror_path(f"file://{code.root}", mirrors)
    materialize(f"file://{code.root}", sha, tmp_path / "ws", mirrors)
    (tmp_path / "link").symlink_to(other)
    for sneaky in (str(other), f"file://{other}", str(tmp_path / "link"), f"{mirrors}/../mirrors"):
        with pytest.raises(CheckoutError, match="is refused: it is in the mirrors"):
            materialize(sneaky, sha, tmp_path / "stolen", mirrors)
    assert not (tmp_path / "stolen").exists()
