"""Saved plans: `reconcile plan --out FILE`, then `reconcile apply FILE` applies exactly it."""

from __future__ import annotations

from typing import Any

SAVED_FORMAT = "ops-reconciler/saved-plan/1"


def saved(plan: dict[str, Any], state_dir: str, ref: str | None) -> dict[str, Any]:
    return {"format": SAVED_FORMAT, "state_dir": state_dir, "ref": ref, "plan": plan}


def moved(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """What differs between a saved plan and the plan made now, named for the user."""
    found = []
    if expected.get("commit") != actual.get("commit"):
        found.append(
            f"the commit ({_short(expected.get('commit'))} -> {_short(actual.get('commit'))})"
        )
    before = {(c["kind"], c["key"]): c for c in expected.get("changes", [])}
    after = {(c["kind"], c["key"]): c for c in actual.get("changes", [])}
    found += [
        f"{kind} {key}"
        for kind, key in sorted(before.keys() | after.keys())
        if before.get((kind, key)) != after.get((kind, key))
    ]
    runs_before = {r["workflow"]: r for r in expected.get("runs", [])}
    runs_after = {r["workflow"]: r for r in actual.get("runs", [])}
    found += [
        f"run of {w}"
        for w in sorted(runs_before.keys() | runs_after.keys())
        if runs_before.get(w) != runs_after.get(w)
    ]
    if not found and expected != actual:
        found.append("the plan")
    return found


def _short(commit: Any) -> str:
    return str(commit)[:12] if commit else "none"
