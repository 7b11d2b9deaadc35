"""The `reconcile` command line: options, dispatch, and the single place errors become exits."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler import __version__
from reconciler.commands import console as console_commands
from reconciler.commands import db as db_commands
from reconciler.commands import diff as diff_commands
from reconciler.commands import history as history_commands
from reconciler.commands import reconcile as reconcile_commands
from reconciler.commands import runs as runs_commands
from reconciler.core.plan import Safety
from reconciler.core.problems import Problem
from reconciler.core.render import for_terminal
from reconciler.db import secrets
from reconciler.errors import ReconcilerError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_LOCK_TIMEOUT_S = 30.0


def database_options(func: F) -> F:
    func = click.option(
        "--lock-timeout",
        type=click.FloatRange(min=0.001),
        default=DEFAULT_LOCK_TIMEOUT_S,
        show_default=True,
        help="Longest wait, in seconds, for any lock (another reconcile, rows another "
        "transaction holds).",
    )(func)
    return click.option(
        "--database-url",
        envvar="DATABASE_URL",
        metavar="URL",
        callback=_secret_url,
        help="PostgreSQL URL (default: DATABASE_URL, else the embedded server).",
    )(func)


def _secret_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    secrets.remember(value)
    return value


def echo(text: str) -> None:
    click.echo(for_terminal(secrets.redact(text)))


def echo_error(text: str) -> None:
    """Every line on stderr goes through here: never a password, whatever failed."""
    click.echo(for_terminal(secrets.redact(text)), err=True)


def state_dir_option(func: F) -> F:
    return click.option(
        "-C",
        "--dir",
        "state_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="The state directory with the YAML files.",
    )(func)


def plan_options(func: F) -> F:
    for option in reversed(
        [
            click.option(
                "--output",
                "-o",
                type=click.Choice(["text", "json", "markdown"]),
                default="text",
                show_default=True,
            ),
            click.option(
                "--detailed-exitcode",
                is_flag=True,
                help="Exit 2 when there are changes, 0 when there are none.",
            ),
            click.option(
                "--ref",
                metavar="BRANCH",
                help="The branch being reconciled (default: git, or the CI's variables).",
            ),
            click.option(
                "--adopt",
                is_flag=True,
                help="Take over rows with the same key that reconcile does not manage.",
            ),
            click.option(
                "--max-prune",
                type=click.IntRange(min=0),
                default=None,
                help="Refuse to prune more than this many resources.",
            ),
            click.option(
                "--allow-prune-all",
                is_flag=True,
                help="Allow a plan that prunes every managed resource.",
            ),
            click.option("--no-cache", is_flag=True, help="Parse every file again."),
            click.option(
                "--markdown-limit",
                type=click.IntRange(min=2000),
                default=65535,
                show_default=True,
                help="Longest Markdown output, in characters.",
            ),
            click.option(
                "--read-only",
                is_flag=True,
                help="plan: do not execute the writes (for a read-only database user).",
            ),
        ]
    ):
        func = option(func)
    return state_dir_option(database_options(func))


def options_from(params: dict[str, Any]) -> reconcile_commands.Options:
    return reconcile_commands.Options(
        state_dir=params["state_dir"],
        database_url=params["database_url"],
        lock_timeout_s=params["lock_timeout"],
        output=params["output"],
        detailed_exitcode=params["detailed_exitcode"],
        ref=params["ref"],
        safety=Safety(params["adopt"], params["max_prune"], params["allow_prune_all"]),
        use_cache=not params["no_cache"],
        colour=_colour(params["output"]),
        read_only=params["read_only"],
        markdown_limit=params["markdown_limit"],
    )


def plain(text: str, _colour: str) -> str:
    return text


def _colour(output: str) -> Callable[[str, str], str]:
    """Colour only for text on a terminal, and never with NO_COLOR set."""
    if output == "text" and sys.stdout.isatty() and "NO_COLOR" not in os.environ:
        return lambda text, name: click.style(text, fg=name)
    return plain


def confirmation(yes: bool) -> Callable[[str], bool] | None:
    if yes:
        return None
    if not sys.stdin.isatty():
        raise ReconcilerError("apply needs --yes when there is no terminal to confirm on")
    return lambda question: click.confirm(question, default=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(__version__, prog_name="reconcile")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.option("--dry-run", is_flag=True, help="Show the plan only (the same as `reconcile plan`).")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@plan_options
@click.pass_context
def cli(ctx: click.Context, /, debug: bool, dry_run: bool, yes: bool, **params: Any) -> None:
    """GitOps control plane for self-hosted Odoo environments.

    Without a command: apply the state directory to the database (`--dry-run`: show the plan).
    """
    if ctx.invoked_subcommand is not None:
        return
    options = options_from(params)
    if dry_run:
        sys.exit(reconcile_commands.plan(options, echo))
    sys.exit(reconcile_commands.apply(options, echo, confirmation(yes)))


@cli.command("validate")
@state_dir_option
def validate(state_dir: Path) -> None:
    """Check the files (schema and cross-references), without a database."""
    sys.exit(reconcile_commands.validate(reconcile_commands.Options(state_dir=state_dir), echo))


@cli.command("diff")
@click.option("--base", required=True, metavar="REF", help="The git ref to compare from.")
@click.option("--head", metavar="REF", help="The git ref to compare to (default: the files).")
@state_dir_option
@click.option("--output", "-o", type=click.Choice(["text", "json", "markdown"]), default="text")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes.")
@click.option("--markdown-limit", type=click.IntRange(min=2000), default=65535)
def diff(**params: Any) -> None:
    """What the files change between two git refs, with no database (a pull request's diff)."""
    options = reconcile_commands.Options(
        state_dir=params["state_dir"],
        output=params["output"],
        detailed_exitcode=params["detailed_exitcode"],
        colour=_colour(params["output"]),
        markdown_limit=params["markdown_limit"],
    )
    refs = diff_commands.Refs(params["base"], params["head"])
    sys.exit(diff_commands.run(options, refs, echo))


@cli.command("history")
@database_options
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def history(database_url: str | None, lock_timeout: float, limit: int, output: str) -> None:
    """Past applies, newest first: when, commit, ref, who, what changed."""
    sys.exit(history_commands.run(database_url, lock_timeout, limit, output, echo))


@cli.command("worker")
@database_options
@click.option("--id", "worker_id", help="The worker's name (default: host-pid).")
@click.option(
    "--lease",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Seconds a claim lasts without a heartbeat.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between polls when no NOTIFY arrives.",
)
@click.option("--once", is_flag=True, help="Stop when the queue is empty.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs in flight at once.",
)
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts"),
    show_default=True,
)
@click.option(
    "--executor",
    type=click.Choice(["process", "podman", "docker"]),
    default=None,
    help="Where steps of a workflow with a `tool` run (default: podman, else docker, found "
    "when needed); `process` runs every step as a sandboxed process.",
)
@click.option(
    "--mirrors-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the worker keeps one bare mirror per code repository (default: `mirrors` in "
    "its state folder, $RECONCILE_STATE_DIR or /var/lib/ops-reconciler as root).",
)
@click.option(
    "--secrets-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="NAME=value lines: the secrets workflows may ask for (config.secrets).",
)
@click.option(
    "--secrets-env-prefix",
    help="Take the secrets from this worker's variables PREFIX<NAME> instead.",
)
def worker(database_url: str | None, lock_timeout: float, **options: Any) -> None:
    """Claim queued runs and execute them (SIGTERM: finish the current run, then stop)."""
    sys.exit(runs_commands.worker(database_url, lock_timeout, options, echo))


