"""The pure core: YAML positions, schema problems, cross-file checks, diff, runs, render."""

from __future__ import annotations

import datetime
import decimal
import json
import random
import uuid
from typing import Any

import pytest

from reconciler.core import render
from reconciler.core.desired import assemble, clean_across_files, make
from reconciler.core.plan import (
    Change,
    GitContext,
    Indexed,
    Plan,
    Row,
    RunRequest,
    Safety,
    changed_paths,
    diff,
    needs_detail,
    plan_runs,
    refusal,
    resolve_members,
)
from reconciler.core.problems import Source
from reconciler.core.summary import GroupState, combine, stale_groups, summarize
from reconciler.core.validate import check_file
from reconciler.core.yamldoc import parse

PROJECT = """\
apiVersion: ops/v1
kind: Project
slug: acme-erp
workspace_key: acme_erp
name: ACME ERP
odoo_version: "18.0"
config: {tier: standard}
members:
  - {user: Alice@example.com, role: owner}
workflows:
  - type: build
    name: build-main
    git_ref: main
    on: [push]
"""


def problems_of(text: str) -> list[str]:
    return [str(p) for p in check_file("f.yaml", text).problems]


def test_positions_of_values_and_keys() -> None:
    [document], problems = parse("f.yaml", PROJECT)
    assert not problems
    assert str(document.at(("workflows", 0, "name"))) == "f.yaml:12:11"
    assert str(document.key_at(("config",))) == "f.yaml:7:1"
    assert document.value["workflows"][0]["on"] == ["push"]  # not YAML 1.1's True


