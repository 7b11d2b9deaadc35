"""Stops the embedded PostgreSQL once no `reconcile` process uses it any more.

Started detached by `EmbeddedPostgres` as `python -m reconciler.db.watchdog STATE_DIR VERSION`.
Every client holds a shared flock on `clients.lock` while it runs; the kernel drops it when the
client exits, SIGKILL included. The watchdog waits until it can lock that file exclusively,
then, holding `control.lock` so that no client can join meanwhile, checks again and stops the
server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from reconciler.db.embedded import EmbeddedPostgres, Layout, ServerUser, _LockFile


def watch(server: EmbeddedPostgres) -> None:
    layout = server.layout
    alive = _LockFile.exclusive(layout.watchdog_lock)  # held for as long as this process lives
    while True:
        with _LockFile.exclusive(layout.clients_lock):
            pass  # blocks until the last client is gone
        control = _LockFile.exclusive(layout.control_lock)
        if not _LockFile.is_held(layout.clients_lock):
            server.stop()
            alive.close()  # before control: a client that joins next must spawn a new watchdog
            control.close()
            return
        control.close()  # a client joined in between: wait for it too


def main(argv: list[str]) -> int:
    state_dir, version = argv
    layout = Layout(Path(state_dir), version)
    if os.fork() > 0:
        os._exit(0)  # the parent returns at once; the child, reparented to init, watches
    watch(EmbeddedPostgres(layout, ServerUser.for_current_process()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