@cli.group()
def runs() -> None:
    """Inspect, follow and cancel runs."""


@runs.command("list")
@database_options
@click.option("--project")
@click.option(
    "--status",
    type=click.Choice(["queued", "claimed", "running", "succeeded", "failed", "canceled"]),
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def runs_list(database_url: str | None, lock_timeout: float, **filters: Any) -> None:
    """Runs, newest first."""
    sys.exit(runs_commands.list_runs(database_url, lock_timeout, filters, echo))


@runs.command("show")
@database_options
@click.argument("run_id")
def runs_show(database_url: str | None, lock_timeout: float, run_id: str) -> None:
    """A run's events and artifacts."""
    sys.exit(runs_commands.show(database_url, lock_timeout, run_id, echo))


@runs.command("logs")
@database_options
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run is over.")
def runs_logs(database_url: str | None, lock_timeout: float, run_id: str, follow: bool) -> None:
    """A run's log lines."""
    sys.exit(runs_commands.logs(database_url, lock_timeout, run_id, follow, echo))


@runs.command("cancel")
@database_options
@click.argument("run_id")
@click.option("--reason")
def runs_cancel(
    database_url: str | None, lock_timeout: float, run_id: str, reason: str | None
) -> None:
    """Cancel a run: a queued one at once, a running one by its worker."""
    sys.exit(runs_commands.cancel(database_url, lock_timeout, run_id, reason, echo))


@runs.command("cleanup")
@database_options
@click.option(
    "--logs-older-than",
    "log_days",
    type=click.IntRange(min=1),
    default=30,
    show_default=True,
    help="Days to keep the logs of finished runs.",
)
def runs_cleanup(database_url: str | None, lock_timeout: float, log_days: int) -> None:
    """Delete expired artifacts and old logs."""
    sys.exit(runs_commands.cleanup(database_url, lock_timeout, log_days, echo))


@cli.group("console", invoke_without_command=True)
@database_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--artifacts-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("artifacts"),
    show_default=True,
    help="Where the workers store artifacts (their --artifacts-dir); only files in it are served.",
)
@click.option(
    "--jwks-url",
    envvar="RECONCILE_CONSOLE_JWKS_URL",
    metavar="URL",
    help="Also accept tokens signed by these keys (Supabase's asymmetric JWT keys).",
)
@click.option(
    "--secure-cookies", is_flag=True, help="Mark the session cookie Secure (behind HTTPS)."
)
@click.pass_context
def console(
    ctx: click.Context, /, database_url: str | None, lock_timeout: float, **opts: Any
) -> None:
    """Serve the web console: the fleet, projects, runs and their logs, per member."""
    if ctx.invoked_subcommand is not None:
        return
    options = console_commands.ServeOptions(**opts)
    sys.exit(console_commands.serve(database_url, lock_timeout, options, echo))