def test_several_documents_and_empty_ones() -> None:
    documents, _ = parse("f.yaml", "---\na: 1\n---\n---\nb: 2\n")
    assert [d.value for d in documents] == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1\n", "f.yaml:2:1: E100 invalid YAML: did not find expected ',' or ']'"),
        (
            'apiVersion: ops/v1\nkind: Tool\nname: a\nname: b\nversion: "1"\ndocker_image: i\n',
            "f.yaml:4:1: E101 duplicate key 'name' (first at line 3)",
        ),
        (
            "- 1\n",
            "f.yaml:1:1: E102 a document must be a mapping with apiVersion and kind, not array",
        ),
        ("kind: Tool\n", "f.yaml:1:1: E103 apiVersion must be 'ops/v1'; it is missing"),
        (
            "apiVersion: ops/v2\nkind: Tool\n",
            "f.yaml:1:13: E103 apiVersion must be 'ops/v1'; got 'ops/v2'",
        ),
        (
            "apiVersion: ops/v1\n",
            "f.yaml:1:1: E103 kind is missing; one of Project, Workflow, "
            "Membership, Tool, UpgradeAdvisory",
        ),
        (
            "apiVersion: ops/v1\nkind: Widget\n",
            "f.yaml:2:7: E104 unknown kind 'Widget'; one of Project, Workflow, Membership, Tool, "
            "UpgradeAdvisory",
        ),
        (
            PROJECT.replace('"18.0"', "18.0"),
            'f.yaml:6:15: E111 odoo_version: expected string, got number (quote it: "18.0")',
        ),
        (
            PROJECT.replace("slug: acme-erp", "slug: ACME"),
            "f.yaml:3:7: E113 slug: 'ACME' does not match ^[a-z0-9-]+$",
        ),
        (
            PROJECT.replace("type: build", "type: compile"),
            "f.yaml:11:11: E112 workflows.0.type: 'compile' is not one of 'build', 'test', "
            "'deploy', 'backup', 'upgrade'",
        ),
        (PROJECT.replace("name: ACME ERP\n", ""), "f.yaml:1:1: E110 'name' is a required property"),
        (PROJECT + "colour: blue\n", "f.yaml:15:1: E114 unknown field 'colour'"),
        (
            PROJECT.replace("    on: [push]", "    on: [push]\n    retries: 3"),
            "f.yaml:15:5: E114 workflows.0: unknown field 'retries'",
        ),
    ],
)
def test_problem_lines(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_every_problem_of_a_file_is_reported() -> None:
    text = PROJECT.replace('"18.0"', "18").replace("slug: acme-erp", "slug: Bad_Slug")
    assert [p.split(": ")[1].split()[0] for p in problems_of(text)] == ["E113", "E111"]


def resources(*texts: str) -> list[Any]:
    found = []
    for i, text in enumerate(texts):
        result = check_file(f"f{i}.yaml", text)
        assert not result.problems, result.problems
        found += result.resources
    return found


WORKFLOW = """\
apiVersion: ops/v1
kind: Workflow
project: acme-erp
type: build
name: build-main
"""


def test_project_brings_its_inline_resources() -> None:
    state, problems = assemble(resources(PROJECT), set())
    assert not problems
    assert [r.key for r in state.resources.values()] == [
        "acme-erp",
        "acme-erp/build/build-main",
        "acme-erp/Alice@example.com",
    ]


def test_inline_and_standalone_definition_is_reported_with_both_places() -> None:
    _, problems = assemble(resources(PROJECT, WORKFLOW), set())
    assert [str(p) for p in problems] == [
        "f1.yaml:1:1: E121 workflow acme-erp/build/build-main is already defined at f0.yaml:11:5"
    ]


def test_duplicate_across_files() -> None:
    _, problems = assemble(resources(PROJECT, PROJECT), set())
    assert {p.code for p in problems} == {"E120"}
    assert len(problems) == 3  # the project, its workflow and its member


def test_unknown_project_unless_the_database_has_it() -> None:
    orphan = WORKFLOW.replace("acme-erp", "ghost")
    _, problems = assemble(resources(orphan), set())
    assert [str(p) for p in problems] == [
        "f0.yaml:3:10: E122 workflow ghost/build/build-main: project 'ghost' is neither in the "
        "files nor in the database"
    ]
    assert assemble(resources(orphan), {"ghost"})[1] == []


def test_members_resolve_to_user_ids_case_insensitively() -> None:
    state, _ = assemble(resources(PROJECT), set())
    resolved, new, problems = resolve_members(
        state, {"alice@example.com": "u-1"}, create_missing=False
    )
    assert not new and not problems
    assert ("membership", ("acme-erp", "u-1")) in resolved.resources
    _, _, problems = resolve_members(state, {}, create_missing=False)
    assert [str(p) for p in problems] == [
        "f0.yaml:9:12: E130 membership acme-erp/Alice@example.com: no user "
        "'alice@example.com' in auth.users"
    ]
    _, new, problems = resolve_members(state, {}, create_missing=True)
    assert new == ["alice@example.com"] and not problems


@pytest.mark.parametrize(
    ("before", "after", "paths"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, ["a"]),
        ({"config": {"tier": "a", "x": 1}}, {"config": {"tier": "b", "x": 1}}, ["config.tier"]),
        ({"config": {}}, {"config": {"new": {"deep": 1}}}, ["config.new"]),
        ({"a": 1}, {"a": 1.0}, ["a"]),
        ({"a": True}, {"a": 1}, ["a"]),
        ({"l": [1, 2]}, {"l": [2, 1]}, ["l"]),
    ],
)
def test_changed_paths(before: Any, after: Any, paths: list[str]) -> None:
    assert changed_paths(before, after) == paths


def rows_for(state: Any, managed: bool = True, **overrides: Any) -> dict[Any, Row]:
    return {
        slot: Row(
            r.kind,
            r.identity,
            f"id-{r.key}",
            {**r.fields, **overrides.get(r.kind, {})},
            managed,
            r.key,
        )
        for slot, r in state.resources.items()
    }


def diff_of(state: Any, rows: dict[Any, Row]) -> list[Change]:
    """The diff when the index knows no spec_hash: every existing row is compared in full."""
    index = {slot: Indexed(row.id, "an older digest", row.managed) for slot, row in rows.items()}
    return diff(state, index, {s: rows[s] for s in needs_detail(state, index)})


def test_rows_whose_spec_hash_matches_are_not_read_again() -> None:
    state, _ = assemble(resources(PROJECT), set())
    index = {
        slot: Indexed(f"id-{i}", r.digest, True)
        for i, (slot, r) in enumerate(state.resources.items())
    }
    assert needs_detail(state, index) == []
    assert diff(state, index, {}) == []
    stale = {**index, ("project", ("acme-erp",)): Indexed("id-0", "other", True)}
    assert needs_detail(state, stale) == [("project", ("acme-erp",))]


