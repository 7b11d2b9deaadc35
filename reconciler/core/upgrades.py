"""The upgrade gate: the advisories on the way of a project's version change (or of an upgrade
workflow being enabled), and which of them block the apply. Pure.

An advisory from A to B is on the way from X to Y when X <= A and B <= Y (17.0 -> 19.0 passes
17.0 -> 18.0 and 18.0 -> 19.0). When the project's config names its `modules`, an advisory
that lists `affects_modules` counts only if one of them is installed. `high` and `critical`
advisories block until the project lists their key in `acknowledged_advisories`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from reconciler.core import problems as codes
from reconciler.core.desired import DesiredState
from reconciler.core.plan import Change
from reconciler.core.problems import Problem

BLOCKING = ("high", "critical")


@dataclass(frozen=True)
class Advisory:
    key: str
    from_version: str
    to_version: str
    severity: str
    title: str
    affects_modules: tuple[str, ...] | None


@dataclass(frozen=True)
class Upgrade:
    project: str
    from_version: str
    to_version: str
    cause: str  # odoo_version | the upgrade workflow's key


def advisory_of(fields: dict[str, Any]) -> Advisory:
    """From an advisory's fields (a file's resource or a row)."""
    modules = fields.get("affects_modules")
    return Advisory(
        fields["key"],
        fields["from_version"],
        fields["to_version"],
        fields["severity"],
        fields["title"],
        tuple(modules) if modules else None,
    )


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def upgrades(changes: Iterable[Change], desired: DesiredState) -> list[Upgrade]:
    """The version changes a plan makes: a project's odoo_version, an upgrade workflow enabled."""
    found = []
    for change in changes:
        before, after = change.before or {}, change.after or {}
        if change.kind == "project" and "odoo_version" in change.paths:
            found.append(
                Upgrade(change.key, before["odoo_version"], after["odoo_version"], "odoo_version")
            )
        elif change.kind == "workflow" and _enables_upgrade(change):
            target = (after.get("config") or {}).get("target_version")
            project = desired.resources.get(("project", (after["project"],)))
            if isinstance(target, str) and project is not None:
                current = project.fields["odoo_version"]
                found.append(Upgrade(after["project"], current, target, change.key))
    return [u for u in found if _valid(u)]


def _enables_upgrade(change: Change) -> bool:
    after = change.after or {}
    was_enabled = bool(change.before and change.before.get("enabled"))
    return after.get("type") == "upgrade" and bool(after.get("enabled")) and not was_enabled


def _valid(upgrade: Upgrade) -> bool:
    try:
        return version(upgrade.from_version) < version(upgrade.to_version)
    except ValueError:
        return False


def on_the_way(
    upgrade: Upgrade, advisories: Iterable[Advisory], modules: list[str] | None
) -> list[Advisory]:
    low, high = version(upgrade.from_version), version(upgrade.to_version)
    return sorted(
        (
            a
            for a in advisories
            if low <= version(a.from_version)
            and version(a.to_version) <= high
            and version(a.from_version) < version(a.to_version)
            and _affects(a, modules)
        ),
        key=lambda a: (version(a.from_version), version(a.to_version), a.key),
    )


def _affects(advisory: Advisory, modules: list[str] | None) -> bool:
    if not modules or not advisory.affects_modules:
        return True
    return bool(set(modules) & set(advisory.affects_modules))


def gate(
    changes: Iterable[Change], desired: DesiredState, advisories: list[Advisory]
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """What the plan shows (`advisories[]`) and the refusals, one per blocking advisory, on the
    line of the project's odoo_version (or of the upgrade workflow)."""
    shown: list[dict[str, Any]] = []
    refused: list[Problem] = []
    for upgrade in upgrades(changes, desired):
        project = desired.resources.get(("project", (upgrade.project,)))
        if project is None:
            continue
        modules = (project.fields.get("config") or {}).get("modules")
        acknowledged = set(project.fields.get("acknowledged_advisories", []))
        for advisory in on_the_way(
            upgrade, advisories, modules if isinstance(modules, list) else None
        ):
            blocking = advisory.severity in BLOCKING and advisory.key not in acknowledged
            shown.append(_entry(upgrade, advisory, advisory.key in acknowledged, blocking))
            if blocking:
                refused.append(_refusal(project.ref("odoo_version"), upgrade, advisory))
    return shown, refused


def _entry(
    upgrade: Upgrade, advisory: Advisory, acknowledged: bool, blocking: bool
) -> dict[str, Any]:
    return {
        "project": upgrade.project,
        "upgrade": f"{upgrade.from_version} -> {upgrade.to_version}",
        "cause": upgrade.cause,
        "key": advisory.key,
        "from_version": advisory.from_version,
        "to_version": advisory.to_version,
        "severity": advisory.severity,
        "title": advisory.title,
        "acknowledged": acknowledged,
        "blocking": blocking,
    }


def _refusal(where: Any, upgrade: Upgrade, advisory: Advisory) -> Problem:
    return Problem(
        where,
        codes.UNACKNOWLEDGED_ADVISORY,
        f"project {upgrade.project}: upgrade {upgrade.from_version} -> {upgrade.to_version} "
        f"passes {advisory.severity} advisory {advisory.key} ({advisory.from_version} -> "
        f"{advisory.to_version}: {advisory.title}); read it, then add {advisory.key!r} to the "
        "project's acknowledged_advisories",
    )
