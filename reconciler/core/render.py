"""A plan as text (terraform-like), JSON (the documented contract) or Markdown (a PR comment)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

from reconciler.core.plan import Change, Plan, RunRequest

MARKDOWN_LIMIT = 65_535  # GitHub's limit for one comment
_SYMBOLS = {
    "create": "+",
    "update": "~",
    "delete": "-",
    "archive": "-",
    "disable": "-",
    "adopt": "~",
}
_COLOURS = {"+": "green", "~": "yellow", "-": "red"}

Style = Callable[[str, str], str]


def plain(text: str, _colour: str) -> str:
    return text


def to_json(plan: Plan) -> str:
    return dumps(as_dict(plan))


_JSON_OPTIONS = (
    orjson.OPT_INDENT_2
    | orjson.OPT_NON_STR_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)
_NOT_ASCII = re.compile("[\x7f-\U0010ffff]")


def dumps(document: Any) -> str:
    """`document` as json.dumps(indent=2, default=str) writes it (ASCII only, every other
    character escaped; floats in the shortest form): orjson writes 160,000 changes in a
    fraction of a second, where json's indenting encoder, written in Python, took 6 s."""
    try:
        text = orjson.dumps(document, default=str, option=_JSON_OPTIONS).decode()
    except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits, which only json writes
        return json.dumps(document, indent=2, default=str)
    if text.isascii() and "\x7f" not in text:
        return text
    return _NOT_ASCII.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def as_dict(plan: Plan) -> dict[str, Any]:
    return {
        "format_version": "1",
        "changes_present": plan.changes_present,
        "commit": plan.commit,
        "ref": plan.ref,
        **({"database": plan.database} if plan.database else {}),
        "summary": _summary(plan),
        "changes": [
            {
                "kind": c.kind,
                "key": c.key,
                "action": c.action,
                "fields": list(c.paths),
                "before": c.before,
                "after": c.after,
                **({"drift": True} if c.drift else {}),
            }
            for c in plan.changes
        ],
        "runs": [_run_dict(r) for r in plan.runs],
        "advisories": list(plan.advisories),
        "users": [{"email": email, "action": "create"} for email in plan.new_users],
    }


def _summary(plan: Plan) -> dict[str, int]:
    """The counts; `drift` only where there is a database to drift from (not in a diff)."""
    counts = plan.summary()
    if plan.database is None:
        counts.pop("drift")
    return counts


def _run_dict(run: RunRequest) -> dict[str, Any]:
    entry = {
        "project": run.project,
        "workflow": run.workflow,
        "idempotency_key": run.idempotency_key,
        "action": run.action,
    }
    if run.reason:
        entry["reason"] = run.reason
    if run.commit:
        entry["commit"] = run.commit
    if run.own_repository:  # the project's own code repository, not the state one
        entry |= {"repository": run.repository, "ref": run.ref}
    return entry


def to_text(plan: Plan, style: Style = plain) -> str:
    lines: list[str] = [f"Database: {plan.database}"] if plan.database else []
    for email in plan.new_users:
        lines.append(style(f"  + user {email}", "green"))
    for change in plan.changes:
        lines += _change_lines(change, style)
    runs = [r for r in plan.runs if r.action != "exists"]
    if runs:
        lines.append("")
        lines.append("Runs:")
        lines += [_run_line(r, style) for r in runs]
    if plan.advisories:
        lines.append("")
        lines.append("Upgrade advisories:")
        lines += [_advisory_line(a) for a in plan.advisories]
    if plan.changes_present:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)


def summary_line(plan: Plan) -> str:
    if not plan.changes_present:
        if plan.database is None:
            return "No changes in the files."
        return "No changes. The database matches the files."
    counts = plan.summary()
    parts = [
        f"{counts[a]} to {a}"
        for a in ("create", "update", "adopt", "archive", "disable", "delete")
        if counts[a]
    ]
    if plan.new_users:
        parts.append(f"{len(plan.new_users)} user(s) to create")
    parts.append(f"{counts['runs']} run(s) to enqueue")
    if counts["drift"]:
        parts.append(f"{counts['drift']} drifted resource(s) put back")
    return "Plan: " + ", ".join(parts) + "."