def test_diff_actions() -> None:
    state, _ = assemble(resources(PROJECT), set())
    assert diff_of(state, rows_for(state)) == []
    changed = diff_of(state, rows_for(state, project={"name": "Old"}))
    assert [(c.action, c.key, c.paths) for c in changed] == [("update", "acme-erp", ("name",))]
    assert {c.action for c in diff_of(state, rows_for(state, managed=False))} == {"adopt"}
    assert {c.action for c in diff_of(state, {})} == {"create"}


def test_removal_archives_disables_deletes() -> None:
    state, _ = assemble(resources(PROJECT), set())
    empty, _ = assemble([], set())
    pruned = diff_of(empty, rows_for(state))
    assert [(c.kind, c.action) for c in pruned] == [
        ("project", "archive"),
        ("workflow", "disable"),
        ("membership", "delete"),
    ]
    already = rows_for(state, project={"status": "archived"}, workflow={"enabled": False})
    assert [c.kind for c in diff_of(empty, already)] == ["membership"]
    unmanaged = rows_for(state, managed=False)
    assert diff_of(empty, unmanaged) == []  # never touches what it does not manage


def run_entries(state: Any) -> Any:
    return combine([summarize(state.resources.values(), has_problems=False)])[1]


def test_runs_follow_branch_commit_and_cleanliness() -> None:
    state, _ = assemble(resources(PROJECT), set())
    entries = run_entries(state)
    clean = GitContext("a" * 40, "main", clean=True)
    [run] = plan_runs(entries, clean, set())
    assert run.action == "enqueue"
    assert run.idempotency_key == f"push:{'a' * 40}:acme-erp/build/build-main"
    assert plan_runs(entries, clean, {run.idempotency_key})[0].action == "exists"
    [other] = plan_runs(entries, GitContext("a" * 40, "dev", clean=True), set())
    assert (other.action, other.reason) == ("skip", "runs on pushes to main, this is dev")
    dirty = GitContext("a" * 40, "main", clean=False, reason="uncommitted changes")
    assert plan_runs(entries, dirty, set())[0] == RunRequest(
        "acme-erp",
        "acme-erp/build/build-main",
        ("acme-erp", "build", "build-main"),
        None,
        "skip",
        "uncommitted changes",
    )


def change(action: str, key: str = "x") -> Change:
    return Change("tool", key, action, (), {}, {}, (key,))


@pytest.mark.parametrize(
    ("changes", "kept", "safety", "refused"),
    [
        ([change("adopt")], 0, Safety(), "--adopt"),
        ([change("adopt")], 0, Safety(adopt=True), None),
        ([change("delete")], 0, Safety(), "--allow-prune-all"),
        ([change("delete")], 0, Safety(allow_prune_all=True), None),
        ([change("delete")], 1, Safety(), None),
        ([change("delete", "a"), change("delete", "b")], 5, Safety(max_prune=1), "--max-prune"),
        ([change("delete", "a")], 5, Safety(max_prune=1), None),
    ],
)
def test_refusals(changes: list[Change], kept: int, safety: Safety, refused: str | None) -> None:
    reason = refusal(Plan(tuple(changes), (), None, None), kept, safety)
    assert (reason is None) if refused is None else (refused in (reason or ""))


def test_json_plan_has_the_contract_shape() -> None:
    state, _ = assemble(resources(PROJECT), set())
    runs = plan_runs(run_entries(state), GitContext("c" * 40, "main", clean=True), set())
    plan = Plan(
        tuple(diff_of(state, rows_for(state, project={"config": {"tier": "old"}}))),
        tuple(runs),
        "c" * 40,
        "main",
        database="postgres@db.example:5432/ops",
    )
    document = json.loads(render.to_json(plan))
    assert document["format_version"] == "1" and document["changes_present"] is True
    assert document["database"] == "postgres@db.example:5432/ops"
    assert document["summary"] == {
        "create": 0,
        "update": 1,
        "delete": 0,
        "archive": 0,
        "disable": 0,
        "adopt": 0,
        "runs": 1,
        "drift": 0,
    }
    assert document["changes"][0]["fields"] == ["config.tier"]
    assert document["runs"][0]["action"] == "enqueue"


def test_text_plan_shows_field_changes() -> None:
    state, _ = assemble(resources(PROJECT), set())
    plan = Plan(
        tuple(diff_of(state, rows_for(state, project={"config": {"tier": "old"}}))), (), None, None
    )
    assert render.to_text(plan).splitlines() == [
        "  ~ project acme-erp",
        '      config.tier: "old" -> "standard"',
        "",
        "Plan: 1 to update, 0 run(s) to enqueue.",
    ]


