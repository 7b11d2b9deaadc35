"""The pure rules of pipelines: needs and triggers in the files, cron slots, the upgrade path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core import cron, pipelines, upgrades
from reconciler.core.desired import assemble
from reconciler.core.plan import Change
from reconciler.core.validate import check_file

HEAD = """apiVersion: ops/v1
kind: Project
slug: acme
workspace_key: acme
name: Acme
odoo_version: "17.0"
workflows:
"""


def problems(workflows: str) -> list[str]:
    result = check_file("p.yaml", HEAD + workflows)
    assert not result.problems, result.problems
    desired, found = assemble(result.resources, set())
    return [str(p) for p in found + pipelines.check(desired)]


def test_valid_needs_by_name_or_type_and_name() -> None:
    assert (
        problems(
            "  - {type: build, name: build}\n"
            "  - {type: test, name: test, needs: [build]}\n"
            "  - {type: deploy, name: prod, needs: [test/test, build]}\n"
        )
        == []
    )


@pytest.mark.parametrize(
    ("workflows", "expected"),
    [
        (
            "  - {type: build, name: build, needs: [nope]}\n",
            "p.yaml:8:39: E160 workflow acme/build/build: needs 'nope', which is no workflow "
            "of project acme (write NAME or TYPE/NAME)",
        ),
        (
            "  - {type: build, name: x}\n  - {type: test, name: x}\n"
            "  - {type: deploy, name: d, needs: [x]}\n",
            "p.yaml:10:36: E160 workflow acme/deploy/d: needs 'x' is ambiguous (build/x, "
            "test/x): write TYPE/NAME",
        ),
        (
            "  - {type: build, name: b, needs: [b]}\n",
            "p.yaml:8:35: E160 workflow acme/build/b: needs itself",
        ),
        (
            "  - {type: build, name: a, needs: [c]}\n  - {type: test, name: b, needs: [a]}\n"
            "  - {type: deploy, name: c, needs: [b]}\n",
            "p.yaml:8:35: E161 workflow acme/build/a: needs form a cycle: build/a -> deploy/c "
            "-> test/b -> build/a",
        ),
        (
            "  - {type: backup, name: n, on: [schedule], schedule: '61 * * * *'}\n",
            "p.yaml:8:55: E162 workflow acme/backup/n: schedule '61 * * * *' is not a valid "
            "cron expression",
        ),
        (
            "  - {type: backup, name: n, on: [schedule], schedule: '0 2 * * * *'}\n",
            "p.yaml:8:55: E162 workflow acme/backup/n: schedule '0 2 * * * *' must have 5 "
            "fields: minute hour day month weekday",
        ),
        (
            "  - {type: backup, name: n, schedule: '0 2 * * *'}\n",
            "p.yaml:8:39: E163 workflow acme/backup/n: schedule is set but `on` does not list "
            "schedule",
        ),
        (
            "  - {type: build, name: n, on: [manual], paths: ['a/**']}\n",
            "p.yaml:8:49: E163 workflow acme/build/n: paths filter pushes, but `on` does not "
            "list push",
        ),
    ],
)
def test_pipeline_problems_point_at_the_value(workflows: str, expected: str) -> None:
    assert problems(workflows) == [expected]


def test_paths_are_refused_on_a_project_with_its_own_code_repository() -> None:
    """Apply resolves such a project's code with `git ls-remote`: it knows the head, not the
    files a push changed, so a `paths` filter would be silently ignored."""
    head = HEAD.replace(
        "workflows:\n", "repository: https://git.example.com/acme.git\nworkflows:\n"
    )
    workflows = "  - {type: build, name: n, on: [push], paths: ['addons/**']}\n"
    result = check_file("p.yaml", head + workflows)
    assert not result.problems, result.problems
    desired, found = assemble(result.resources, set())
    assert [str(p) for p in found + pipelines.check(desired)] == [
        "p.yaml:9:47: E163 workflow acme/build/n: paths cannot filter the pushes of project "
        "acme: its code is in its own repository, of which apply sees only the head; remove "
        "paths"
    ]
    assert problems(workflows) == []  # the same workflow on a project of the state repository


T0 = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)


def test_the_latest_due_slot_and_how_many_were_missed() -> None:
    due = cron.due("*/10 * * * *", None, T0 - timedelta(minutes=45), T0 + timedelta(seconds=5))
    assert due.slot == T0 and due.missed == 4 and due.next == T0 + timedelta(minutes=10)
    assert cron.due("*/10 * * * *", None, T0, T0 + timedelta(minutes=9)).slot is None


def test_a_time_zone_follows_daylight_saving() -> None:
    """02:30 in Brussels is 01:30 UTC in winter, 00:30 UTC in summer. On 29 March 2026 the
    clocks jump from 02:00 to 03:00: the slot that does not exist runs at 03:00 (01:00 UTC)."""
    slots = cron.next_slots("30 2 * * *", "Europe/Brussels", T0 - timedelta(days=1), 3)
    assert [s.strftime("%m-%d %H:%M") for s in slots] == [
        "03-28 01:30",
        "03-29 01:00",
        "03-30 00:30",
    ]
    slots = cron.next_slots("30 2 * * *", None, T0, 1)
    assert slots[0].strftime("%m-%d %H:%M") == "03-29 02:30"


ADVISORIES = [
    upgrades.Advisory("a", "16.0", "17.0", "critical", "before", None),
    upgrades.Advisory("b", "17.0", "18.0", "high", "on the way", None),
    upgrades.Advisory("c", "18.0", "19.0", "critical", "pos", ("point_of_sale",)),
    upgrades.Advisory("d", "19.0", "20.0", "high", "after", None),
]


def test_the_advisories_on_the_way_of_an_upgrade() -> None:
    upgrade = upgrades.Upgrade("acme", "17.0", "19.0", "odoo_version")
    assert [a.key for a in upgrades.on_the_way(upgrade, ADVISORIES, None)] == ["b", "c"]
    assert [a.key for a in upgrades.on_the_way(upgrade, ADVISORIES, ["sale"])] == ["b"]
    down = upgrades.Upgrade("acme", "19.0", "17.0", "odoo_version")
    assert upgrades.on_the_way(down, ADVISORIES, None) == []


def test_enabling_an_upgrade_workflow_passes_the_gate() -> None:
    result = check_file(
        "p.yaml",
        HEAD + "  - {type: upgrade, name: to-19, config: {target_version: '19.0'}}\n",
    )
    desired, _ = assemble(result.resources, set())
    workflow = next(r for r in result.resources if r.kind == "workflow")
    before = {**workflow.fields, "enabled": False}
    change = Change(
        "workflow", workflow.key, "update", ("enabled",), before, workflow.fields, workflow.identity
    )
    shown, refused = upgrades.gate([change], desired, ADVISORIES)
    assert [(a["key"], a["blocking"], a["cause"]) for a in shown] == [
        ("b", True, "acme/upgrade/to-19"),
        ("c", True, "acme/upgrade/to-19"),
    ]
    assert [p.code for p in refused] == ["E170", "E170"]
    assert str(refused[0].source) == "p.yaml:6:15"  # the project's odoo_version
