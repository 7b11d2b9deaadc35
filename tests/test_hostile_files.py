"""Hostile files: what a pull request may put in the state directory to crash, hang, exhaust or
fool reconcile. Each case runs the real `reconcile apply` in a subprocess bounded in address
space (RLIMIT_AS) and CPU time, with a timeout, and must give exactly its expected
`FILE:LINE:COL: CODE` lines (one per problem, each one line), exit 1, no traceback, and write
nothing to the database. The limits themselves are docs/errors.md's (core/limits.py)."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from reconciler.core import limits
from tests.gitrepo import Repo
from tests.test_broken_inputs import PROJECT, replaced, rows_everywhere

pytestmark = pytest.mark.slow

MEMORY_LIMIT = 512 * 1024 * 1024  # address space of one reconcile run, in bytes
CPU_LIMIT_S = 60
TIMEOUT_S = 90
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<code>E\d{3}) \S.*$")


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Fifo:
    pass


@dataclass(frozen=True)
class Sock:
    pass


Content = str | bytes | Link | Fifo | Sock


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, Content]
    expected: tuple[tuple[str, int, str], ...]  # every problem line: (file, line, code)
    contains: str = ""  # a text the problem lines must show
    base: bool = False  # add the base project (for workflows and memberships)
    extra: dict[str, Content] = field(default_factory=dict)


def one(
    document: str, line: int, text: str, at: int, code: str, contains: str = "", base: bool = False
) -> Case:
    """A case from one line of a base document (its id is given by `named`)."""
    files: dict[str, Content] = {"case.yaml": replaced(document, line, text)}
    return Case("", files, (("case.yaml", at, code),), contains, base)


def named(name: str, case: Case) -> Case:
    return Case(name, case.files, case.expected, case.contains, case.base, case.extra)


def bomb(levels: int, width: int, flow_map: bool = False) -> str:
    """The billion laughs: each level repeats the one before `width` times."""
    if flow_map:
        lines = ["  l0: &l0 {" + ", ".join(f"k{j}: lol" for j in range(width)) + "}"]
        for i in range(1, levels):
            lines.append(
                f"  l{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(width)) + "}"
            )
    else:
        lines = ["  l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
        for i in range(1, levels):
            lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "config:\n" + "\n".join(lines)


TOOL_HEAD = 'apiVersion: ops/v1\nkind: Tool\nname: odoo\nversion: "18.0"\ndocker_image: odoo\n'
E100, E101, E104, E105, E106, E111, E113 = "E100", "E101", "E104", "E105", "E106", "E111", "E113"
E103, E112, E114, E150, E151 = "E103", "E112", "E114", "E150", "E151"

CASES: list[Case] = [
    # --- limits: what one file may cost ---------------------------------------------------
    named("alias-bomb-9x9", one("tool", 6, bomb(9, 9), 12, E106)),
    named("alias-bomb-maps", one("tool", 6, bomb(9, 9, flow_map=True), 12, E106)),
    named("alias-bomb-wide", one("tool", 6, bomb(3, 1000), 8, E106)),
    named(
        "too-many-aliases",
        one("tool", 6, "config: {a: &a x, b: [" + ", ".join(["*a"] * 10_001) + "]}", 6, E106),
    ),
    named("deep-flow-lists", one("tool", 6, "config: " + "[" * 5000 + "]" * 5000, 6, E106)),
    named("deep-flow-maps", one("tool", 6, "config: " + "{a: " * 5000 + "1" + "}" * 5000, 6, E106)),
    named(
        "deep-block-maps",
        Case(
            "",
            {"case.yaml": TOOL_HEAD + "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "x\n"},
            (("case.yaml", 70, E106),),
        ),
    ),
    named(
        "deep-in-list-of-lists",
        one("tool", 6, "config: {a: " + "- " * 0 + "[" * 70 + "]" * 70 + "}", 6, E106),
    ),
    named(
        "too-many-values",
        one("tool", 6, "config: {a: [" + ",".join(["0"] * 260_000) + "]}", 6, E106),
    ),
    named(
        "too-many-documents",
        Case("", {"case.yaml": "--- {}\n" * 260_000}, (("case.yaml", 250_001, E106),)),
    ),
    named(
        "file-too-large",
        Case(
            "",
            {"case.yaml": TOOL_HEAD + "#" * limits.MAX_FILE_BYTES + "\n"},
            (("case.yaml", 1, E106),),
        ),
    ),
    # --- aliases that never end -----------------------------------------------------------
    named("recursive-alias-map", one("tool", 6, "config: &c {self: *c}", 6, E105)),
    named("recursive-alias-list", one("tool", 6, "config: {a: &l [1, *l]}", 6, E105)),
    named(
        "recursive-alias-document",
        Case(
            "",
            {"case.yaml": "&d\n" + TOOL_HEAD + "config: {again: *d}\n"},
            (("case.yaml", 7, E105),),
        ),
    ),
    named("recursive-alias-deep", one("tool", 6, "config: &c {a: {b: [{c: *c}]}}", 6, E105)),
    named("alias-to-map-as-key", one("tool", 6, "config: {a: &m {x: 1}, *m : 2}", 6, E105)),
    # --- tags JSON has no type for --------------------------------------------------------
    named("tag-ref", one("tool", 3, "name: !Ref OdooName", 3, E105)),
    named("tag-getatt", one("tool", 6, "config: {x: !GetAtt a.b}", 6, E105)),
    named("tag-python-name", one("tool", 6, "config:\n  x: !!python/name:os.system", 7, E105)),
    named(
        "tag-python-apply",
        one("tool", 6, "config: {x: !!python/object/apply:os.system [id]}", 6, E105),
    ),
    named("tag-python-object", one("tool", 6, "config: !!python/object:os.X {a: 1}", 6, E105)),
    named("tag-binary", one("tool", 6, "config: {x: !!binary aGVsbG8=}", 6, E105)),
    named("tag-set", one("tool", 6, "config: !!set {a, b}", 6, E105)),
    named("tag-omap", one("tool", 6, "config: {x: !!omap [{a: 1}]}", 6, E105)),
    named("tag-pairs", one("tool", 6, "config: {x: !!pairs [{a: 1}]}", 6, E105)),
    named("tag-timestamp", one("tool", 6, "config: {x: !!timestamp 2024-01-01}", 6, E105)),
    named("tag-verbatim", one("tool", 6, "config: {x: !<tag:example.com,2000:foo> bar}", 6, E105)),
    named("tag-on-kind", one("tool", 2, "kind: !Tool Tool", 2, E105)),
    named("tag-on-key", one("tool", 6, "config: {!Ref x: 1}", 6, E105)),
    named(
        "tag-directive",
        Case(
            "",
            {
                "case.yaml": "%TAG !e! tag:example.com,2000:\n---\n"
                + TOOL_HEAD
                + "config: !e!x {}\n"
            },
            (("case.yaml", 8, E105),),
        ),
    ),
    # --- values JSON has no type for ------------------------------------------------------
    named("date-in-config", one("tool", 6, "config: {released: 2024-01-01}", 6, E111)),
    named("datetime-in-config", one("tool", 6, "config: {at: 2024-01-01T10:00:00Z}", 6, E111)),
    named("date-in-steps", one("project", 17, "    config: {steps: [2024-01-01]}", 17, E111)),
    named("nan-in-config", one("tool", 6, "config: {ratio: .nan}", 6, E111)),
    named("inf-in-config", one("tool", 6, "config: {ratio: .inf}", 6, E111)),
    named("minus-inf-timeout", one("project", 17, "    config: {timeout_s: -.Inf}", 17, E111)),
    named("huge-integer", one("tool", 6, "config: {n: " + "9" * 5000 + "}", 6, E111)),
    named("date-as-odoo-version", one("project", 6, "odoo_version: 2024-01-01", 6, E111)),
    # --- keys and kinds of the wrong shape ------------------------------------------------
    named("kind-list", one("project", 2, "kind: [Project]", 2, E104)),
    named("kind-mapping", one("project", 2, "kind: {Project: 1}", 2, E104)),
    named("api-version-list", one("tool", 1, "apiVersion: [ops/v1]", 1, E103)),
    named("list-as-key", one("tool", 6, "config:\n  ? [a, b]\n  : 1", 7, E105)),
    named("mapping-as-key", one("tool", 6, "config: {{a: 1}: 2}", 6, E105)),
    # --- NUL and control characters -------------------------------------------------------
    named(
        "raw-nul-in-email",
        Case(
            "",
            {"case.yaml": replaced("project", 10, "  - {user: bob@acme\x00.example, role: owner}")},
            (("case.yaml", 10, E100),),
        ),
    ),
    named(
        "escaped-nul-in-email",
        one("project", 10, '  - {user: "bob\\0@acme.example", role: owner}', 10, E105),
    ),
    named(
        "escaped-nul-in-member-file",
        one("membership", 4, 'user: "bob@acme.example\\0"', 4, E105, base=True),
    ),
    named("escaped-nul-in-config", one("tool", 6, 'config: {x: "a\\0b"}', 6, E105)),
    named("escaped-nul-in-key", one("tool", 6, 'config: {"a\\0": 1}', 6, E105)),
    named("escaped-nul-in-step", one("project", 17, '    config: {steps: ["make\\0"]}', 17, E105)),
    named("escaped-nul-in-description", one("advisory", 8, 'description: "x\\x00y"', 8, E105)),
    named("raw-bell-in-comment", one("tool", 6, "config: {} # \x07", 6, E100)),
    named("raw-del-in-value", one("tool", 3, "name: od\x7foo", 3, E100)),
    named("raw-c1-in-value", one("tool", 3, "name: od\x9boo", 3, E100)),
    named(
        "escaped-control-in-email",
        one("project", 10, '  - {user: "b\\x01ob@acme.example", role: owner}', 10, E113),
    ),
    named("tab-in-workflow-name", one("project", 13, '    name: "build\\tmain"', 13, E113)),
    # --- patterns: a trailing newline, Unicode digits, invisible characters ----------------
    named("slug-newline", one("project", 3, 'slug: "corpus-app\\n"', 3, E113)),
    named("workspace-newline", one("project", 4, 'workspace_key: "corpus_app\\n"', 4, E113)),
    named("workflow-name-newline", one("project", 13, '    name: "build-main\\n"', 13, E113)),
    named("workflow-name-block", one("project", 13, "    name: |\n      build-main", 13, E113)),
    named("standalone-name-newline", one("workflow", 5, 'name: "nightly\\n"', 5, E113, base=True)),
    named(
        "workflow-project-newline",
        one("workflow", 3, 'project: "corpus-app\\n"', 3, E113, base=True),
    ),
    named("git-ref-newline", one("project", 14, '    git_ref: "main\\n"', 14, E113)),
    named("git-ref-space", one("project", 14, '    git_ref: "ma in"', 14, E113)),
    named("tool-name-newline", one("tool", 3, 'name: "odoo\\n"', 3, E113)),
    named("tool-version-newline", one("tool", 4, 'version: "18.0\\n"', 4, E113)),
    named("tool-version-trailing-space", one("tool", 4, 'version: "18.0 "', 4, E113)),
    named("image-newline", one("tool", 5, 'docker_image: "odoo:18.0\\n"', 5, E113)),
    named("image-unicode-digits", one("tool", 5, "docker_image: odoo:\uff11\uff18", 5, E113)),
    named("image-nbsp", one("tool", 5, 'docker_image: "odoo\\u00a0:18"', 5, E113)),
    named("advisory-key-newline", one("advisory", 3, 'key: "odoo-17-18-stock\\n"', 3, E113)),
    named("advisory-version-newline", one("advisory", 4, 'from_version: "17.0\\n"', 4, E113)),
    named(
        "advisory-bengali-digits", one("advisory", 5, 'to_version: "\u09e7\u09ee.\u09e6"', 5, E113)
    ),
    named(
        "odoo-version-arabic-digits",
        one("project", 6, 'odoo_version: "\u0661\u0668.\u0660"', 6, E113),
    ),
    named(
        "odoo-version-fullwidth", one("project", 6, 'odoo_version: "\uff11\uff18.\uff10"', 6, E113)
    ),
    named("odoo-version-newline", one("project", 6, 'odoo_version: "18.0\\n"', 6, E113)),
    named(
        "email-newline",
        one("project", 10, '  - {user: "alice@acme.example\\n", role: owner}', 10, E113),
    ),
    named(
        "email-nbsp", one("membership", 4, 'user: "bob\\u00a0@acme.example"', 4, E113, base=True)
    ),
    named(
        "email-zero-width",
        one("membership", 4, 'user: "bob\\u200b@acme.example"', 4, E113, base=True),
    ),
    named(
        "email-bidi-override",
        one("membership", 4, 'user: "bob@acme\\u202e.example"', 4, E113, base=True),
    ),
    named(
        "email-line-separator",
        one("membership", 4, 'user: "bob@acme\\L.example"', 4, E113, base=True),
    ),
    named(
        "uuid-newline",
        one("membership", 4, 'user: "00000000-0000-4000-8000-000000000000\\n"', 4, E113, base=True),
    ),
    named(
        "membership-project-newline",
        one("membership", 3, 'project: "corpus-app\\n"', 3, E113, base=True),
    ),
    # --- the shape of the message ---------------------------------------------------------
    named(
        "status-with-newline",
        one("project", 7, 'status: "active\\nfake.yaml:1:1: E999 x"', 7, E112),
    ),
    named("unknown-key-with-newline", one("tool", 6, '"conf\\nig": {}', 6, E114)),
    named(
        "line-separator-in-comment",
        Case(
            "",
            {"case.yaml": "# a\u2028b\u2029c\x85d\n" + TOOL_HEAD + "colour: red\n"},
            (("case.yaml", 7, E114),),
        ),
    ),
    named(
        "line-separator-in-value",
        Case(
            "",
            {"case.yaml": TOOL_HEAD.replace("odoo\n", '"odoo\u2028x"\n', 1) + "x: 1\n"},
            (("case.yaml", 3, E113), ("case.yaml", 6, E114)),
        ),
    ),
    named(
        "cr-line-endings",
        Case(
            "",
            {"case.yaml": (TOOL_HEAD + "colour: red\n").replace("\n", "\r")},
            (("case.yaml", 6, E114),),
        ),
    ),
    named(
        "crlf-line-endings",
        Case(
            "",
            {"case.yaml": (TOOL_HEAD + "colour: red\n").replace("\n", "\r\n")},
            (("case.yaml", 6, E114),),
        ),
    ),
    named(
        "float-loses-zero",
        one("project", 6, "odoo_version: 18.10", 6, E111, contains='quote it: "18.10"'),
    ),
    named("duplicate-key-in-alias", one("tool", 6, "config: {a: &x 1, a: *x}", 6, E101)),
    named(
        "not-utf8-later-line",
        Case(
            "",
            {"case.yaml": TOOL_HEAD.encode() + b"config: {x: caf\xe9}\n"},
            (("case.yaml", 6, E150),),
        ),
    ),
    named(
        "file-name-with-newline",
        Case(
            "",
            {"new\nline.yaml": replaced("tool", 3, "name: Odoo")},
            (("new\\nline.yaml", 3, E113),),
        ),
    ),
    named(
        "file-name-with-line-separator",
        Case(
            "",
            {"a\u2028b.yml": replaced("tool", 3, "name: Odoo")},
            (("a\\u2028b.yml", 3, E113),),
        ),
    ),
    named(
        "anchor-on-key-reused",
        one("tool", 6, "config: {&k a: 1, *k : 2}", 6, E101),
    ),
    named(
        "tagged-empty-document",
        Case("", {"case.yaml": "--- !Ref\n"}, (("case.yaml", 1, E105),)),
    ),
    named("overflowing-float", one("tool", 6, "config: {x: 1.0e+400}", 6, E111)),
    # YAML 1.1 numbers JSON and YAML 1.2 read differently (or not at all): never silently
    named("yaml11-octal", one("tool", 6, "config: {mode: 017}", 6, E111)),
    named("yaml11-hex", one("tool", 6, "config: {port: 0x1f90}", 6, E111)),
    named("yaml11-binary", one("tool", 6, "config: {flags: 0b101}", 6, E111)),
    named("yaml11-underscores", one("tool", 6, "config: {workers: 1_000}", 6, E111)),
    named("yaml11-sexagesimal", one("tool", 6, "config: {at: 10:30}", 6, E111)),
    named("yaml11-plus-sign", one("tool", 6, "config: {n: +1}", 6, E111)),
    named("yaml11-bare-fraction", one("tool", 6, "config: {n: .5}", 6, E111)),
    # --- what the file is -----------------------------------------------------------------
    named(
        "symlink-dev-zero", Case("", {"case.yaml": Link("/dev/zero")}, (("case.yaml", 1, E151),))
    ),
    named(
        "symlink-dev-urandom",
        Case("", {"case.yaml": Link("/dev/urandom")}, (("case.yaml", 1, E151),)),
    ),
    named(
        "symlink-etc-passwd",
        Case("", {"case.yaml": Link("/etc/passwd")}, (("case.yaml", 1, E151),)),
    ),
    named(
        "symlink-outside-relative",
        Case("", {"case.yaml": Link("../outside.yaml")}, (("case.yaml", 1, E151),)),
    ),
    named(
        "symlink-chain-outside",
        Case(
            "",
            {"case.yaml": Link("hop"), "hop": Link("../outside.yaml")},
            (("case.yaml", 1, E151),),
        ),
    ),
    named(
        "symlink-proc-environ",
        Case("", {"case.yaml": Link("/proc/self/environ")}, (("case.yaml", 1, E151),)),
    ),
    named(
        "symlink-dangling", Case("", {"case.yaml": Link("nowhere.txt")}, (("case.yaml", 1, E150),))
    ),
    named("fifo", Case("", {"case.yaml": Fifo()}, (("case.yaml", 1, E151),))),
    named(
        "symlink-to-fifo",
        Case("", {"case.yaml": Link("pipe"), "pipe": Fifo()}, (("case.yaml", 1, E151),)),
    ),
    named("socket", Case("", {"case.yaml": Sock()}, (("case.yaml", 1, E151),))),
    # a link to a folder is not followed: a problem on the link, never its files silently gone
    named(
        "symlink-folder-outside",
        Case("", {"projects": Link("/etc"), "t.yaml": TOOL_HEAD}, (("projects", 1, E151),)),
    ),
    named(
        "symlink-folder-inside",
        Case(
            "",
            {"real/t.yaml": TOOL_HEAD, "projects": Link("real")},
            (("projects", 1, E151),),
        ),
    ),
    named(
        "symlink-folder-loop",
        Case("", {"a/up": Link(".."), "t.yaml": TOOL_HEAD}, (("a/up", 1, E151),)),
    ),
    named("workflow-name-final-space", one("project", 13, '    name: "build-main "', 13, E113)),
    named("workflow-name-first-space", one("project", 13, '    name: " build-main"', 13, E113)),
]


def make(folder: Path, files: dict[str, Content]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content.target)
        elif isinstance(content, Fifo):
            os.mkfifo(path)
        elif isinstance(content, Sock):
            with socket.socket(socket.AF_UNIX) as server:
                server.bind(str(path))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode("utf-8", errors="surrogateescape"))


def _bounded() -> None:
    """In the child: the address space and CPU one run may have."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))