@console.command("token")
@database_options
@click.option("--email", required=True, help="The user (auth.users) to sign in.")
@click.option(
    "--ttl",
    type=int,
    default=8 * 3600,
    show_default=True,
    help="Seconds the token is valid (60 to 604800).",
)
def console_token(database_url: str | None, lock_timeout: float, email: str, ttl: int) -> None:
    """Print a short-lived sign-in token for a user (plain PostgreSQL, no Supabase)."""
    sys.exit(console_commands.token(database_url, lock_timeout, email, ttl, echo))


@cli.command("plan")
@plan_options
@click.option(
    "--out",
    "save_to",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the plan, for `reconcile apply FILE`.",
)
def plan(save_to: Path | None, **params: Any) -> None:
    """Show what apply would change; changes nothing (the writes are rolled back)."""
    sys.exit(reconcile_commands.plan(options_from(params), echo, save_to))


@cli.command("apply")
@plan_options
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.argument(
    "plan_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def apply(yes: bool, plan_file: Path | None, **params: Any) -> None:
    """Apply the files to the database in one transaction.

    With PLAN_FILE (from `reconcile plan --out`): apply exactly that plan, or refuse it if the
    database or the files changed since it was made.
    """
    if plan_file is not None:
        sys.exit(reconcile_commands.apply_saved(options_from(params), plan_file, echo))
    sys.exit(reconcile_commands.apply(options_from(params), echo, confirmation(yes)))


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


def report_problems(invalid: reconcile_commands.InvalidFiles) -> None:
    """One line per problem on stderr, and on GitHub Actions an annotation per problem."""
    for problem in invalid.problems:
        echo_error(str(problem))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for line in github_annotations(invalid.problems, invalid.root):
            echo(line)
    echo_error(f"error: {invalid}")


def github_annotations(problems: list[Problem], root: Path | None) -> list[str]:
    """`::error` workflow commands, so GitHub marks each problem on its line of the diff.
    Paths are relative to the workspace (the repository's root in a job)."""
    workspace = Path(os.environ.get("GITHUB_WORKSPACE") or ".").resolve()
    lines = []
    for problem in problems:
        path = (root or Path(".")).resolve() / problem.source.file
        where = os.path.relpath(path, workspace)
        lines.append(
            f"::error file={_escape(where, True)},line={problem.source.line},"
            f"col={problem.source.col},title={problem.code}::{_escape(problem.message, False)}"
        )
    return lines


def _escape(text: str, is_property: bool) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if is_property else text


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911  (one exit per error kind)
    """Entry point: exit 0 ok, 1 user-fixable error (one line on stderr), 2 only for changes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    secrets.remember_environment()
    try:
        cli.main(args=argv, prog_name="reconcile", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except reconcile_commands.InvalidFiles as exc:
        report_problems(exc)
        return 1
    except ReconcilerError as exc:
        echo_error(f"error: {exc}")
        return 1
    except click.exceptions.Abort:
        echo_error("error: aborted")
        return 1
    except click.ClickException as exc:
        echo_error(f"error: {exc.format_message()} (see `reconcile --help`)")
        return 1
    except Exception as exc:  # the last resort: one line, details only on request
        if debug:
            echo_error(traceback.format_exc().rstrip("\n"))
        echo_error(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)"
        )
        return 1
    return 0
