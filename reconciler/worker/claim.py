"""A claimed run, parsed once from what `ops.claim_run` returns into a frozen typed record."""

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
    artifacts: tuple[object, ...] = ()
    timeout_s: int = STEP_TIMEOUT_S
    tool: str | None = None  # `name@version` of a Tool row: steps run in its docker_image
    secrets: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)

    @property
    def has_work(self) -> bool:
        return bool(self.steps or self.artifacts)


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
    metadata = raw.get("metadata") or {}
    return Claim(
        run_id=str(raw["run_id"]),
        token=str(raw["lease_token"]),
        project=str(raw.get("project") or ""),
        workflow=str(raw.get("workflow") or ""),
        workflow_type=str(raw.get("type") or ""),
        run_number=int(raw.get("run_number") or 0),
        attempt=int(raw.get("attempt") or 0),
        commit=str(raw.get("commit_sha") or metadata.get("commit") or ""),
        ref=str(metadata.get("ref") or ""),
        config=parse_config(raw.get("config") or {}),
        repository=_text(raw.get("repository_url")),
        metadata=metadata,
    )


def parse_config(config: Mapping[str, Any]) -> RunConfig:
    limits = config.get("limits") or {}
    network = limits.get("network", True) if isinstance(limits, Mapping) else True
    return RunConfig(
        steps=tuple(str(s) for s in config.get("steps") or ()),
        artifacts=tuple(config.get("artifacts") or ()),
        timeout_s=int(config.get("timeout_s") or STEP_TIMEOUT_S),
        tool=_text(config.get("tool")),
        secrets=tuple(str(s) for s in config.get("secrets") or ()),
        limits=Limits(
            cpus=_number(limits.get("cpus")) if isinstance(limits, Mapping) else None,
            memory=_text(limits.get("memory")) if isinstance(limits, Mapping) else None,
            network=network not in (False, "none"),
        ),
    )


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None
