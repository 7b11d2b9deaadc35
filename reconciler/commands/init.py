"""`reconcile init [DIR]` and `reconcile schema --out DIR`: a state directory that validates
and plans out of the box, and the JSON Schemas for editors and check-jsonschema."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.files import state_files

Echo = Callable[[str], None]
SCHEMA_FOLDER = ".schemas"
COMBINED = "ops-reconciler.json"
BASE_ID = "https://ops-reconciler.dev/schemas/v1/"
KINDS = {
    "Project": "project.json",
    "Workflow": "workflow.json",
    "Membership": "membership.json",
    "Tool": "tool.json",
    "UpgradeAdvisory": "upgrade_advisory.json",
}


def run(folder: Path, out: Echo) -> int:
    """Write the starter files; refuse (writing nothing) if any is there already."""
    planned = _starter_files()
    if folder.exists() and state_files(folder):
        raise ReconcilerError(
            f"{folder} already has state files; `reconcile init` starts a new one"
        )
    clashes = [p for p in planned if (folder / p).exists()]
    if clashes:
        raise ReconcilerError(f"{folder / clashes[0]} exists already; nothing was written")
    for relative, content in planned.items():
        _write(folder / relative, content, executable=relative.endswith(".sh"))
    out(f"Started a state directory in {folder}: {len(planned)} file(s).")
    out(f"Next: `reconcile validate -C {folder}`, then `reconcile plan -C {folder}`.")
    return 0


def write_schemas(folder: Path, out: Echo) -> int:
    schemas = schema_files()
    for name, content in schemas.items():
        _write(folder / name, content)
    out(f"Wrote {len(schemas)} JSON Schema(s) to {folder}; for any file: {folder / COMBINED}")
    return 0


def schema_files() -> dict[str, str]:
    """The per-kind schemas as shipped, and the combined one bundled from them."""
    folder = resources.files("reconciler.schemas")
    per_kind = {name: folder.joinpath(name).read_text(encoding="utf-8") for name in KINDS.values()}
    return {**per_kind, COMBINED: json.dumps(combined(per_kind), indent=2) + "\n"}


def combined(per_kind: dict[str, str]) -> dict[str, Any]:
    """One schema for any document: the rules of its `kind`. The per-kind schemas are
    embedded whole under $defs, each keeping its own $id, so their relative $refs
    (`membership.json#/$defs/member`) resolve inside this one file: no download, and the
    rules stay those of the per-kind files (this is generated from them, never edited)."""
    defs = {name.removesuffix(".json"): json.loads(text) for name, text in per_kind.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": BASE_ID + COMBINED,
        "title": "ops-reconciler desired state",
        "description": "Any ops/v1 document; the rules are those of its kind.",
        "type": "object",
        "required": ["apiVersion", "kind"],
        "properties": {"kind": {"enum": list(KINDS)}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"$ref": name},
            }
            for kind, name in KINDS.items()
        ],
        "$defs": defs,
    }


def _starter_files() -> dict[str, str]:
    templates = resources.files("reconciler.templates")
    state = templates.joinpath("state")
    actions = templates.joinpath("github-actions")
    found = {
        "projects/sample-erp.yaml": _text(state, "sample-project.yaml"),
        ".reconcileignore": _text(state, "reconcileignore"),
        ".pre-commit-config.yaml": _text(state, "pre-commit-config.yaml"),
        ".github/reconcile-ci.sh": _text(actions, "reconcile-ci.sh"),
    }
    for entry in sorted(actions.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yml"):
            found[f".github/workflows/{entry.name}"] = entry.read_text(encoding="utf-8")
    found.update({f"{SCHEMA_FOLDER}/{name}": text for name, text in schema_files().items()})
    return found


def _text(folder: Traversable, name: str) -> str:
    return folder.joinpath(name).read_text(encoding="utf-8")


def _write(path: Path, content: str, *, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(content, encoding="utf-8")
    if executable:
        staging.chmod(0o755)
    staging.replace(path)
