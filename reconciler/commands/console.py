"""`reconcile console` (serve the web console) and `reconcile console token` (sign someone in)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.console.identity import MAX_TOKEN_TTL_S, Verifier, console_secret, mint
from reconciler.db import migrations
from reconciler.db.connection import connect, user_errors
from reconciler.db.embedded import default_state_dir
from reconciler.db.queries import query
from reconciler.db.target import open_target
from reconciler.errors import ReconcilerError

Echo = Callable[[str], None]


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    artifacts_dir: Path
    jwks_url: str | None
    secure_cookies: bool


def serve(url: str | None, lock_timeout_s: float, options: ServeOptions, out: Echo) -> int:
    # Only the server needs these; importing them on every `reconcile` start would slow it.
    import uvicorn  # noqa: PLC0415

    from reconciler.console.app import Settings, create_app  # noqa: PLC0415

    verifier = Verifier(secret=console_secret(default_state_dir()), jwks_url=options.jwks_url)
    with open_target(url, lock_timeout_s=lock_timeout_s) as target:
        with connect(target.conninfo) as conn, user_errors("starting the console"):
            migrations.require_current(migrations.read_status(conn))
        settings = Settings(
            conninfo=target.conninfo,
            verifier=verifier,
            artifacts_dir=options.artifacts_dir,
            secure_cookies=options.secure_cookies,
        )
        listening = _listen(options.host, options.port)
        out(
            f"console: http://{options.host}:{options.port}/ on {target.description} "
            "(sign in with `reconcile console token --email ...`)"
        )
        config = uvicorn.Config(
            create_app(settings),
            host=options.host,
            port=options.port,
            log_level=os.environ.get("RECONCILE_CONSOLE_LOG_LEVEL", "warning"),
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,  # live-log streams would otherwise hold a stop
        )
        uvicorn.Server(config).run(sockets=[listening])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The console's socket, bound before the server starts: a port in use (or an address
    not of this machine) is one line and exit 1, not the server's own log and exit 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ReconcilerError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(choose another --port, or a --host of this machine)"
        ) from None
    return listening


def token(url: str | None, lock_timeout_s: float, email: str, ttl_s: int, out: Echo) -> int:
    """Print a signed token for the user with this e-mail, for the console's sign-in page."""
    if not 60 <= ttl_s <= MAX_TOKEN_TTL_S:
        raise ReconcilerError(f"--ttl must be between 60 and {MAX_TOKEN_TTL_S} seconds")
    with (
        open_target(url, lock_timeout_s=lock_timeout_s) as target,
        connect(target.conninfo) as conn,
        user_errors("looking up the user"),
    ):
        migrations.require_current(migrations.read_status(conn))
        row = conn.execute(query("console_user_id"), {"email": email}).fetchone()
    if row is None:
        raise ReconcilerError(
            f"no user {email!r} in auth.users (members are created by `reconcile apply`)"
        )
    out(mint(console_secret(default_state_dir()), row[0], email, ttl_s))  # type: ignore[arg-type]
    return 0
