"""What a step runs in: a sandboxed process on the worker's host, or a container.

Process executor (docs/reference.md, "Executors and isolation"): every step gets its own PID
and mount namespace (`unshare --pid --fork --kill-child --mount --mount-proc`), started under
`setpriv --pdeathsig KILL`. So
* when the worker dies (even by `kill -9`), the kernel kills the namespace's first process and
  with it every process of the step, double-forked or setsid'd ones included, at once;
* the step sees only its own processes in `/proc`: it cannot name the worker's PID, so it can
  neither read `/proc/<worker>/environ` or `mem` nor ptrace it;
* the worker's own folders (state, caches, its home, the artifact store, the secrets file) are
  covered by empty tmpfs mounts (files by /dev/null) inside the step's mount namespace;
* as root, the step runs as an unprivileged user (default `nobody`), with no capabilities and
  no_new_privs; as another user, the worker adds a user namespace (`--user --map-root-user`)
  so the same namespaces work without privileges, and refuses to start if the kernel forbids it.

Container executor: `podman` or `docker run --rm` of the workflow's image, the workspace
mounted at /workspace, as the unprivileged user 65534 with no capabilities and
no-new-privileges, limits from the workflow (`limits: {cpus, memory, network}`). The
container is named after the run; a sentinel process holds a pipe from the worker and removes
the container as soon as the worker is gone (the pipe's end is the kernel's word that the
worker died).
"""

from __future__ import annotations

import enum
import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.errors import ReconcilerError

WORKSPACE_IN_CONTAINER = "/workspace"
# What the sandbox's first process (PID 1 of the step's namespace) does: hide the worker's
# folders and files, then start the step, dropping to the step's user, and wait for it. It
# stays root and never execs the step itself: a change of user clears the parent-death signal
# that `--kill-child` set on it (prctl(2)), and that signal is what ends the namespace.
_HIDE_THEN_RUN = r"""
while [ "$1" != -- ]; do
  if [ -d "$1" ]; then mount -t tmpfs -o size=64k,mode=0755 ops-hidden "$1"
  else mount --bind /dev/null "$1"; fi || { echo "ops sandbox: cannot hide $1" >&2; exit 125; }
  shift
done
shift
"$@"
exit $?
"""


class ExecutorError(ReconcilerError):
    """The worker host cannot run steps the way it was asked to."""


class ExecutorKind(enum.Enum):
    PROCESS = "process"
    PODMAN = "podman"
    DOCKER = "docker"


@dataclass(frozen=True)
class Limits:
    cpus: float | None = None
    memory: str | None = None
    network: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    image: str
    name: str
    limits: Limits


@dataclass(frozen=True)
class StepLaunch:
    """Everything one step needs to start: the argv, its environment, what to clean up."""

    argv: list[str]
    env: dict[str, str]
    container: str | None = None


@dataclass(frozen=True)
class ProcessExecutor:
    hidden: Sequence[Path] = ()
    step_user: str = "nobody"
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)

    def launch(self, command: str, workspace: Path, env: Mapping[str, str]) -> StepLaunch:
        drop: list[str] = []
        namespaces = ["--pid", "--fork", "--kill-child", "--mount", "--mount-proc"]
        if self.as_root:
            user = pwd.getpwnam(self.step_user)
            drop = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
            ]
        else:
            namespaces = ["--user", "--map-root-user", *namespaces]
            drop = ["setpriv", "--no-new-privs", "--"]
        # a folder holding the workspace cannot be covered without covering the workspace
        inside = workspace.resolve()
        hidden = [
            str(p) for p in _outermost(self.hidden) if p.exists() and not inside.is_relative_to(p)
        ]
        argv = [
            *("setpriv", "--pdeathsig", "KILL", "--"),
            *("unshare", *namespaces, "--"),
            *("/bin/sh", "-c", _HIDE_THEN_RUN, "ops-sandbox", *hidden, "--"),
            *drop,
            *("/bin/sh", "-c", command),
        ]
        return StepLaunch(argv, dict(env))

    def owner(self) -> tuple[int, int] | None:
        """Who must own the workspace for the step to write it."""
        if not self.as_root:
            return None
        user = pwd.getpwnam(self.step_user)
        return user.pw_uid, user.pw_gid

    def check(self) -> None:
        """ExecutorError unless this host can start sandboxed steps."""
        missing = [tool for tool in ("setpriv", "unshare") if shutil.which(tool) is None]
        if missing:
            raise ExecutorError(
                f"the process executor needs {' and '.join(missing)} (util-linux) on the "
                "worker's host"
            )
        if self.as_root:
            try:
                pwd.getpwnam(self.step_user)
            except KeyError:
                raise ExecutorError(
                    f"step user {self.step_user!r} does not exist on this host"
                ) from None
        probe = self.launch("true", Path("/"), {"PATH": "/usr/bin:/bin"})
        done = subprocess.run(probe.argv, capture_output=True, check=False, env=probe.env)
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            raise ExecutorError(
                "cannot isolate steps on this host (PID, mount"
                f"{'' if self.as_root else ' and user'} namespaces): "
                f"{detail[-1] if detail else 'unshare failed'}; run the worker as root, "
                "allow unprivileged user namespaces, or use --executor podman|docker"
            )


