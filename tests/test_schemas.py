"""The JSON Schemas are valid draft 2020-12 documents, and every example validates."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from reconciler.commands.shared import Options
from reconciler.commands.validate import validate

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = sorted((ROOT / "schemas").glob("*.json"))


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.name for p in SCHEMAS])
def test_schema_is_valid_and_identified(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f"/v1/{path.name}")


def test_every_example_validates() -> None:
    said: list[str] = []
    assert (
        validate(Options(state_dir=ROOT / "examples" / "projects", use_cache=False), said.append)
        == 0
    )
    assert said == ["5 file(s), 38 resource(s): valid"]


def test_the_pre_commit_hook_runs_validate() -> None:
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "reconcile-validate" and hook["pass_filenames"] is False
    command = shlex.split(hook["entry"])
    assert command[0] == "reconcile"
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", *command[1:], "-C", str(ROOT / "examples/projects")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.endswith("resource(s): valid\n")