def _change_lines(change: Change, style: Style) -> list[str]:
    symbol = _SYMBOLS[change.action]
    head = f"  {symbol} {change.kind} {change.key}"
    if change.action not in ("create", "update"):
        head += f" ({change.action})"
    if change.drift:
        head += " (drift: changed outside reconcile; this puts it back)"
    lines = [style(head, _COLOURS[symbol])]
    for path in change.paths:
        lines.append(
            f"      {path}: {_show(_get(change.before, path))} -> {_show(_get(change.after, path))}"
        )
    return lines


def _run_line(run: RunRequest, style: Style) -> str:
    if run.action == "skip":
        return f"  . {run.workflow}: not enqueued ({run.reason})"
    source = f" from {run.repository} {run.ref or 'HEAD'}" if run.own_repository else ""
    return style(f"  + run {run.workflow} ({run.idempotency_key}){source}", "green")


def _advisory_line(advisory: dict[str, Any]) -> str:
    state = (
        "BLOCKS the apply: acknowledge it"
        if advisory["blocking"]
        else ("acknowledged" if advisory["acknowledged"] else "for information")
    )
    return (
        f"  ! {advisory['project']} {advisory['upgrade']}: {advisory['severity']} "
        f"{advisory['key']} ({advisory['from_version']} -> {advisory['to_version']}) "
        f"{advisory['title']} [{state}]"
    )


def _get(fields: dict[str, Any] | None, path: str) -> Any:
    value: Any = fields
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _ABSENT
        value = value[part]
    return value


class _Absent:
    def __repr__(self) -> str:
        return "(none)"


_ABSENT = _Absent()


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(none)"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def to_markdown(plan: Plan, limit: int = MARKDOWN_LIMIT, title: str = "reconcile plan") -> str:
    """A pull-request comment; when the details would not fit, the rest is summarised."""
    counts = plan.summary()
    head = [f"### {title}", ""]
    if plan.commit:
        head.append(f"Commit `{plan.commit[:12]}` on `{plan.ref or 'detached'}`.")
        head.append("")
    if plan.database:
        head += [f"Database: {plan.database}.", ""]
    head.append(summary_line(plan))
    if plan.changes_present:
        head += [
            "",
            "| create | update | adopt | archive | disable | delete | runs |",
            "|---|---|---|---|---|---|---|",
            "| "
            + " | ".join(
                str(counts[k])
                for k in ("create", "update", "adopt", "archive", "disable", "delete", "runs")
            )
            + " |",
        ]
    body = [line for change in plan.changes for line in _change_lines(change, plain)]
    body += [_run_line(r, plain) for r in plan.runs if r.action != "exists"]
    if plan.advisories:
        head += ["", "**Upgrade advisories**", ""]
        head += [f"- {_advisory_line(a).strip()[2:]}" for a in plan.advisories]
    return _fit(head, body, limit)


def _fit(head: list[str], body: list[str], limit: int) -> str:
    opening, closing = (
        ["", "<details><summary>Details</summary>", "", "```diff"],
        ["```", "</details>"],
    )
    text = "\n".join(head)
    if not body:
        return text
    budget = limit - len(text) - 400  # room for the wrapper and the "more" line
    kept, used = [], 0
    for line in body:
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    more = len(body) - len(kept)
    tail = (
        ["", f"... and {more} more line(s), not shown: run `reconcile plan` for all."]
        if more
        else []
    )
    return "\n".join([*head, *opening, *kept, *closing, *tail])


# What a terminal obeys instead of printing: C0 controls but newline and tab, DEL, C1, and the
# bidirectional overrides and isolates (which reorder what follows). A step's output, a run
# event, a file name or a member's text can hold them; printed raw they clear the screen,
# rewrite earlier lines (\r), set the title or the clipboard (OSC), or disguise text.
_TERMINAL_CONTROLS = re.compile(
    "\x1b\\[[0-9;]*m|[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def for_terminal(text: str) -> str:
    """`text` with every terminal control shown as an escape (`\\x1b`, `\\r`, `\\u202e`);
    colours (SGR sequences, as click.style makes them) are kept."""
    if text.isascii() and not text.encode("ascii").translate(None, _PRINTABLE_ASCII):
        return text  # nothing to escape (a large JSON plan: a scan in C, not a regex's)
    return _TERMINAL_CONTROLS.sub(_shown_control, text)


_PRINTABLE_ASCII = bytes([0x09, 0x0A, *range(0x20, 0x7F)])


def _shown_control(match: re.Match[str]) -> str:
    found = match.group()
    if len(found) > 1:  # a colour
        return found
    return repr(found)[1:-1] if ord(found) < 0x100 else f"\\u{ord(found):04x}"
