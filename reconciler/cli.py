"""The `reconcile` command line: options, dispatch, and the single place errors become exits."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from reconciler import __version__
from reconciler.commands import db as db_commands
from reconciler.errors import ReconcilerError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_LOCK_TIMEOUT_S = 30.0


def database_options(func: F) -> F:
    func = click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0.001),
        default=DEFAULT_LOCK_TIMEOUT_S,
        show_default=True,
        help="Seconds to wait for another reconcile holding the lock.",
    )(func)
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        metavar="URL",
        help="PostgreSQL URL (default: DATABASE_URL, else the embedded server).",
    )(func)


def echo(text: str) -> None:
    click.echo(text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconcile")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """GitOps control plane for self-hosted Odoo environments."""
    ctx.obj = {"debug": debug}


@cli.group()
def db() -> None:
    """Install, inspect and remove the ops.* schema."""


@db.command("migrate")
@database_options
def db_migrate(database_url: str | None, lock_timeout: float) -> None:
    """Apply pending migrations (in one transaction, under an advisory lock)."""
    sys.exit(db_commands.migrate(database_url, lock_timeout, echo))


@db.command("status")
@database_options
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def db_status(database_url: str | None, lock_timeout: float, output: str) -> None:
    """Schema version, pending migrations, and which auth schema was found.

    Exits 1 when the schema is older or newer than this ops-reconciler.
    """
    sys.exit(db_commands.status(database_url, lock_timeout, output, echo))


@db.command("drop")
@database_options
@click.option("--yes", is_flag=True, help="Confirm: delete every ops.* table and its rows.")
def db_drop(database_url: str | None, lock_timeout: float, yes: bool) -> None:
    """Remove the ops.* schema (the seed's rollback). Refuses without --yes."""
    sys.exit(db_commands.drop(database_url, lock_timeout, yes, echo))


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 ok, 1 user-fixable error (one line on stderr), 2 only for changes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="reconcile", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except ReconcilerError as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()} (see `reconcile --help`)", err=True)
        return 1
    except Exception as exc:  # the last resort: one line, details only on request
        if debug:
            traceback.print_exc()
        click.echo(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)",
            err=True,
        )
        return 1
    return 0
