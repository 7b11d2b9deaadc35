"""A container runtime for the tests, and a small image built locally (no registry): busybox
and its applet links, imported from a tarball. Tests that need it skip, saying why, when the
host has neither podman nor docker."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from functools import cache
from pathlib import Path

import pytest

from reconciler.worker.executors import ContainerExecutor, container_executor

IMAGE = "localhost/ops-test-busybox:1"


@cache
def runtime() -> ContainerExecutor | None:
    return container_executor(None)


@cache
def busybox_image() -> str:
    """The image's name, built once per session; pytest.skip with the reason otherwise."""
    found = runtime()
    if found is None:
        pytest.skip("neither podman nor docker answers on this host (container tests skipped)")
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "root"
        (root / "bin").mkdir(parents=True)
        (root / "tmp").mkdir()
        (root / "tmp").chmod(0o1777)
        shutil.copy2(busybox, root / "bin" / "busybox")
        applets = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (root / "bin" / applet).symlink_to("busybox")
        archive = Path(folder) / "image.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        subprocess.run(
            [found.binary, "import", str(archive), IMAGE], capture_output=True, check=True
        )
    return IMAGE


def containers_named(prefix: str) -> list[str]:
    found = runtime()
    if found is None:
        return []
    done = subprocess.run(
        [found.binary, "ps", "--all", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [name for name in done.stdout.split() if name.startswith(prefix)]
