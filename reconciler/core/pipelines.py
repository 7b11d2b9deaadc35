"""The rules of pipelines across a project's workflows: needs resolve to one workflow of the
same project and form no cycle; a schedule is a valid cron in a known time zone and goes with
`on: [schedule]`; `paths` go with `on: [push]`, on a project whose code is the state
repository (for one with its own `repository`, apply knows only the code's head, not the files
a push changed). Pure."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.core import cron
from reconciler.core import problems as codes
from reconciler.core.desired import DesiredState, Identity, Resource
from reconciler.core.problems import Problem


def check(desired: DesiredState) -> list[Problem]:
    resources = desired.resources.values()
    return needs(desired) + triggers(resources, own_code(resources))


def needs(desired: DesiredState) -> list[Problem]:
    """The rules across a project's workflows: needs resolve, and form no cycle."""
    workflows: dict[str, list[Resource]] = {}
    for (kind, identity), resource in desired.resources.items():
        if kind == "workflow":
            workflows.setdefault(identity[0], []).append(resource)
    found: list[Problem] = []
    for members in workflows.values():
        found += _needs(members)
    return found


def own_code(resources: Iterable[Resource]) -> set[str]:
    """The projects with a code repository of their own."""
    return {r.identity[0] for r in resources if r.kind == "project" and r.fields.get("repository")}


def triggers(resources: Iterable[Resource], own: set[str] | None = None) -> list[Problem]:
    """The rules of each workflow on its own: schedule, time zone and paths go with `on`
    (`own`: the projects with a code repository of their own, where paths are refused)."""
    return [
        p
        for r in resources
        if r.kind == "workflow"
        for p in _triggers(r, own is not None and r.identity[0] in own)
    ]


def projects_with_paths(resources: Iterable[Resource]) -> set[str]:
    """The projects with a workflow that has `paths` (refused where the code is elsewhere)."""
    return {r.identity[0] for r in resources if r.kind == "workflow" and r.fields.get("paths")}


def projects_with_needs(resources: Iterable[Resource]) -> set[str]:
    """The projects with a workflow that needs another: `needs` finds nothing in the others."""
    return {r.identity[0] for r in resources if r.kind == "workflow" and r.fields.get("needs")}


def resolve_need(written: str, members: Iterable[Resource]) -> list[Identity]:
    """The workflows a `needs` entry names: TYPE/NAME, or a NAME (then possibly several)."""
    return [
        w.identity
        for w in members
        if written in (w.identity[2], f"{w.identity[1]}/{w.identity[2]}")
    ]


def _needs(members: list[Resource]) -> list[Problem]:
    found: list[Problem] = []
    graph: dict[Identity, list[Identity]] = {}
    for workflow in members:
        edges = graph.setdefault(workflow.identity, [])
        for written in workflow.fields.get("needs", []):
            named = resolve_need(written, members)
            if len(named) == 1 and named[0] != workflow.identity:
                edges.append(named[0])
                continue
            found.append(
                Problem(workflow.ref("needs"), codes.UNKNOWN_NEED, _bad(workflow, written, named))
            )
    by_identity = {w.identity: w for w in members}
    for cycle in _cycles(graph):
        first = by_identity[cycle[0]]
        shown = " -> ".join("/".join(i[1:]) for i in (*cycle, cycle[0]))
        found.append(
            Problem(
                first.ref("needs"),
                codes.NEEDS_CYCLE,
                f"workflow {first.key}: needs form a cycle: {shown}",
            )
        )
    return found


def _bad(workflow: Resource, written: str, named: list[Identity]) -> str:
    if not named:
        return (
            f"workflow {workflow.key}: needs {written!r}, which is no workflow of project "
            f"{workflow.identity[0]} (write NAME or TYPE/NAME)"
        )
    if named == [workflow.identity]:
        return f"workflow {workflow.key}: needs itself"
    options = ", ".join("/".join(i[1:]) for i in named)
    return f"workflow {workflow.key}: needs {written!r} is ambiguous ({options}): write TYPE/NAME"


def _cycles(graph: dict[Identity, list[Identity]]) -> list[list[Identity]]:
    """One cycle per strongly connected loop found by a depth-first walk, in a stable order."""
    state: dict[Identity, int] = {}  # 1: on the current path, 2: done
    path: list[Identity] = []
    cycles: list[list[Identity]] = []

    def visit(node: Identity) -> None:
        state[node] = 1
        path.append(node)
        for following in graph.get(node, []):
            if state.get(following) == 1:
                cycles.append(path[path.index(following) :])
            elif following not in state:
                visit(following)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


def _triggers(workflow: Resource, own_code: bool) -> list[Problem]:
    fields = workflow.fields
    triggers = fields["triggers"]
    found = []
    schedule, timezone = fields.get("schedule"), fields.get("timezone")
    if schedule is not None:
        if "schedule" not in triggers:
            found.append(
                _mismatch(workflow, "schedule", "schedule is set but `on` does not list schedule")
            )
        elif problem := cron.schedule_problem(schedule):
            found.append(
                Problem(
                    workflow.ref("schedule"),
                    codes.BAD_SCHEDULE,
                    f"workflow {workflow.key}: {problem}",
                )
            )
    if timezone is not None:
        if schedule is None:
            found.append(
                _mismatch(workflow, "timezone", "timezone is set but there is no schedule")
            )
        elif problem := cron.timezone_problem(timezone):
            found.append(
                Problem(
                    workflow.ref("timezone"),
                    codes.BAD_SCHEDULE,
                    f"workflow {workflow.key}: {problem}",
                )
            )
    if fields.get("paths") and "push" not in triggers:
        found.append(
            _mismatch(workflow, "paths", "paths filter pushes, but `on` does not list push")
        )
    elif fields.get("paths") and own_code:
        found.append(
            _mismatch(
                workflow,
                "paths",
                f"paths cannot filter the pushes of project {workflow.identity[0]}: its code "
                "is in its own repository, of which apply sees only the head; remove paths",
            )
        )
    return found


def _mismatch(workflow: Resource, name: str, message: str) -> Problem:
    return Problem(
        workflow.ref(name), codes.TRIGGER_MISMATCH, f"workflow {workflow.key}: {message}"
    )