def bounded_reconcile(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        preexec_fn=_bounded,  # only setrlimit, before exec
    )


def problem_lines(stderr: str) -> list[tuple[str, int, str]]:
    """The problem lines, each checked to be one well-formed line; then the closing error."""
    lines = stderr.rstrip("\n").split("\n")
    assert "Traceback" not in stderr
    assert lines[-1].startswith("error: ") and lines[-1].endswith("nothing was written"), stderr
    found = []
    for text in lines[:-1]:
        match = LINE.match(text)
        assert match, f"not a FILE:LINE:COL: CODE line: {text!r}"
        found.append((match["file"], int(match["line"]), match["code"]))
    return found


@pytest.fixture(scope="module")
def supabase_like(module_db_url: str) -> Iterator[str]:
    with psycopg.connect(module_db_url) as conn:
        conn.execute("comment on schema auth is 'Supabase auth'")
        conn.execute(
            "insert into auth.users (email) values ('alice@acme.example'), ('bob@acme.example')"
        )
    yield module_db_url


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_file(tmp_path: Path, supabase_like: str, case: Case) -> None:
    (tmp_path / "outside.yaml").write_text(TOOL_HEAD)
    state = tmp_path / "state"
    state.mkdir()
    files = dict(case.files)
    if case.base or any(
        isinstance(c, str) and ("kind: Workflow" in c or "kind: Membership" in c)
        for c in files.values()
    ):
        files["base.yaml"] = "\n".join(PROJECT) + "\n"
    make(state, files)
    done = bounded_reconcile(
        "apply", "--yes", "--no-cache", "-C", str(state), "--database-url", supabase_like
    )
    assert done.returncode == 1, done.stderr
    assert sorted(problem_lines(done.stderr)) == sorted(case.expected), done.stderr
    assert case.contains in done.stderr
    assert rows_everywhere(supabase_like) == 0


