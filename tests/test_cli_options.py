"""Every option of `reconcile` works before the command's name as after it, or is refused in
one line: never silently ignored (`reconcile --dry-run apply --yes` once applied)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reconciler.cli import cli
from tests.cli import Result, reconcile
from tests.helpers import make_project, scalar

pytestmark = pytest.mark.slow

PROJECT = """\
apiVersion: ops/v1
kind: Project
slug: {slug}
workspace_key: {key}
name: {slug}
odoo_version: "18.0"
"""
ROOT_ONLY = {"version", "help"}  # eager: they act before any command, shown on `reconcile` only


def write_projects(folder: Path, *slugs: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for slug in slugs:
        (folder / f"{slug}.yaml").write_text(PROJECT.format(slug=slug, key=slug.replace("-", "_")))
    return folder


class Case:
    """One option's trial: the command, the option's arguments, and what shows it worked."""

    def __init__(self, tmp: Path, db_url: str) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.state = write_projects(tmp / "state", "alpha", "beta")
        self.env = {"RECONCILE_CACHE_DIR": str(tmp / "cache")}

    def run(self, position: str, command: list[str], option: list[str], *rest: str) -> Result:
        args = [*option, *command, *rest] if position == "before" else [*command, *option, *rest]
        return reconcile(*args, env=self.env, timeout=60)

    def where(self) -> list[str]:
        return ["-C", str(self.state), "--database-url", self.db_url]

    def count(self, query: str) -> int:
        with psycopg.connect(self.db_url) as conn:
            return int(scalar(conn, query))


def _debug(c: Case, pos: str) -> None:
    done = c.run(pos, ["db", "status"], ["--debug"], "--database-url", c.db_url)
    assert done.code == 0 and "debug: database: " in done.stderr


def _state_dir(c: Case, pos: str) -> None:
    done = c.run(pos, ["validate"], ["-C", str(c.state)])
    assert done.code == 0 and done.stdout.startswith("2 file(s)")


def _database_url(c: Case, pos: str) -> None:
    done = c.run(pos, ["db", "status"], ["--database-url", c.db_url], "-o", "json")
    name = conninfo_to_dict(c.db_url)["dbname"]
    assert json.loads(done.stdout)["database"].endswith(f"/{name}")


def _lock_timeout(c: Case, pos: str) -> None:
    with psycopg.connect(c.db_url) as holder:
        holder.execute("select from ops.reconcile_lock for update")  # what a plan takes
        done = c.run(pos, ["plan"], ["--lock-timeout", "0.2"], *c.where())
    assert done.code == 1 and "another reconcile holds the lock" in done.stderr


def _output(c: Case, pos: str) -> None:
    done = c.run(pos, ["plan"], ["-o", "json"], *c.where())
    assert json.loads(done.stdout)["summary"]["create"] == 2


def _detailed_exitcode(c: Case, pos: str) -> None:
    assert c.run(pos, ["plan"], ["--detailed-exitcode"], *c.where()).code == 2


def _ref(c: Case, pos: str) -> None:
    done = c.run(pos, ["plan"], ["--ref", "feature-x"], "-o", "json", *c.where())
    assert json.loads(done.stdout)["ref"] == "feature-x"


def _adopt(c: Case, pos: str) -> None:
    with psycopg.connect(c.db_url, autocommit=True) as conn:
        make_project(conn, "alpha")
    assert c.run(pos, ["apply"], [], "--yes", *c.where()).code == 1  # refused without it
    done = c.run(pos, ["apply"], ["--adopt"], "--yes", *c.where())
    assert done.code == 0, done.stderr
    assert c.count("select count(*) from ops.projects where managed_by is not null") == 2


def _max_prune(c: Case, pos: str) -> None:
    assert c.run(pos, ["apply"], [], "--yes", *c.where()).code == 0
    write_projects(c.state, "alpha")
    done = c.run(pos, ["apply"], ["--max-prune", "0"], "--yes", *c.where())
    assert done.code == 1 and "--max-prune 0" in done.stderr


def _allow_prune_all(c: Case, pos: str) -> None:
    assert c.run(pos, ["apply"], [], "--yes", *c.where()).code == 0
    write_projects(c.state)
    assert c.run(pos, ["apply"], [], "--yes", *c.where()).code == 1
    done = c.run(pos, ["apply"], ["--allow-prune-all"], "--yes", *c.where())
    assert done.code == 0, done.stderr
    assert c.count("select count(*) from ops.projects where status = 'archived'") == 2


def _no_cache(c: Case, pos: str) -> None:
    assert c.run(pos, ["plan"], ["--no-cache"], *c.where()).code == 0
    assert not (c.tmp / "cache").exists()
    assert c.run(pos, ["plan"], [], *c.where()).code == 0
    assert (c.tmp / "cache").exists()  # the check above can fail


def _markdown_limit(c: Case, pos: str) -> None:
    write_projects(c.state, *(f"project-{i:03d}" for i in range(120)))
    done = c.run(pos, ["plan"], ["--markdown-limit", "2000"], "-o", "markdown", *c.where())
    assert "more line(s), not shown" in done.stdout and len(done.stdout) <= 2001


def _project(c: Case, pos: str) -> None:
    done = c.run(pos, ["plan"], ["--project", "beta"], "-o", "json", *c.where())
    assert [ch["key"] for ch in json.loads(done.stdout)["changes"]] == ["beta"]


def _read_only(c: Case, pos: str) -> None:
    role = f"h_reader_{os.getpid()}"
    with psycopg.connect(c.db_url, autocommit=True) as conn:
        conn.execute(f"create role {role} login in role ops_reader")
    try:
        reader = make_conninfo(c.db_url, user=role)
        args = ["-C", str(c.state), "--database-url", reader]
        assert c.run(pos, ["plan"], [], *args).code == 1  # a read-only user cannot write
        done = c.run(pos, ["plan"], ["--read-only"], *args)
        assert done.code == 0 and "2 to create" in done.stdout
    finally:
        with psycopg.connect(c.db_url, autocommit=True) as conn:
            conn.execute(f"drop role {role}")


def _dry_run(c: Case, pos: str) -> None:
    done = c.run(pos, ["apply"], ["--dry-run"], "--yes", *c.where())
    assert done.code == 0 and "2 to create" in done.stdout
    assert c.count("select count(*) from ops.projects") == 0


def _yes(c: Case, pos: str) -> None:
    assert c.run(pos, ["apply"], [], *c.where()).code == 1  # no terminal, no --yes: refused
    assert c.run(pos, ["apply"], ["--yes"], *c.where()).code == 0
    assert c.count("select count(*) from ops.projects") == 2


CASES: dict[str, Callable[[Case, str], None]] = {
    "debug": _debug,
    "read_only": _read_only,
    "state_dir": _state_dir,
    "database_url": _database_url,
    "lock_timeout": _lock_timeout,
    "output": _output,
    "detailed_exitcode": _detailed_exitcode,
    "ref": _ref,
    "adopt": _adopt,
    "max_prune": _max_prune,
    "allow_prune_all": _allow_prune_all,
    "no_cache": _no_cache,
    "markdown_limit": _markdown_limit,
    "projects": _project,
    "dry_run": _dry_run,
    "yes": _yes,
}


def test_every_global_option_has_a_trial() -> None:
    assert {p.name for p in cli.params} - ROOT_ONLY == set(CASES)


@pytest.fixture
def case(tmp_path: Path, db_url: str) -> Iterator[Case]:
    yield Case(tmp_path, db_url)


@pytest.mark.parametrize("position", ["before", "after"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_option_takes_effect_in_both_positions(case: Case, name: str, position: str) -> None:
    CASES[name](case, position)


def test_dry_run_before_apply_never_applies(case: Case) -> None:
    done = reconcile("--dry-run", "apply", "--yes", *case.where())
    assert done.code == 0 and "Plan: 2 to create" in done.stdout
    assert case.count("select count(*) from ops.projects") == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--adopt", "db", "status"], "--adopt is not an option of `reconcile db status`"),
        (["--yes", "plan"], "-y/--yes is not an option of `reconcile plan`"),
        (["--read-only", "apply", "--yes"], "--read-only is not an option of `reconcile apply`"),
        (["apply", "--read-only", "--yes"], "No such option '--read-only'"),
        (["-o", "markdown", "db", "status"], "-o/--output before `reconcile db status`"),
        (["-o", "json", "plan", "-o", "text"], "given before and after `reconcile plan`"),
        (["--read-only"], "--read-only is for plans"),
    ],
)
def test_an_option_that_cannot_apply_is_refused_in_one_line(
    case: Case, args: list[str], said: str
) -> None:
    done = reconcile(*args, "--database-url", case.db_url, env=case.env)
    assert done.code == 1 and done.stdout == ""
    assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert case.count("select count(*) from ops.projects") == 0


def _all_commands(
    group: click.Command, path: str = "reconcile"
) -> Iterator[tuple[str, click.Command]]:
    yield path, group
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            yield from _all_commands(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help() -> None:
    missing = [
        f"{path} {max(p.opts, key=len)}"
        for path, command in _all_commands(cli)
        for p in command.params
        if isinstance(p, click.Option) and not p.help
    ]
    assert missing == []
