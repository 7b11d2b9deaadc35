"""Generate a fleet of N projects as YAML: 5 workflows and 10 members each, 2N users.

python -m bench.fleet DIR N
"""

from __future__ import annotations

import sys
from pathlib import Path

VERSIONS = ("16.0", "17.0", "18.0", "19.0")
ROLES = (
    "owner",
    "admin",
    "developer",
    "developer",
    "developer",
    "viewer",
    "viewer",
    "viewer",
    "viewer",
    "viewer",
)


def project_yaml(i: int, n: int, *, edited: bool = False) -> str:
    slug = f"fleet-{i:05d}"
    users = max(2 * n, 10)  # 2N users; each project has 10 distinct ones
    members = "\n".join(
        f"  - {{user: user{(i * 10 + k) % users:05d}@fleet.example, role: {ROLES[k]}}}"
        for k in range(10)
    )
    tier = "premium" if edited else ("standard" if i % 3 else "dev")
    return f"""\
apiVersion: ops/v1
kind: Project
slug: {slug}
workspace_key: fleet_{i:05d}
name: Fleet project {i}
description: Generated for the benchmark
odoo_version: "{VERSIONS[i % len(VERSIONS)]}"
config: {{tier: {tier}, region: r{i % 5}, workers: {2 + i % 6}}}
members:
{members}
workflows:
  - {{type: build, name: build-main, git_ref: main, config: {{steps: ["./build.sh"], timeout_s: 1800}}}}
  - {{type: test, name: test-main, git_ref: main, config: {{steps: ["./test.sh"], timeout_s: 3600}}}}
  - {{type: deploy, name: deploy-staging, git_ref: staging, config: {{steps: ["./deploy.sh staging"]}}}}
  - {{type: backup, name: nightly-backup, config: {{steps: ["./backup.sh"], schedule: "0 2 * * *"}}}}
  - {{type: upgrade, name: upgrade-next, enabled: false, config: {{steps: ["./upgrade.sh"]}}}}
"""


def write_fleet(root: Path, n: int) -> None:
    """N files under root/projects, each a project with 5 workflows and 10 members."""
    folder = root / "projects"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"fleet-{i:05d}.yaml").write_text(project_yaml(i, n))


def edit_one(root: Path, n: int, i: int = 0) -> None:
    (root / "projects" / f"fleet-{i:05d}.yaml").write_text(project_yaml(i, n, edited=True))


if __name__ == "__main__":
    write_fleet(Path(sys.argv[1]), int(sys.argv[2]))