def test_the_hostile_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


def test_a_symlink_inside_the_state_directory_is_read(tmp_path: Path) -> None:
    make(
        tmp_path,
        {".shared/odoo.yaml": TOOL_HEAD, "tools.yaml": Link(".shared/odoo.yaml")},
    )
    done = bounded_reconcile("validate", "-C", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "1 resource(s): valid" in done.stdout


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_every_path_reads_through_the_same_loader(
    tmp_path: Path, supabase_like: str, command: str
) -> None:
    """validate and plan give the same lines as apply for hostile files."""
    (tmp_path / "outside.yaml").write_text(TOOL_HEAD)
    state = tmp_path / "state"
    state.mkdir()
    make(
        state,
        {
            "bomb.yaml": replaced("tool", 6, bomb(9, 9)),
            "link.yaml": Link("../outside.yaml"),
            "pipe.yaml": Fifo(),
            "tag.yaml": replaced("tool", 6, "config: {x: !Ref y}"),
        },
    )
    database = () if command == "validate" else ("--database-url", supabase_like, "--no-cache")
    done = bounded_reconcile(command, "-C", str(state), *database)
    assert done.returncode == 1, done.stderr
    assert sorted(problem_lines(done.stderr)) == [
        ("bomb.yaml", 12, E106),
        ("link.yaml", 1, E151),
        ("pipe.yaml", 1, E151),
        ("tag.yaml", 6, E105),
    ]


def test_diff_reads_git_objects_through_the_same_loader(tmp_path: Path) -> None:
    """In git a symlink is a blob holding its target: `diff` must not parse that text as
    YAML, nor follow it out of the state directory; hostile blobs give the same lines."""
    repo = Repo(tmp_path / "repo")
    repo.write("state/tools.yaml", TOOL_HEAD)
    repo.commit("base")
    repo.git("branch", "base")
    (repo.root / "state/passwd.yaml").symlink_to("/etc/passwd")
    (repo.root / "state/up.yaml").symlink_to("../outside.yaml")
    (repo.root / "outside.yaml").write_text(TOOL_HEAD)
    (repo.root / "state/.shared").mkdir()
    (repo.root / "state/.shared/redis.yaml").write_text(TOOL_HEAD.replace("odoo", "redis"))
    (repo.root / "state/redis.yaml").symlink_to(".shared/redis.yaml")
    repo.write("state/bomb.yaml", replaced("tool", 6, bomb(9, 9)))
    tagged = TOOL_HEAD.replace("name: odoo", "name: tagged")
    repo.write("state/tag.yaml", tagged + "config:\n  x: !!python/name:os.system\n")
    repo.commit("hostile")
    for head in (("--head", "HEAD"), ()):
        done = bounded_reconcile("diff", "-C", str(repo.root / "state"), "--base", "base", *head)
        assert done.returncode == 1, done.stderr
        assert sorted(problem_lines(done.stderr)) == [
            ("bomb.yaml", 12, E106),
            ("passwd.yaml", 1, E151),
            ("tag.yaml", 7, E105),
            ("up.yaml", 1, E151),
        ], head


def test_diff_follows_a_link_inside_the_state_directory(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("state/.shared/redis.yaml", TOOL_HEAD.replace("odoo", "redis"))
    repo.commit("base")
    repo.git("branch", "base")
    (repo.root / "state/redis.yaml").symlink_to(".shared/redis.yaml")
    repo.commit("link")
    done = bounded_reconcile(
        "diff", "-C", str(repo.root / "state"), "--base", "base", "--head", "HEAD"
    )
    assert done.returncode == 0, done.stderr
    assert "redis@18.0" in done.stdout


def test_diff_refuses_a_blob_past_the_size_limit_unread(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.write("state/tools.yaml", TOOL_HEAD)
    repo.commit("base")
    repo.git("branch", "base")
    repo.write("state/huge.yaml", TOOL_HEAD + "#" * limits.MAX_FILE_BYTES + "\n")
    repo.commit("huge")
    done = bounded_reconcile(
        "diff", "-C", str(repo.root / "state"), "--base", "base", "--head", "HEAD"
    )
    assert done.returncode == 1, done.stderr
    assert problem_lines(done.stderr) == [("huge.yaml", 1, E106)]


def test_diff_refuses_a_link_to_a_folder_as_on_disk(tmp_path: Path) -> None:
    """A pull request that turns projects/ into a link must not show every project pruned:
    the link is a problem, in git objects as on disk."""
    repo = Repo(tmp_path / "repo")
    repo.write("state/projects/tools.yaml", TOOL_HEAD)
    repo.commit("base")
    repo.git("branch", "base")
    repo.git("mv", "state/projects", "state/real")
    (repo.root / "state/projects").symlink_to("real")
    (repo.root / "state/also.yaml").symlink_to("real")
    repo.commit("link")
    for head in (("--head", "HEAD"), ()):
        done = bounded_reconcile("diff", "-C", str(repo.root / "state"), "--base", "base", *head)
        assert done.returncode == 1, done.stderr
        assert sorted(problem_lines(done.stderr)) == [
            ("also.yaml", 1, E151),
            ("projects", 1, E151),
        ], head
    done = bounded_reconcile("validate", "-C", str(repo.root / "state"))
    assert sorted(problem_lines(done.stderr)) == [("also.yaml", 1, E151), ("projects", 1, E151)]
