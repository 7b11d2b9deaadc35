"""A corpus of broken inputs: each gives its FILE:LINE:COL: CODE line, exit 1, no traceback,
and writes nothing to the database (checked on a database that looks like Supabase's, where
unknown users are errors)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.cli import main
from tests.helpers import scalar

PROJECT = """\
apiVersion: ops/v1
kind: Project
slug: corpus-app
workspace_key: corpus_app
name: Corpus App
odoo_version: "18.0"
status: active
config: {tier: dev}
members:
  - {user: alice@acme.example, role: owner}
workflows:
  - type: build
    name: build-main
    git_ref: main
    on: [push]
    enabled: true
    config: {steps: ["make"], timeout_s: 60}
""".splitlines()

TOOL = """\
apiVersion: ops/v1
kind: Tool
name: odoo
version: "18.0"
docker_image: odoo:18.0
config: {workers: 2}
""".splitlines()

ADVISORY = """\
apiVersion: ops/v1
kind: UpgradeAdvisory
key: odoo-17-18-stock
from_version: "17.0"
to_version: "18.0"
severity: high
title: Stock moves changed
description: Check custom stock code.
migration_guide: https://example.com/guide
affects_modules: [stock]
""".splitlines()

WORKFLOW = """\
apiVersion: ops/v1
kind: Workflow
project: corpus-app
type: test
name: nightly
git_ref: main
on: [push]
config: {steps: ["make test"]}
""".splitlines()

MEMBERSHIP = """\
apiVersion: ops/v1
kind: Membership
project: corpus-app
user: bob@acme.example
role: developer
""".splitlines()

BASES = {
    "project": PROJECT,
    "tool": TOOL,
    "advisory": ADVISORY,
    "workflow": WORKFLOW,
    "membership": MEMBERSHIP,
}


def replaced(base: str, line: int, text: str | None) -> str:
    """The base document with line `line` (1-based) replaced (or removed when text is None)."""
    lines = list(BASES[base])
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    return "\n".join(lines) + "\n"


# (id, base, line replaced, new text, expected line, expected code)
MUTATIONS: list[tuple[str, str, int, str | None, int, str]] = [
    # wrong types
    ("odoo-version-number", "project", 6, "odoo_version: 18.0", 6, "E111"),
    ("odoo-version-int", "project", 6, "odoo_version: 18", 6, "E111"),
    ("name-number", "project", 5, "name: 42", 5, "E111"),
    ("name-list", "project", 5, "name: [a, b]", 5, "E111"),
    ("name-null", "project", 5, "name:", 5, "E111"),
    ("slug-number", "project", 3, "slug: 123", 3, "E111"),
    ("slug-bool", "project", 3, "slug: yes", 3, "E111"),
    ("config-string", "project", 8, "config: tier=dev", 8, "E111"),
    ("config-list", "project", 8, "config: [tier]", 8, "E111"),
    ("members-mapping", "project", 9, "members: {alice: owner}", 10, "E100"),
    ("workflows-string", "project", 11, "workflows: build", 12, "E100"),
    ("enabled-string", "project", 16, "    enabled: maybe", 16, "E111"),
    ("timeout-string", "project", 17, '    config: {steps: ["make"], timeout_s: "60"}', 17, "E111"),
    ("steps-string", "project", 17, "    config: {steps: make, timeout_s: 60}", 17, "E111"),
    ("git-ref-number", "project", 14, "    git_ref: 17", 14, "E111"),
    ("on-string", "project", 15, "    on: push", 15, "E111"),
    ("tool-version-number", "tool", 4, "version: 18.0", 4, "E111"),
    ("tool-config-string", "tool", 6, "config: workers=2", 6, "E111"),
    ("tool-image-number", "tool", 5, "docker_image: 18", 5, "E111"),
    ("advisory-modules-string", "advisory", 10, "affects_modules: stock", 10, "E111"),
    ("advisory-from-number", "advisory", 4, "from_version: 17.0", 4, "E111"),
    ("advisory-title-list", "advisory", 7, "title: [a]", 7, "E111"),
    ("workflow-config-list", "workflow", 8, "config: [make]", 8, "E111"),
    ("membership-user-number", "membership", 4, "user: 12345", 4, "E111"),
    ("date-as-version", "tool", 4, "version: 2024-01-01", 4, "E111"),
    # values not allowed
    ("status-unknown", "project", 7, "status: deleted", 7, "E112"),
    ("workflow-type-unknown", "project", 12, "  - type: compile", 12, "E112"),
    ("member-role-unknown", "project", 10, "  - {user: alice@acme.example, role: god}", 10, "E112"),
    ("on-unknown-event", "project", 15, "    on: [schedule]", 15, "E112"),
    ("severity-unknown", "advisory", 6, "severity: urgent", 6, "E112"),
    ("severity-case", "advisory", 6, "severity: High", 6, "E112"),
    ("standalone-type-unknown", "workflow", 4, "type: lint", 4, "E112"),
    ("membership-role-case", "membership", 5, "role: Developer", 5, "E112"),
    ("wrong-kind-for-fields", "tool", 2, "kind: UpgradeAdvisory", 1, "E110"),
    # formats
    ("slug-uppercase", "project", 3, "slug: Corpus-App", 3, "E113"),
    ("slug-space", "project", 3, "slug: corpus app", 3, "E113"),
    ("slug-underscore", "project", 3, "slug: corpus_app", 3, "E113"),
    ("slug-sql", "project", 3, 'slug: "x\'; drop table ops.projects; --"', 3, "E113"),
    ("slug-sql-comment", "project", 3, "slug: a--b/*c*/", 3, "E113"),
    ("workspace-hyphen", "project", 4, "workspace_key: corpus-app", 4, "E113"),
    ("workspace-sql", "project", 4, 'workspace_key: "a; delete from ops.runs"', 4, "E113"),
    ("odoo-version-text", "project", 6, 'odoo_version: "latest"', 6, "E113"),
    ("odoo-version-three", "project", 6, 'odoo_version: "18.0.1"', 6, "E113"),
    ("member-not-email", "project", 10, "  - {user: alice, role: owner}", 10, "E113"),
    ("member-sql", "project", 10, '  - {user: "a\' or 1=1 --", role: owner}', 10, "E113"),
    ("workflow-name-slash", "project", 13, "    name: build/main", 13, "E113"),
    (
        "workflow-name-sql",
        "project",
        13,
        '    name: "x\'); drop table ops.workflows;--"',
        13,
        "E113",
    ),
    ("tool-name-upper", "tool", 3, "name: Odoo", 3, "E113"),
    ("tool-image-space", "tool", 5, "docker_image: odoo 18", 5, "E113"),
    ("advisory-key-upper", "advisory", 3, "key: Odoo-17", 3, "E113"),
    ("advisory-key-sql", "advisory", 3, 'key: "k\'; truncate ops.tools; --"', 3, "E113"),
    ("advisory-to-version", "advisory", 5, 'to_version: "eighteen"', 5, "E113"),
    ("membership-project-upper", "membership", 3, "project: Corpus", 3, "E113"),
    ("workflow-project-space", "workflow", 3, "project: corpus app", 3, "E113"),
    (
        "membership-user-sql",
        "membership",
        4,
        'user: "bob@x.y\'; drop table auth.users;--"',
        4,
        "E113",
    ),
    ("empty-name", "project", 5, 'name: ""', 5, "E115"),
    ("timeout-zero", "project", 17, '    config: {steps: ["make"], timeout_s: 0}', 17, "E115"),
    ("empty-step", "project", 17, '    config: {steps: [""], timeout_s: 60}', 17, "E115"),
    ("duplicate-on", "project", 15, "    on: [push, push]", 15, "E115"),
    ("advisory-empty-description", "advisory", 8, 'description: ""', 8, "E115"),
    ("long-slug", "project", 3, "slug: " + "a" * 64, 3, "E115"),
    # unknown fields
    ("project-unknown-field", "project", 7, "statuses: active", 7, "E114"),
    ("workflow-unknown-field", "project", 16, "    enable: true", 16, "E114"),
    (
        "member-unknown-field",
        "project",
        10,
        "  - {user: alice@acme.example, role: owner, x: 1}",
        10,
        "E114",
    ),
    ("tool-unknown-field", "tool", 6, "image: odoo", 6, "E114"),
    ("advisory-unknown-field", "advisory", 9, "guide: https://x", 9, "E114"),
    ("standalone-workflow-unknown", "workflow", 6, "branch: main", 6, "E114"),
    ("membership-unknown", "membership", 5, "roles: [developer]", 5, "E114"),
    ("typo-odoo-version", "project", 6, 'odoo-version: "18.0"', 1, "E110"),
    # missing fields
    ("missing-slug", "project", 3, None, 1, "E110"),
    ("missing-workspace", "project", 4, None, 1, "E110"),
    ("missing-name", "project", 5, None, 1, "E110"),
    ("missing-version", "project", 6, None, 1, "E110"),
    ("missing-workflow-type", "project", 12, "  - name: x", 12, "E110"),
    ("missing-tool-image", "tool", 5, None, 1, "E110"),
    ("missing-tool-version", "tool", 4, None, 1, "E110"),
    ("missing-advisory-severity", "advisory", 6, None, 1, "E110"),
    ("missing-advisory-key", "advisory", 3, None, 1, "E110"),
    ("missing-workflow-project", "workflow", 3, None, 1, "E110"),
    ("missing-membership-role", "membership", 5, None, 1, "E110"),
    ("missing-membership-user", "membership", 4, None, 1, "E110"),
    # headers and kinds
    ("missing-api-version", "tool", 1, None, 1, "E103"),
    ("wrong-api-version", "tool", 1, "apiVersion: ops/v2", 1, "E103"),
    ("api-version-k8s", "tool", 1, "apiVersion: apps/v1", 1, "E103"),
    ("missing-kind", "tool", 2, None, 1, "E103"),
    ("kind-lowercase", "tool", 2, "kind: tool", 2, "E104"),
    ("kind-unknown", "tool", 2, "kind: Deployment", 2, "E104"),
    ("kind-typo", "project", 2, "kind: Projekt", 2, "E104"),
    ("kind-number", "tool", 2, "kind: 7", 2, "E104"),
    # duplicate keys
    ("duplicate-slug-key", "project", 4, "slug: corpus-app", 4, "E101"),
    ("duplicate-name-key", "tool", 4, "name: odoo", 4, "E101"),
    ("duplicate-severity", "advisory", 7, "severity: low", 7, "E101"),
    ("duplicate-role", "membership", 5, "role: viewer\nrole: admin", 6, "E101"),
    ("duplicate-inline-key", "project", 14, "    name: again", 14, "E101"),
    # YAML syntax
    ("unclosed-flow", "project", 8, "config: {tier: dev", 9, "E100"),
    ("unclosed-list", "project", 15, "    on: [push", 16, "E100"),
    ("unclosed-quote", "project", 6, 'odoo_version: "18.0', 17, "E100"),
    ("bad-indent", "project", 13, "   name: build-main", 13, "E100"),
    ("tab-indent", "project", 13, "\tname: build-main", 13, "E100"),
    ("stray-colon", "tool", 5, "docker_image: odoo:18.0: x", 5, "E100"),
    ("unknown-alias", "tool", 6, "config: *workers", 6, "E100"),
    ("bad-anchor-block", "tool", 3, "name: [odoo", 4, "E100"),
    ("mapping-in-scalar", "tool", 3, "name: a: b", 3, "E100"),
    ("dash-at-top", "tool", 3, "- name: odoo", 3, "E100"),
]

# Whole files, for what a single line cannot show: (id, {file: text}, file, line, code)
FILES: list[tuple[str, dict[str, str], str, int, str]] = [
    ("not-a-mapping-list", {"bad.yaml": "- a\n- b\n"}, "bad.yaml", 1, "E102"),
    ("not-a-mapping-scalar", {"bad.yaml": "just text\n"}, "bad.yaml", 1, "E102"),
    ("not-a-mapping-number", {"bad.yaml": "42\n"}, "bad.yaml", 1, "E102"),
    ("second-document-bad", {"bad.yaml": "\n".join(TOOL) + "\n---\n- x\n"}, "bad.yaml", 8, "E102"),
    (
        "duplicate-project-files",
        {"a.yaml": "\n".join(PROJECT) + "\n", "b.yaml": "\n".join(PROJECT) + "\n"},
        "b.yaml",
        1,
        "E120",
    ),
    (
        "duplicate-tool-in-file",
        {"t.yaml": "\n".join(TOOL) + "\n---\n" + "\n".join(TOOL) + "\n"},
        "t.yaml",
        8,
        "E120",
    ),
    (
        "duplicate-advisory",
        {"a.yaml": "\n".join(ADVISORY) + "\n", "z.yaml": "\n".join(ADVISORY) + "\n"},
        "z.yaml",
        1,
        "E120",
    ),
    (
        "inline-and-standalone-workflow",
        {
            "p.yaml": "\n".join(PROJECT) + "\n",
            "w.yaml": "\n".join(WORKFLOW)
            .replace("type: test", "type: build")
            .replace("name: nightly", "name: build-main")
            + "\n",
        },
        "w.yaml",
        1,
        "E121",
    ),
    (
        "inline-and-standalone-member",
        {
            "p.yaml": "\n".join(PROJECT) + "\n",
            "m.yaml": "\n".join(MEMBERSHIP).replace("bob@", "alice@") + "\n",
        },
        "p.yaml",
        10,
        "E121",
    ),
    ("dangling-workflow", {"w.yaml": "\n".join(WORKFLOW) + "\n"}, "w.yaml", 3, "E122"),
    ("dangling-membership", {"m.yaml": "\n".join(MEMBERSHIP) + "\n"}, "m.yaml", 3, "E122"),
    (
        "unknown-user-inline",
        {"p.yaml": replaced("project", 10, "  - {user: nobody@acme.example, role: owner}")},
        "p.yaml",
        10,
        "E130",
    ),
    (
        "unknown-user-uuid",
        {
            "p.yaml": replaced(
                "project", 10, "  - {user: 00000000-0000-4000-8000-000000000000, role: owner}"
            )
        },
        "p.yaml",
        10,
        "E130",
    ),
    (
        "unknown-user-standalone",
        {
            "p.yaml": "\n".join(PROJECT) + "\n",
            "m.yaml": "\n".join(MEMBERSHIP).replace("bob@", "zed@") + "\n",
        },
        "m.yaml",
        4,
        "E130",
    ),
    ("not-utf8", {"bin.yaml": "name: caf\udce9\n"}, "bin.yaml", 1, "E150"),
]

LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>[EW]\d{3}) .+$")


@pytest.fixture(scope="module")
def supabase_like_db(module_db_url: str) -> Iterator[str]:
    with psycopg.connect(module_db_url) as conn:
        conn.execute("comment on schema auth is 'Supabase auth'")
        conn.execute(
            "insert into auth.users (email) values ('alice@acme.example'), ('bob@acme.example')"
        )
    yield module_db_url


def rows_everywhere(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(
            scalar(
                conn,
                """
            select (select count(*) from ops.projects) + (select count(*) from ops.workflows)
                 + (select count(*) from ops.project_memberships) + (select count(*) from ops.tools)
                 + (select count(*) from ops.upgrade_advisories) + (select count(*) from ops.runs)
                 + (select count(*) from ops.reconcile_applies)""",
            )
        )


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("utf-8", errors="surrogateescape"))


def apply_and_check(folder: Path, url: str, capsys: Any, file: str, line: int, code: str) -> None:
    code_returned = main(["apply", "--yes", "-C", str(folder), "--database-url", url, "--no-cache"])
    captured = capsys.readouterr()
    assert code_returned == 1
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("error: ") and "nothing was written" in lines[-1]
    problems = [LINE.match(text) for text in lines[:-1]]
    assert problems and all(problems), captured.err
    assert any(
        p["file"] == file and int(p["line"]) == line and p["code"] == code for p in problems if p
    ), captured.err
    assert rows_everywhere(url) == 0


@pytest.mark.parametrize(
    ("base", "at", "text", "line", "code"),
    [m[1:] for m in MUTATIONS],
    ids=[m[0] for m in MUTATIONS],
)
def test_broken_line(
    tmp_path: Path,
    supabase_like_db: str,
    capsys: Any,
    base: str,
    at: int,
    text: str | None,
    line: int,
    code: str,
) -> None:
    files = {"case.yaml": replaced(base, at, text)}
    if base in ("workflow", "membership"):
        files["base.yaml"] = "\n".join(PROJECT) + "\n"
    write(tmp_path / "state", files)
    apply_and_check(tmp_path / "state", supabase_like_db, capsys, "case.yaml", line, code)


@pytest.mark.parametrize(
    ("files", "file", "line", "code"), [f[1:] for f in FILES], ids=[f[0] for f in FILES]
)
def test_broken_files(
    tmp_path: Path,
    supabase_like_db: str,
    capsys: Any,
    files: dict[str, str],
    file: str,
    line: int,
    code: str,
) -> None:
    write(tmp_path / "state", files)
    apply_and_check(tmp_path / "state", supabase_like_db, capsys, file, line, code)


@pytest.mark.parametrize(
    ("files", "file", "line", "code"),
    [f[1:] for f in FILES if f[4] != "E130"],  # users are checked against the database
    ids=[f[0] for f in FILES if f[4] != "E130"],
)
def test_validate_reports_the_same_problems_from_a_warm_cache(
    tmp_path: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    file: str,
    line: int,
    code: str,
) -> None:
    """validate skips loading the resources when the slots show nothing across files; from a
    cache (the second run) the problems must be the same as from a parse."""
    write(tmp_path / "state", files)
    monkeypatch.setenv("RECONCILE_CACHE_DIR", str(tmp_path / "cache"))
    said = []
    for _ in range(2):
        assert main(["validate", "-C", str(tmp_path / "state")]) == 1
        said.append(capsys.readouterr().err)
    assert said[0] == said[1]
    found = [LINE.match(text) for text in said[0].strip().splitlines()[:-1]]
    assert any(
        p["file"] == file and int(p["line"]) == line and p["code"] == code for p in found if p
    ), said[0]


def test_the_corpus_is_large_enough() -> None:
    assert len(MUTATIONS) + len(FILES) >= 100
