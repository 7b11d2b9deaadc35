"""A claimed run, parsed once from what `ops.claim_run` or `ops.claim_runs` returns into a
frozen typed record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.worker.executors import Limits

STEP_TIMEOUT_S = 3600


@dataclass(frozen=True)
class RunConfig:
    """The part of a workflow's `config` the worker acts on."""

    steps: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    timeout_s: int = STEP_TIMEOUT_S
    tool: str | None = None  # `name@version` of a Tool row: steps run in its docker_image
    secrets: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    problem: str | None = None  # why the worker cannot act on the config, if it cannot

    @property
    def has_work(self) -> bool:
        return bool(self.steps or self.artifacts or self.problem)


@dataclass(frozen=True)
class Claim:
    run_id: str
    token: str
    project: str
    workflow: str
    workflow_type: str
    run_number: int
    attempt: int
    commit: str
    ref: str
    config: RunConfig
    repository: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def workflow_path(self) -> str:
        return f"{self.project}/{self.workflow_type}/{self.workflow}"


def parse_claim(raw: Mapping[str, Any]) -> Claim:
    """Never raises for what members can write (metadata, config): a config the worker cannot
    act on becomes `config.problem`, and the run fails with it."""
    metadata = _mapping(raw.get("metadata"))
    return Claim(
        run_id=str(raw["run_id"]),
        token=str(raw["lease_token"]),
        project=str(raw.get("project") or ""),
        workflow=str(raw.get("workflow") or ""),
        workflow_type=str(raw.get("type") or ""),
        run_number=_integer(raw.get("run_number")) or 0,
        attempt=_integer(raw.get("attempt")) or 0,
        commit=str(raw.get("commit_sha") or metadata.get("commit") or ""),
        ref=str(metadata.get("ref") or ""),
        config=parse_config(raw.get("config")),
        repository=_text(raw.get("repository_url")),
        metadata=metadata,
    )


def parse_config(config: object) -> RunConfig:
    if not isinstance(config, Mapping):
        return RunConfig(problem="the workflow's config is not a mapping")
    limits = _mapping(config.get("limits"))
    shapes = {
        "steps": _strings(config.get("steps")),
        "artifacts": _strings(config.get("artifacts")),
        "secrets": _strings(config.get("secrets")),
    }
    wrong = [f"config.{key}" for key, value in shapes.items() if value is None]
    timeout = _integer(config.get("timeout_s", STEP_TIMEOUT_S))
    if timeout is None or timeout < 1:
        wrong.append("config.timeout_s")
    tool = config.get("tool")
    if tool is not None and not isinstance(tool, str):
        wrong.append("config.tool")
    return RunConfig(
        steps=shapes["steps"] or (),
        artifacts=tuple(shapes["artifacts"] or ()),
        timeout_s=timeout if timeout and timeout > 0 else STEP_TIMEOUT_S,
        tool=_text(tool) if isinstance(tool, str) else None,
        secrets=shapes["secrets"] or (),
        limits=Limits(
            cpus=_number(limits.get("cpus")),
            memory=_text(limits.get("memory")),
            network=limits.get("network", True) not in (False, "none"),
        ),
        problem=f"the workflow's {', '.join(wrong)} cannot be used (see the Workflow schema)"
        if wrong
        else None,
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: object) -> tuple[str, ...] | None:
    """A list of strings without NUL, or None when it is something else."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    if any("\x00" in v for v in value):
        return None
    return tuple(value)


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None
