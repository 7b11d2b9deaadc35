"""One run: its own folder (workspace, home, tmp), the code at its commit, the steps in the
workflow's executor, then its artifacts. Returns (exit code, error) for `finish`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.errors import ReconcilerError
from reconciler.worker import artifacts
from reconciler.worker.claim import Claim
from reconciler.worker.executors import (
    ContainerExecutor,
    ContainerSpec,
    ProcessExecutor,
    StepLaunch,
)
from reconciler.worker.lease import Signals, retrying
from reconciler.worker.logs import RunLog
from reconciler.worker.output import Masker
from reconciler.worker.queue import RunQueue
from reconciler.worker.secrets import SecretStore
from reconciler.worker.step import Step, StepLimits

# (repository, commit, destination) -> the commit checked out; raises a ReconcilerError
Checkout = Callable[[str, str, Path], str]
Outcome = tuple[int, str | None]
_TOOL = re.compile(r"([a-z0-9][a-z0-9._-]*)@([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True)
class RunEnvironment:
    """What a worker gives every run: where and how steps run."""

    artifacts_dir: Path
    process: ProcessExecutor
    containers: Callable[[], ContainerExecutor | None] = lambda: None  # found when needed
    checkout: Checkout | None = None
    secrets: SecretStore = field(default_factory=SecretStore)
    max_output_bytes: int = 10 * 1024 * 1024
    artifact_ttl: timedelta = timedelta(days=30)
    runs_dir: Path | None = None  # default: the system's temporary folder


class Run:
    def __init__(
        self, queue: RunQueue, claim: Claim, signals: Signals, environment: RunEnvironment
    ) -> None:
        self.queue, self.claim, self.signals, self.env = queue, claim, signals, environment
        self.log = RunLog(queue, claim, signals)
        self.image: str | None = None
        self.container: ContainerExecutor | None = None

    def execute(self) -> Outcome:
        folder = Path(tempfile.mkdtemp(prefix="ops-run-", dir=self.env.runs_dir))
        try:
            return self._in(folder)
        except ReconcilerError as exc:
            self.log.flush()
            return 1, str(exc)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _in(self, folder: Path) -> Outcome:
        config = self.claim.config
        if config.problem:
            return 1, config.problem
        secrets = self.env.secrets.for_run(config.secrets)
        for pattern in config.artifacts:
            artifacts.check_pattern(pattern)
        workspace, home, tmp = (folder / name for name in ("workspace", "home", "tmp"))
        for path in (workspace, home, tmp):
            path.mkdir()
        self._check_out(workspace)
        self._hand_over(folder, (workspace, home, tmp))
        self.image = image = self._image()
        self.container = container = self.env.containers() if image else None
        masker = Masker([v.encode() for v in secrets.values()])
        limits = StepLimits(config.timeout_s, self.env.max_output_bytes)
        for number, command in enumerate(config.steps, start=1):
            environ = self._environment(workspace, home, tmp, secrets, in_container=bool(image))
            launch = self._launch(number, command, workspace, environ)
            step = Step(self.log, self.signals, masker, limits, container)
            code, reason = step.run(number, command, launch, workspace)
            if code != 0:
                return code, reason
        return self._artifacts(workspace)

    def _check_out(self, workspace: Path) -> None:
        repository, commit = self.claim.repository, self.claim.commit
        if not repository or self.env.checkout is None:
            return
        sha = self.env.checkout(repository, commit, workspace)
        self.log.put(f"checked out {sha}", stream="worker", workspace_commit=sha)
        self.log.flush()

    def _hand_over(self, folder: Path, paths: tuple[Path, ...]) -> None:
        """The step's user owns its folders; the run's folder lets it in, nothing more."""
        owner = self.env.process.owner()
        if self.claim.config.tool is not None and os.geteuid() == 0:
            owner = (65534, 65534)  # the container's user
        folder.chmod(0o711)
        if owner is None:
            return
        for path in paths:
            for root, dirs, files in os.walk(path):
                for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                    os.lchown(name, *owner)

    def _image(self) -> str | None:
        tool = self.claim.config.tool
        if tool is None:
            return None
        match = _TOOL.fullmatch(tool)
        if not match:
            raise ReconcilerError(f"tool {tool!r} is not NAME@VERSION (e.g. odoo@18.0)")
        image = retrying(lambda: self.queue.tool_image(*match.groups()), self.signals.lost)
        if image is None:
            raise ReconcilerError(f"tool {tool} is not in the catalog (no Tool row)")
        if self.env.containers() is None:
            raise ReconcilerError(
                f"the workflow runs in {tool} ({image}) and this worker has no container "
                "runtime (install podman or docker, or start it with --executor podman|docker)"
            )
        return image

    def _launch(
        self, number: int, command: str, workspace: Path, env: dict[str, str]
    ) -> StepLaunch:
        image, container = self.image, self.container
        if image is None or container is None:
            return self.env.process.launch(command, workspace, env)
        name = f"ops-{self.claim.run_id}-{self.claim.attempt}-{number}"
        spec = ContainerSpec(image, name, self.claim.config.limits)
        return container.launch(command, workspace, env, spec)

    def _environment(
        self, workspace: Path, home: Path, tmp: Path, secrets: dict[str, str], *, in_container: bool
    ) -> dict[str, str]:
        claim = self.claim
        where = "/workspace" if in_container else str(workspace)
        return {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": where if in_container else str(home),
            "TMPDIR": "/tmp" if in_container else str(tmp),  # noqa: S108 (the container's own)
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "OPS_WORKSPACE": where,
            "OPS_RUN_ID": claim.run_id,
            "OPS_RUN_NUMBER": str(claim.run_number),
            "OPS_ATTEMPT": str(claim.attempt),
            "OPS_PROJECT": claim.project,
            "OPS_WORKFLOW": claim.workflow_path,
            "OPS_WORKFLOW_TYPE": claim.workflow_type,
            "OPS_COMMIT": claim.commit,
            "OPS_REF": claim.ref,
            **secrets,
        }

    def _artifacts(self, workspace: Path) -> Outcome:
        for pattern in self.claim.config.artifacts:
            found = artifacts.matches(workspace, str(pattern))
            if not found:
                return 1, f"artifact pattern {pattern!r} matched no file"
            for relative in found:
                key = f"{self.claim.project}/{self.claim.run_number}/{relative.as_posix()}"
                stored = artifacts.store(workspace, relative, self.env.artifacts_dir, key)
                answer = self._record(stored)
                if not answer.get("ok"):
                    return 1, f"artifact {relative}: {answer.get('error')}"
        return 0, None

    def _record(self, stored: artifacts.StoredArtifact) -> dict[str, object]:
        expires = datetime.now(UTC) + self.env.artifact_ttl
        record = {
            "key": stored.key,
            "url": stored.path.as_uri(),
            "content_type": stored.content_type,
            "size": stored.size,
            "checksum": stored.checksum,
        }
        claim = self.claim
        answer = retrying(
            lambda: self.queue.record_artifact(claim.run_id, claim.token, record, expires),
            self.signals.lost,
        )
        return answer or {"ok": False, "error": "lease lost"}