@dataclass(frozen=True)
class ContainerExecutor:
    kind: ExecutorKind
    binary: str
    # as root, steps never run as root in the container either; a rootless runtime already
    # maps the container's root to the worker's own user
    user: str | None = field(default_factory=lambda: "65534:65534" if os.geteuid() == 0 else None)

    def launch(
        self,
        command: str,
        workspace: Path,
        env: Mapping[str, str],
        spec: ContainerSpec,
    ) -> StepLaunch:
        name, limits = spec.name, spec.limits
        runtime = (
            ["--runtime=runc", "--cgroup-manager=cgroupfs"]
            if self.kind is ExecutorKind.PODMAN
            else []
        )
        options = [
            "--rm",
            f"--name={name}",
            f"--volume={workspace}:{WORKSPACE_IN_CONTAINER}",
            f"--workdir={WORKSPACE_IN_CONTAINER}",
            "--ulimit=nofile=1024:1024",
            "--ulimit=nproc=1024:1024",
            "--security-opt=no-new-privileges",
            "--cap-drop=all",
            *([f"--user={self.user}"] if self.user else []),
            f"--network={'bridge' if limits.network else 'none'}",
        ]
        if limits.cpus:
            options.append(f"--cpus={limits.cpus}")
        if limits.memory:
            options.append(f"--memory={limits.memory}")
        # `--env NAME` takes the value from the client's environment: no value on a command line
        variables = [f"--env={key}" for key in env if key not in ("PATH", "HOME")]
        argv = [
            self.binary,
            *runtime,
            "run",
            *options,
            *variables,
            spec.image,
            "/bin/sh",
            "-c",
            command,
        ]
        client_env = {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        if self.kind is ExecutorKind.PODMAN:
            client_env["HOME"] = os.environ.get("HOME", "/root")
        return StepLaunch(argv, client_env, container=name)

    def remove_argv(self, name: str) -> list[str]:
        runtime = ["--runtime=runc"] if self.kind is ExecutorKind.PODMAN else []
        return [self.binary, *runtime, "rm", "--force", "--time=0", name]


def _outermost(paths: Sequence[Path]) -> list[Path]:
    """The paths not inside another of them (covering a folder hides what is in it)."""
    return [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]


def container_executor(kind: ExecutorKind | None) -> ContainerExecutor | None:
    """The container runtime asked for (or the first found: podman, then docker)."""
    kinds = [kind] if kind else [ExecutorKind.PODMAN, ExecutorKind.DOCKER]
    for candidate in kinds:
        if candidate is ExecutorKind.PROCESS:
            return None
        binary = shutil.which(candidate.value)
        if binary and _answers(binary):
            return ContainerExecutor(candidate, binary)
    if kind is not None:
        raise ExecutorError(
            f"--executor {kind.value}: `{kind.value}` is not installed or does not answer "
            "on this host"
        )
    return None


def _answers(binary: str) -> bool:
    try:
        done = subprocess.run(
            [binary, "info"], capture_output=True, check=False, timeout=20, env=dict(os.environ)
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
