"""Every `pattern` of every schema means the same under the three regex engines a validator may
use: Python's `re` (jsonschema), ECMA-262 (what JSON Schema specifies; node) and Rust
(jsonschema-rs). Python's `$` matches before a final newline and its `\\d` and `\\s` are
Unicode; ECMA's and Rust's differ: a pattern written for one lets values through the others.
Each pattern must accept its samples and refuse them with a trailing newline, control or
invisible characters, and (where the rule is ASCII) Unicode digits, in every engine."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
EMAIL, UUID = "alice@acme.example", "0b5e6f1c-3d2a-4e8b-9c7d-1a2b3c4d5e6f"
# (schema, pointer) -> (valid samples, whether the rule is ASCII only)
SAMPLES: dict[tuple[str, str], tuple[list[str], bool]] = {
    ("project.json", "/properties/slug"): (["acme-erp", "a1"], True),
    ("project.json", "/properties/workspace_key"): (["acme_erp", "w2"], True),
    ("project.json", "/properties/odoo_version"): (["18.0", "9.10"], True),
    ("membership.json", "/properties/project"): (["acme-erp"], True),
    ("membership.json", "/$defs/member/properties/user"): ([EMAIL, "zoë@exämple.fr", UUID], False),
    ("workflow.json", "/properties/project"): (["acme-erp"], True),
    ("workflow.json", "/$defs/spec/properties/name"): (["build-main", "Nightly 2 backup"], True),
    ("workflow.json", "/$defs/spec/properties/git_ref"): (["main", "release/18.0", "fé-1"], False),
    ("project.json", "/properties/acknowledged_advisories/items"): (["odoo-17-18-stock"], True),
    ("workflow.json", "/$defs/spec/properties/needs/items"): (["build-main", "test/test 2"], True),
    ("workflow.json", "/$defs/spec/properties/concurrency"): (["production", "lane.1_a-b"], True),
    ("tool.json", "/properties/name"): (["odoo", "pg.bouncer-1"], True),
    ("tool.json", "/properties/version"): (["18.0", "1.25.3-alpine", "latest", "1 | 2"], False),
    ("tool.json", "/properties/docker_image"): (
        ["odoo:18.0", "ghcr.io/acme/odoo@sha256:" + "a" * 64, "localhost:5000/odoo"],
        True,
    ),
    ("workflow.json", "/$defs/spec/properties/config/properties/tool"): (["odoo@18.0"], True),
    ("workflow.json", "/$defs/spec/properties/config/properties/secrets/items"): (
        ["PGPASSWORD", "_S3_KEY"],
        True,
    ),
    ("workflow.json", "/$defs/spec/properties/config/properties/limits/properties/memory"): (
        ["512m", "2g", "1048576"],
        True,
    ),
    ("workflow.json", "/$defs/spec/properties/config/properties/artifacts/items"): (
        ["dist/*.tar.gz", "reports/**/*.xml", "my report.pdf", "résumé.txt"],
        False,
    ),
    ("upgrade_advisory.json", "/properties/key"): (["odoo-17-18-stock"], True),
    ("upgrade_advisory.json", "/properties/from_version"): (["17.0"], True),
    ("upgrade_advisory.json", "/properties/to_version"): (["18.0"], True),
}
FORBIDDEN = [
    "\n", "\r", "\r\n", "\x00", "\t", "\x0b", "\x1b", "\x7f", "\x85", "\x9f",
    "\u00a0", "\u200b", "\u200e", "\u2028", "\u2029", "\u202e", "\u2066", "\ufeff", " \n",
]  # fmt: skip
UNICODE_DIGITS = ("\u0660", "\u0966", "\u09e6", "\uff10")  # zeros: Arabic, Devanagari...


def patterns() -> Iterator[tuple[str, str, str]]:
    for path in sorted(SCHEMAS.glob("*.json")):
        yield from _walk(path.name, json.loads(path.read_text()), "")


def _walk(name: str, node: Any, pointer: str) -> Iterator[tuple[str, str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield name, pointer, node["pattern"]
        for key, value in node.items():
            yield from _walk(name, value, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(name, value, f"{pointer}/{i}")


def hostile(sample: str, ascii_only: bool) -> list[str]:
    found = [sample + c for c in FORBIDDEN] + [c + sample for c in FORBIDDEN]
    found += [sample[:1] + c + sample[1:] for c in FORBIDDEN]
    if ascii_only:
        for zero in UNICODE_DIGITS:
            shifted = "".join(chr(ord(zero) + int(c)) if c.isdigit() else c for c in sample)
            found.append(shifted if shifted != sample else sample + zero)
    return found


def cases() -> list[tuple[str, str, bool]]:
    """(pattern, string, whether it must match) for every pattern."""
    found = []
    for name, pointer, pattern in patterns():
        samples, ascii_only = SAMPLES[(name, pointer)]
        for sample in samples:
            found.append((pattern, sample, True))
            found += [(pattern, bad, False) for bad in hostile(sample, ascii_only)]
    return found


def test_every_pattern_has_samples() -> None:
    assert {(name, pointer) for name, pointer, _ in patterns()} == set(SAMPLES)


def test_python_re_as_jsonschema_uses_it() -> None:
    wrong = [(p, s) for p, s, ok in cases() if bool(re.search(p, s)) != ok]
    assert wrong == []


def test_rust_regex_as_jsonschema_rs_uses_it() -> None:
    wrong = [
        (p, s)
        for p, s, ok in cases()
        if jsonschema_rs.validator_for({"type": "string", "pattern": p}).is_valid(s) != ok
    ]
    assert wrong == []


_NODE = """
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const wrong = [];
for (const [pattern, text, ok] of cases)
  for (const flags of ['', 'u'])
    if (new RegExp(pattern, flags).test(text) !== ok) wrong.push([pattern, text, flags]);
console.log(JSON.stringify(wrong));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node for ECMA-262 regexes")
def test_ecma_262_regex_as_the_json_schema_spec_says() -> None:
    node = shutil.which("node") or "node"
    done = subprocess.run(
        [node, "-e", _NODE],
        input=json.dumps(cases()),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == []
