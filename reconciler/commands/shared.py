"""What the commands on files share (validate, diff, plan, apply): their options, the error of
invalid files, how a plan is shown, the parse cache's folder. Light on imports: `validate` and
`diff` start without loading the database's or the console's modules."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.core import render
from reconciler.core.plan import Plan, Safety
from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.core.problems import Problem
    from reconciler.files import Progress

Echo = Callable[[str], None]


class InvalidFiles(ReconcilerError):
    """The files have problems; nothing was written."""

    def __init__(self, problems: list[Problem], root: Path | None = None) -> None:
        super().__init__(f"{len(problems)} problem(s) in the files; nothing was written")
        self.problems = problems
        self.root = root  # the state directory the problems' files are relative to


@dataclass(frozen=True)
class Options:
    state_dir: Path
    database_url: str | None = None
    lock_timeout_s: float = 30.0
    output: str = "text"
    detailed_exitcode: bool = False
    ref: str | None = None
    safety: Safety = field(default_factory=Safety)
    use_cache: bool = True
    colour: Callable[[str, str], str] = render.plain
    read_only: bool = False  # plan without executing the writes (a read-only database user)
    markdown_limit: int = render.MARKDOWN_LIMIT
    projects: tuple[str, ...] = ()  # only these projects' changes and runs (empty: all)
    progress: Progress | None = None  # told of the files parsed (on a terminal only)


def show(result: Plan, options: Options, out: Echo, title: str = "reconcile plan") -> int:
    if options.output == "json":
        out(render.to_json(result))
    elif options.output == "markdown":
        out(render.to_markdown(result, options.markdown_limit, title))
    else:
        out(render.to_text(result, options.colour))
    return 2 if options.detailed_exitcode and result.changes_present else 0


def cache_dir() -> Path:
    if explicit := os.environ.get("RECONCILE_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ops-reconciler"
