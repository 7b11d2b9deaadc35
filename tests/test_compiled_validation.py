"""The compiled validator (the fast path) never accepts what the detailed one rejects.

A document the compiled engine calls valid skips the detailed engine, so a value it accepts
and `jsonschema` rejects would be a problem lost. Its regular expressions are not Python's;
every pattern of the schemas is probed with the characters where engines differ (whitespace
classes, line ends, digits of other scripts) at its start, middle and end.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from jsonschema import Draft202012Validator

from reconciler.core import schema
from reconciler.core.validate import check_file
from tests.test_broken_inputs import MUTATIONS, replaced

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ["a", "abc", "a-b", "a_b", "a.b", "18.0", "a@b.c", "odoo:18.0", "Build main", "x1"]
SAMPLES.append("12345678-1234-1234-1234-123456789abc")
PROBES = [chr(c) for c in (*range(0x21), *range(0x7F, 0xA1), 0x1680, *range(0x2000, 0x2030))]
PROBES += ["\u205f", "\u3000", "\ufeff", "\u0661", "\u0968", "\uff11", "\u00e9", "\u212a", "\u0130"]


def _patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return own.union(*(_patterns(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(v) for v in node))
    return set()


PATTERNS = sorted(
    set().union(*(_patterns(json.loads(p.read_text())) for p in (ROOT / "schemas").glob("*.json")))
)


def _variants(sample: str, probe: str) -> list[str]:
    middle = len(sample) // 2
    return [sample + probe, probe + sample, sample[:middle] + probe + sample[middle:], probe]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_compiled_patterns_accept_nothing_python_rejects(pattern: str) -> None:
    detailed = Draft202012Validator({"type": "string", "pattern": pattern})
    fast = jsonschema_rs.Draft202012Validator(
        {"type": "string", "pattern": schema.python_pattern(pattern)}
    )
    lost = [
        text
        for sample in SAMPLES
        for probe in PROBES
        for text in _variants(sample, probe)
        if fast.is_valid(text) and not detailed.is_valid(text)
    ]
    assert lost == []


def test_python_whitespace_class_is_spelled_out_exactly() -> None:

    spelled = re.compile(f"[{schema._PY_SPACE}]")
    python = re.compile(r"\s")
    differ = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if bool(spelled.match(chr(c))) != bool(python.match(chr(c)))
    ]
    assert differ == []


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_the_fast_path_finds_what_the_detailed_one_finds(
    mutation: tuple[str, str, int, str | None, int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base, line, text, _, _ = mutation
    document = replaced(base, line, text)
    fast = check_file("corpus.yaml", document)
    monkeypatch.setattr(schema, "_valid", lambda kind, value: False)
    assert check_file("corpus.yaml", document) == fast