def test_markdown_stays_under_the_comment_limit() -> None:
    changes = tuple(change("create", f"tool-{i:05d}@1.0") for i in range(20_000))
    text = render.to_markdown(Plan(changes, (), "d" * 40, "main"))
    assert len(text) < render.MARKDOWN_LIMIT
    assert "more line(s), not shown" in text and "20000 to create" in text


def test_summaries_add_up_whatever_the_file_order() -> None:
    [one, two] = [
        summarize(resources(text), has_problems=False)
        for text in (PROJECT, WORKFLOW.replace("build-main", "nightly"))
    ]
    assert combine([one, two])[0] == combine([two, one])[0]
    assert set(combine([one, two])[0]) == {"acme-erp"}


@pytest.mark.parametrize(
    ("actual", "stale"),
    [
        ({"p": GroupState(5, 0, 3)}, set()),
        ({"p": GroupState(4, 0, 3)}, {"p"}),  # a row differs
        ({"p": GroupState(5, 1, 3)}, {"p"}),  # a row was edited outside reconcile
        ({}, {"p"}),  # new project
        ({"p": GroupState(5, 0, 3), "gone": GroupState(7, 0, 2)}, {"gone"}),  # to prune
        ({"p": GroupState(5, 0, 3), "pruned": GroupState(0, 0, 2)}, set()),  # already pruned
    ],
)
def test_stale_groups(actual: dict[str, GroupState], stale: set[str]) -> None:
    assert stale_groups({"p": 5}, actual) == stale


def test_markdown_of_a_ten_thousand_project_change_fits_one_comment() -> None:
    kinds = [("project", 1), ("workflow", 5), ("membership", 10)]
    changes = tuple(
        Change(
            kind,
            f"fleet-{i:05d}/{kind}-{k}",
            "update",
            ("config.tier",),
            {"config": {"tier": "standard"}},
            {"config": {"tier": "premium"}},
            (str(i),),
        )
        for i in range(10_000)
        for kind, n in kinds
        for k in range(n)
    )
    text = render.to_markdown(Plan(changes, (), "e" * 40, "main"))
    assert len(changes) == 160_000 and len(text) < render.MARKDOWN_LIMIT
    assert "160000 to update" in text and "more line(s), not shown" in text


def test_the_slot_check_agrees_with_assemble() -> None:
    """validate skips loading resources when the slots alone show nothing across files:
    that must be exactly when `assemble` finds no problem."""
    rng = random.Random(12)
    where = Source("f.yaml")
    kinds = {
        "project": lambda: (rng.choice("ab"),),
        "workflow": lambda: (rng.choice("abc"), "build", rng.choice("xy")),
        "membership": lambda: (rng.choice("abc"), rng.choice("uv")),
        "tool": lambda: ("odoo", rng.choice(["17.0", "18.0"])),
    }
    outcomes = set()
    for _ in range(400):
        resources = [
            make(kind, kinds[kind](), {}, where, inline=rng.random() < 0.5)
            for kind in rng.choices(list(kinds), k=rng.randint(0, 6))
        ]
        _, problems = assemble(resources, known_projects=set())
        clean = clean_across_files((r.kind, r.identity) for r in resources)
        assert clean == (problems == [])
        outcomes.add(clean)
    assert outcomes == {True, False}


def test_json_output_is_the_text_json_dumps_writes() -> None:
    """render.dumps (orjson) writes what json.dumps(indent=2, default=str) wrote: ASCII with
    every other character escaped (terminal controls, bidi overrides, astral characters),
    keys of any type, UUIDs, datetimes, decimals; json itself where orjson cannot."""
    document: dict[Any, Any] = {
        "text": 'x\x00\x08\t\n\x1b\x1f\x7f\x80\x9b é \u202e 😀 "\\ /',
        "values": [1, 2.5, -0.0, True, None, [], {}, (1, "a")],
        3: {None: 1, True: 2, 1.5: 3},
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "at": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        "amount": decimal.Decimal("1.50"),
    }
    assert render.dumps(document) == json.dumps(document, indent=2, default=str)
    huge = {"n": 10**30, "lone surrogate": "\ud800"}
    assert render.dumps(huge) == json.dumps(huge, indent=2, default=str)
