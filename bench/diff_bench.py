"""Time `reconcile diff` on a generated fleet with one project edited between two commits.

    .venv/bin/python -m bench.diff_bench [--projects 10000]

Cold: an empty cache (every blob parsed); warm: the same diff again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.fleet import edit_one, write_fleet
from bench.reconcile_bench import git
from reconciler.commands import diff
from reconciler.commands.shared import Options


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--projects", type=int, default=10000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="diff-bench-"))
    try:
        root = work / "fleet"
        write_fleet(root, args.projects)
        git(root, "init", "-q", "-b", "main")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "fleet")
        git(root, "branch", "base")
        edit_one(root, args.projects)
        git(root, "commit", "-q", "-am", "edit one project")
        os.environ["RECONCILE_CACHE_DIR"] = str(work / "cache")
        said: list[str] = []
        options = Options(state_dir=root, output="json")
        for label in ("cold", "warm", "warm"):
            started = time.perf_counter()
            diff.run(options, diff.Refs("base", "HEAD"), said.append)
            print(f"{label}: {time.perf_counter() - started:.2f} s", flush=True)
        assert '"changes_present": true' in said[-1]
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
