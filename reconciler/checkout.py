"""A run's code: the files of one commit, from a local bare mirror of its repository.

One mirror per repository URL lives in the worker's `mirrors_dir`. A commit already in the
mirror costs no fetch; a missing one is fetched (every branch and tag) under a lock, so a burst
of runs on one host costs one fetch. The files are written into the run's workspace with
`read-tree -u` on a throwaway index: the workspace gets no `.git` and no link back to the
mirror, so a step cannot write into the mirror through it.

Inputs are hostile: the commit must be a full hex sha, the repository a URL of an allowed
transport (never `ext::`, never an option). Git never prompts, runs under a timeout in its
own process group, and every message has the URL's credentials redacted.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from reconciler.core.repository import (
    ALLOWED_TRANSPORTS,
    CONTROL,
    SHA,
    local_path,
    redact,
    ref_refusal,
    refusal,
)
from reconciler.errors import CheckoutError

__all__ = ["CheckoutError", "materialize", "mirror_path", "redact", "remote_head"]

log = logging.getLogger(__name__)

_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_CONFIG = (  # given on every git call: this module's settings win over the host's config
    *("-c", "protocol.allow=never"),
    *(arg for name in ALLOWED_TRANSPORTS for arg in ("-c", f"protocol.{name}.allow=always")),
    *("-c", "core.hooksPath=/dev/null"),
    *("-c", "core.fsmonitor=false"),
    *("-c", "core.autocrlf=false"),
    *("-c", "gc.auto=0"),  # a force-pushed commit stays in the mirror for re-runs
    *("-c", "maintenance.auto=false"),
    *("-c", "http.lowSpeedLimit=1000"),
    *("-c", "http.lowSpeedTime=30"),
)
_LOCATION_VARIABLES = (  # the caller's repository must never leak into ours
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
)
_MESSAGE_LIMIT = 300


def materialize(
    repository: str, commit: str, dest: Path, mirrors_dir: Path, *, timeout_s: float = 300.0
) -> str:
    """Write the files of `commit` of `repository` into `dest` (absent or empty); return the sha.

    Raises CheckoutError, one line, when the input is refused, the repository cannot be
    reached, the commit is not in it, or git takes longer than `timeout_s` in all."""
    check_repository(repository)
    sha = check_commit(commit)
    _check_not_a_mirror(repository, mirrors_dir)
    deadline = time.monotonic() + timeout_s
    mirror = mirror_path(repository, mirrors_dir)
    if not _has_commit(mirror, sha, deadline):
        with _locked(mirror.with_suffix(".lock"), deadline, repository):
            _init(mirror, deadline)
            if not _has_commit(mirror, sha, deadline):
                _fetch(mirror, repository, sha, deadline)
    _check_out(mirror, sha, dest, deadline)
    return sha


def remote_head(repository: str, ref: str | None, *, timeout_s: float = 20.0) -> str:
    """The commit `ref` (a branch, else a tag; None: the remote's HEAD) points at now, asked of
    the remote with `git ls-remote`. CheckoutError, one line, when it cannot be told."""
    check_repository(repository)
    if ref is not None and (reason := ref_refusal(ref)):
        raise CheckoutError(f"git_ref {reason}")
    wanted = _ref_names(ref)
    args = ["ls-remote", "--end-of-options", repository, *wanted]
    done = _git(args, None, time.monotonic() + timeout_s, check=False)
    if done.returncode != 0:
        raise CheckoutError(f"cannot reach {redact(repository)}: {_reason(done.stderr)}")
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        sha, _, name = line.partition("\t")
        found[name] = sha
    for name in wanted:
        if SHA.fullmatch(sha := found.get(name, "")):
            return sha
    raise CheckoutError(f"{redact(repository)} has no branch or tag {ref or 'HEAD'!r}")


def _ref_names(ref: str | None) -> list[str]:
    """The names ls-remote prints for `ref`, best first (a tag's peeled commit before it)."""
    if ref is None:
        return ["HEAD"]
    if ref.startswith("refs/"):
        return [f"{ref}^{{}}", ref]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"]


def mirror_path(repository: str, mirrors_dir: Path) -> Path:
    """The bare mirror of `repository`: named by a hash of its URL (no path from the URL)."""
    mirrors_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = hashlib.sha256(repository.encode()).hexdigest()[:20]
    return mirrors_dir / f"{name}.git"


def check_commit(commit: str) -> str:
    """The commit as a full lowercase hex sha, or CheckoutError: never a ref or an option."""
    if not isinstance(commit, str) or not SHA.fullmatch(commit.lower()):
        raise CheckoutError(
            f"commit {_shown(commit)} is not a full hex commit sha (40 or 64 hex digits)"
        )
    return commit.lower()


def check_repository(repository: str) -> None:
    """Refuse what git must never be handed: options, remote helpers (`ext::`), transports
    other than ALLOWED_TRANSPORTS, relative paths."""
    if reason := refusal(repository):
        raise CheckoutError(f"repository {_shown(repository)} is refused: {reason}")


def _check_not_a_mirror(repository: str, mirrors_dir: Path) -> None:
    """A local repository inside the mirrors would hand a run another project's code."""
    path = local_path(repository)
    if path is not None and Path(path).resolve().is_relative_to(mirrors_dir.resolve()):
        raise CheckoutError(f"repository {_shown(repository)} is refused: it is in the mirrors")


def _shown(value: object) -> str:
    text = redact(str(value))
    text = CONTROL.sub("?", text)
    return repr(text if len(text) <= 120 else text[:117] + "...")


@contextmanager
def _locked(path: Path, deadline: float, repository: str) -> Iterator[None]:
    """An exclusive flock on `path`: one fetcher per mirror across threads and processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CheckoutError(
                        f"timed out waiting for another fetch of {redact(repository)}"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _init(mirror: Path, deadline: float) -> None:
    """An empty bare repository, made aside and renamed into place: a worker killed midway
    leaves no half-made mirror. No template: no sample hooks, nothing but what git needs."""
    if (mirror / "HEAD").exists():
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{mirror.name}.init-", dir=mirror.parent))
    try:
        _git(["init", "--quiet", "--bare", "--template=", str(aside)], None, deadline)
        os.rename(aside, mirror)  # mirror absent, or an empty folder left by hand
    finally:
        if aside.exists():
            shutil.rmtree(aside)


def _has_commit(mirror: Path, sha: str, deadline: float) -> bool:
    if not (mirror / "HEAD").exists():
        return False
    args = ["rev-parse", "--quiet", "--verify", "--end-of-options", f"{sha}^{{commit}}"]
    return _git(args, mirror, deadline, check=False).returncode == 0


def _fetch(mirror: Path, repository: str, sha: str, deadline: float) -> None:
    """Every branch and tag; then the sha itself, for a commit no branch or tag holds (a
    server that allows it: GitHub's pull requests, protocol v2 servers)."""
    log.info("fetching %s into %s", redact(repository), mirror.name)
    fetch = ["fetch", "--quiet", "--end-of-options", repository]
    done = _git([*fetch, *_REFSPECS], mirror, deadline, check=False)
    if done.returncode != 0:
        raise CheckoutError(f"cannot fetch {redact(repository)}: {_reason(done.stderr)}")
    if _has_commit(mirror, sha, deadline):
        return
    direct = _git([*fetch, sha], mirror, deadline, check=False)
    if direct.returncode != 0 or not _has_commit(mirror, sha, deadline):
        raise CheckoutError(
            f"commit {sha} is not in {redact(repository)} (no branch or tag holds it, "
            "and the server does not serve it by sha)"
        )


def _check_out(mirror: Path, sha: str, dest: Path, deadline: float) -> None:
    """The commit's files into `dest`, through an index outside it, then dropped."""
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise CheckoutError(f"the workspace {dest} is not empty; a checkout needs an empty one")
    handle, index = tempfile.mkstemp(prefix=f"{mirror.name}.index-", dir=mirror.parent)
    os.close(handle)
    os.unlink(index)  # git wants to create it; the name is reserved by us in a 0700 folder
    try:
        read_tree = ["read-tree", "--reset", "-u", "--end-of-options", sha]
        _git(read_tree, mirror, deadline, checkout=(dest, Path(index)))
    finally:
        Path(index).unlink(missing_ok=True)


def _git(
    args: list[str],
    git_dir: Path | None,
    deadline: float,
    *,
    check: bool = True,
    checkout: tuple[Path, Path] | None = None,
) -> subprocess.CompletedProcess[str]:
    """git, never prompting, killed with its whole process group at the deadline.
    `checkout`: the work tree and the index file of a read-tree."""
    env = _environment(git_dir, checkout)
    work_tree = checkout[0] if checkout else None
    process = subprocess.Popen(
        ["git", *_CONFIG, *args],
        env=env,
        cwd=work_tree or git_dir or "/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # no controlling terminal: nothing can prompt on it
    )
    try:
        out, err = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill(process)
        raise CheckoutError(
            f"git {args[0]} timed out (the checkout's time limit was spent)"
        ) from None
    done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    if check and done.returncode != 0:
        raise CheckoutError(f"git {args[0]} failed: {_reason(err)}")
    return done


def _environment(git_dir: Path | None, checkout: tuple[Path, Path] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARIABLES}
    env |= {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": ":".join(ALLOWED_TRANSPORTS),
        "GIT_PROTOCOL_FROM_USER": "0",
        "LC_ALL": "C",
    }
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=30"
    if git_dir is not None:
        env["GIT_DIR"] = str(git_dir)
    if checkout is not None:
        env["GIT_WORK_TREE"], env["GIT_INDEX_FILE"] = map(str, checkout)
    return env


def _kill(process: subprocess.Popen[str]) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # git, ssh, remote helpers: the whole group
    process.communicate()


def _reason(stderr: str) -> str:
    """Git's last fatal/error line, redacted, on one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    chosen = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines
    text = redact(chosen[-1] if chosen else "no message from git")
    text = CONTROL.sub(" ", text.removeprefix("fatal: ").removeprefix("error: "))
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."
