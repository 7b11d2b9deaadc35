"""`validate` checks across files without assembling every resource when nothing is taken
twice: the same problems as the full assembly (which plan and diff still do), in every case."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import files
from reconciler.commands.validate import across_files
from reconciler.core import pipelines
from reconciler.core.desired import assemble
from reconciler.core.plan import collect

PROJECT = """\
apiVersion: ops/v1
kind: Project
slug: {slug}
workspace_key: {key}
name: {slug}
odoo_version: "18.0"
workflows:
  - {{type: build, name: build, git_ref: main, on: [push], config: {{steps: [make]}}}}
  - {{type: test, name: build, git_ref: main, on: [push], config: {{steps: [make]}}}}
"""


def workflow(project: str, name: str, extra: str = "", type_: str = "deploy") -> str:
    return (
        f"apiVersion: ops/v1\nkind: Workflow\nproject: {project}\ntype: {type_}\nname: {name}\n"
        f"git_ref: main\nconfig: {{steps: [make]}}\n{extra}"
    )


def fleet(**extra: str) -> dict[str, str]:
    found = {
        "a.yaml": PROJECT.format(slug="app", key="app"),
        "b.yaml": PROJECT.format(slug="other", key="other"),
    }
    found.update({name.replace("_", "/") + ".yaml": text for name, text in extra.items()})
    return found


CASES = {
    "clean": fleet(w_ok=workflow("app", "ship", "on: [manual]\nneeds: [build/build]\n")),
    "needs-unknown": fleet(w_x=workflow("app", "ship", "on: [manual]\nneeds: [nothing]\n")),
    "needs-ambiguous": fleet(w_x=workflow("app", "ship", "on: [manual]\nneeds: [build]\n")),
    "needs-itself": fleet(w_x=workflow("app", "ship", "on: [manual]\nneeds: [ship]\n")),
    "cycle-across-files": fleet(
        w_one=workflow("app", "one", "on: [manual]\nneeds: [two]\n"),
        w_two=workflow("app", "two", "on: [manual]\nneeds: [one]\n"),
    ),
    "triggers": fleet(
        w_cron=workflow("app", "cron", 'on: [schedule]\nschedule: "61 * * * *"\n'),
        w_zone=workflow("app", "zone", "on: [manual]\ntimezone: Europe/Nowhere\n"),
        w_paths=workflow("other", "paths", 'on: [manual]\npaths: ["a/**"]\n'),
        w_tz=workflow("other", "tz", 'on: [schedule]\nschedule: "0 2 * * *"\ntimezone: Mars/X\n'),
    ),
    "duplicate-with-bad-schedule": fleet(
        w_one=workflow("app", "build", 'on: [manual]\nschedule: "0 2 * * *"\n', "build"),
        w_two=workflow("app", "ship", "on: [manual]\nneeds: [nothing]\n"),
    ),
    "paths-on-a-project-with-its-own-code": {
        "a.yaml": PROJECT.format(slug="app", key="app").replace(
            "workflows:\n", "repository: https://git.example.com/app.git\nworkflows:\n"
        ),
        "b.yaml": PROJECT.format(slug="other", key="other"),
        "w/app.yaml": workflow("app", "ship", 'on: [push]\npaths: ["a/**"]\n'),
        "w/other.yaml": workflow("other", "ship", 'on: [push]\npaths: ["a/**"]\n'),
    },
    "unknown-project-with-needs": fleet(
        w_x=workflow("ghost", "ship", "on: [manual]\nneeds: [nothing]\n"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_shortcut_finds_what_the_full_assembly_finds(tmp_path: Path, case: str) -> None:
    for name, text in CASES[case].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    loaded = files.load(tmp_path, None)
    resources = loaded.resources()
    desired, problems = assemble(resources, known_projects=set())
    expected = collect(problems, pipelines.check(desired))
    found, count = across_files(loaded)
    assert collect(found) == expected
    assert count == len(resources)
    assert bool(expected) == (case != "clean")
    assert not loaded.problems
