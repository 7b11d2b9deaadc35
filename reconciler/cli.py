"""The `reconcile` command line: options, dispatch, and the single place errors become exits."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource
from click.shell_completion import get_completion_class

from reconciler import __version__
from reconciler.commands import progress
from reconciler.core.render import for_terminal
from reconciler.db import secrets
from reconciler.errors import ReconcilerError

if TYPE_CHECKING:
    from reconciler.commands.shared import InvalidFiles, Options
    from reconciler.core.problems import Problem

# Each command imports its own module when it runs (the imports inside the functions below):
# `validate` and `diff` never load the database's modules, and no command loads the console's
# web stack but `console`; a command starts in a fraction of the time.

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_LOCK_TIMEOUT_S = 30.0
log = logging.getLogger("reconciler")


class CliOnly(click.Option):
    """An option the command line layer consumes itself (the callback never sees it)."""


class Command(click.Command):
    """Every `reconcile` command. Options written before the command's name (on `reconcile`
    or on a group) are options of the command: honoured when the command has them, refused
    in one line when it has not, never ignored. Adding a command needs nothing more than
    `@cli.command(...)` (or `@<group>.command(...)`) and its options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(DEBUG_OPTION)

    def invoke(self, ctx: click.Context) -> Any:
        inherit(ctx, self)
        apply_cli_only(ctx, self)
        return super().invoke(ctx)


class Group(click.Group):
    """A group whose commands (and subgroups) are Commands."""

    command_class = Command
    group_class = type  # subgroups are Groups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(p.name == "debug" for p in self.params):
            self.params.append(DEBUG_OPTION)

    def invoke(self, ctx: click.Context) -> Any:
        """A group run as a command itself (`reconcile history`, `reconcile console`) takes
        the options written before it, as a command does."""
        if ctx.parent is not None and not getattr(ctx, "_protected_args", None):
            inherit(ctx, self)
        apply_cli_only(ctx, self)
        return super().invoke(ctx)


DEBUG_OPTION = CliOnly(
    ["--debug"], is_flag=True, help="Say what is done on stderr; tracebacks of unexpected errors."
)


def inherit(ctx: click.Context, command: click.Command) -> None:
    """Give the command the options written on the groups before it."""
    own = {p.name: p for p in command.params if p.name}
    where = ctx.command_path
    parent = ctx.parent
    while parent is not None:
        for name, value in parent.params.items():
            if parent.get_parameter_source(name) is not ParameterSource.COMMANDLINE:
                continue
            flag = _flag(parent.command, name)
            param = own.get(name)
            if param is None:
                raise click.UsageError(f"{flag} is not an option of `{where}`", ctx)
            ctx.params[name] = _merged(ctx, param, flag, value)
        parent = parent.parent


def _merged(ctx: click.Context, param: click.Parameter, flag: str, value: Any) -> Any:
    assert param.name is not None
    given = ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    try:
        converted = param.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise click.UsageError(f"{flag} before `{ctx.command_path}`: {exc.message}", ctx) from None
    if param.multiple:
        return (*converted, *(ctx.params[param.name] if given else ()))
    if given and ctx.params[param.name] != converted:
        raise click.UsageError(
            f"{flag} is given before and after `{ctx.command_path}` with different values", ctx
        )
    return converted


def _flag(command: click.Command, name: str) -> str:
    for param in command.params:
        if param.name == name and isinstance(param, click.Option):
            return "/".join(sorted(param.opts, key=len))
    return name


class _Redacting(logging.Formatter):
    """Debug lines go through the same redactor as every other line: never a password."""

    def format(self, record: logging.LogRecord) -> str:
        return for_terminal(secrets.redact(super().format(record)))


def apply_cli_only(ctx: click.Context, command: click.Command) -> None:
    """Consume the CliOnly options: --debug, and -C of the commands without files (the
    repository whose embedded database to use)."""
    if ctx.params.get("debug"):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Redacting("debug: %(message)s"))
        logging.basicConfig(handlers=[handler])
        log.setLevel(logging.DEBUG)
    consumed = any(isinstance(p, CliOnly) and p.name == "state_dir" for p in command.params)
    if consumed and isinstance(ctx.params.get("state_dir"), Path):
        from reconciler.db import target  # only the commands on a database load it

        target.use_repository(ctx.params["state_dir"])
    for param in command.params:
        if isinstance(param, CliOnly) and param.name:
            ctx.params.pop(param.name, None)


def state_dir_option(func: F, *, cli_only: bool = False) -> F:
    help_text = (
        "The repository whose embedded database to use (default: the current folder's)."
        if cli_only
        else "The state directory with the YAML files."
    )
    return click.option(
        "-C",
        "--dir",
        "state_dir",
        cls=CliOnly if cli_only else click.Option,
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help=help_text,
    )(func)


def connection_options(func: F) -> F:
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
        help="PostgreSQL URL (default: DATABASE_URL, else the repository's embedded database).",
    )(func)


def _secret_url(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    secrets.remember(value)
    return value


def database_options(func: F) -> F:
    """The options of a command that works on a database and no files: the database, and
    `-C`, the repository whose embedded database it is (consumed here, never passed on)."""
    return state_dir_option(connection_options(func), cli_only=True)


def echo(text: str) -> None:
    click.echo(for_terminal(secrets.redact(text)))


def echo_error(text: str) -> None:
    """Every line on stderr goes through here: never a password, whatever failed."""
    click.echo(for_terminal(secrets.redact(text)), err=True)


def output_option(*choices: str) -> Callable[[F], F]:
    return click.option(
        "--output",
        "-o",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="The output format.",
    )


def project_option(func: F) -> F:
    return click.option(
        "--project",
        "projects",
        metavar="SLUG",
        multiple=True,
        help="Only this project's changes and runs; nothing outside it is pruned (repeatable).",
    )(func)


def plan_options(func: F, *, read_only: bool = True) -> F:
    options = [
        output_option("text", "json", "markdown"),
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
        project_option,
    ]
    if read_only:
        options.append(
            click.option(
                "--read-only",
                is_flag=True,
                help="Do not execute the writes (for a read-only database user).",
            )
        )
    for option in reversed(options):
        func = option(func)
    return state_dir_option(connection_options(func))


def options_from(params: dict[str, Any]) -> Options:
    from reconciler.commands.shared import Options
    from reconciler.core.plan import Safety

    return Options(
        state_dir=params["state_dir"],
        database_url=params["database_url"],
        lock_timeout_s=params["lock_timeout"],
        output=params["output"],
        detailed_exitcode=params["detailed_exitcode"],
        ref=params["ref"],
        safety=Safety(params["adopt"], params["max_prune"], params["allow_prune_all"]),
        use_cache=not params["no_cache"],
        colour=_colour(params["output"]),
        read_only=params.get("read_only", False),
        markdown_limit=params["markdown_limit"],
        projects=tuple(params["projects"]),
        progress=progress.for_terminal(),
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


def apply_options(func: F) -> F:
    func = click.option("--yes", "-y", is_flag=True, help="Apply without asking.")(func)
    func = click.option(
        "--dry-run", is_flag=True, help="Show the plan only (the same as `reconcile plan`)."
    )(func)
    return plan_options(func, read_only=False)


@click.group(
    cls=Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
)
@click.version_option(__version__, prog_name="reconcile")
@click.option(
    "--debug", is_flag=True, help="Say what is done on stderr; tracebacks of unexpected errors."
)
@click.option(
    "--read-only",
    is_flag=True,
    help="With --dry-run or `plan`: do not execute the writes (a read-only database user).",
)
@apply_options
@click.pass_context
def cli(ctx: click.Context, /, debug: bool, dry_run: bool, yes: bool, **params: Any) -> None:
    """GitOps control plane for self-hosted Odoo environments.

    Without a command: apply the state directory to the database (`--dry-run`: show the plan).
    The options before a command are that command's options.
    """
    if debug:
        apply_cli_only(ctx, ctx.command)
    if ctx.invoked_subcommand is not None:
        return
    from reconciler.commands import reconcile as reconcile_commands
    from reconciler.db import target

    target.use_repository(params["state_dir"])
    options = options_from(params)
    if dry_run:
        sys.exit(reconcile_commands.plan(options, echo))
    if options.read_only:
        raise ReconcilerError("--read-only is for plans: add --dry-run, or use `reconcile plan`")
    sys.exit(reconcile_commands.apply(options, echo, confirmation(yes)))


@cli.command("validate")
@state_dir_option
@output_option("text", "json")
@click.option("--no-cache", is_flag=True, help="Parse every file again.")
def validate(state_dir: Path, output: str, no_cache: bool) -> None:
    """Check the files (schema and cross-references), without a database."""
    from reconciler.commands.shared import Options
    from reconciler.commands.validate import validate as run

    options = Options(
        state_dir=state_dir, output=output, use_cache=not no_cache, progress=progress.for_terminal()
    )
    sys.exit(run(options, echo))


@cli.command("diff")
@click.option("--base", required=True, metavar="REF", help="The git ref to compare from.")
@click.option("--head", metavar="REF", help="The git ref to compare to (default: the files).")
@state_dir_option
@output_option("text", "json", "markdown")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes.")
@click.option(
    "--markdown-limit",
    type=click.IntRange(min=2000),
    default=65535,
    show_default=True,
    help="Longest Markdown output, in characters.",
)
@click.option("--no-cache", is_flag=True, help="Parse every file of the working tree again.")
def diff(**params: Any) -> None:
    """What the files change between two git refs, with no database (a pull request's diff)."""
    from reconciler.commands import diff as diff_commands
    from reconciler.commands.shared import Options

    options = Options(
        state_dir=params["state_dir"],
        output=params["output"],
        detailed_exitcode=params["detailed_exitcode"],
        colour=_colour(params["output"]),
        markdown_limit=params["markdown_limit"],
        use_cache=not params["no_cache"],
    )
    refs = diff_commands.Refs(params["base"], params["head"])
    sys.exit(diff_commands.run(options, refs, echo))


@cli.group(cls=Group, invoke_without_command=True)
@database_options
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="How many applies to list.",
)
@output_option("text", "json")
@click.pass_context
def history(ctx: click.Context, /, **_: Any) -> None:
    """Past applies, newest first: when, commit, ref, who (the CI actor and the database
    role), what changed. `reconcile history show ID`: the changes of one apply."""
    from reconciler.commands import history as history_commands

    if ctx.invoked_subcommand is None:
        p = ctx.params
        sys.exit(
            history_commands.run(
                p["database_url"], p["lock_timeout"], p["limit"], p["output"], echo
            )
        )


@history.command("show")
@database_options
@output_option("text", "json")
@click.argument("apply_id")
def history_show(database_url: str | None, lock_timeout: float, output: str, apply_id: str) -> None:
    """What one apply changed (APPLY_ID: from `reconcile history`; a prefix is enough)."""
    from reconciler.commands import history as history_commands

    sys.exit(history_commands.show(database_url, lock_timeout, apply_id, output, echo))


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
    help="Where the runs' artifacts are kept.",
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
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.worker(database_url, lock_timeout, options, echo))


@cli.group()
def runs() -> None:
    """Inspect, follow, start, retry and cancel runs."""


@runs.command("list")
@database_options
@click.option("--project", metavar="SLUG", help="Only this project's runs.")
@click.option(
    "--status",
    type=click.Choice(["queued", "claimed", "running", "succeeded", "failed", "canceled"]),
    help="Only runs in this state.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="How many runs to list.",
)
@output_option("text", "json")
def runs_list(database_url: str | None, lock_timeout: float, **filters: Any) -> None:
    """Runs, newest first."""
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.list_runs(database_url, lock_timeout, filters, echo))


@runs.command("show")
@database_options
@click.argument("run_id")
def runs_show(database_url: str | None, lock_timeout: float, run_id: str) -> None:
    """A run's events and artifacts."""
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.show(database_url, lock_timeout, run_id, echo))


@runs.command("logs")
@database_options
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run is over.")
def runs_logs(database_url: str | None, lock_timeout: float, run_id: str, follow: bool) -> None:
    """A run's log lines."""
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.logs(database_url, lock_timeout, run_id, follow, echo))


@runs.command("cancel")
@database_options
@click.argument("run_id")
@click.option("--reason", help="Why, recorded with the run.")
def runs_cancel(
    database_url: str | None, lock_timeout: float, run_id: str, reason: str | None
) -> None:
    """Cancel a run: a queued one at once, a running one by its worker."""
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.cancel(database_url, lock_timeout, run_id, reason, echo))


@runs.command("start")
@database_options
@click.argument("workflow")
@click.option("--ref", help="Branch or tag to run (default: the workflow's git_ref).")
@click.option("--commit", help="Commit SHA to run (default: the last applied commit).")
def runs_start(
    database_url: str | None,
    lock_timeout: float,
    workflow: str,
    ref: str | None,
    commit: str | None,
) -> None:
    """Start a run of PROJECT/TYPE/NAME by hand (also for `on: [manual]` workflows)."""
    from reconciler.commands import runs as runs_commands

    at = {"ref": ref, "commit": commit}
    sys.exit(runs_commands.start(database_url, lock_timeout, workflow, at, echo))


@runs.command("retry")
@database_options
@click.argument("run_id")
def runs_retry(database_url: str | None, lock_timeout: float, run_id: str) -> None:
    """Queue a new run of a finished run's commit, linked to it."""
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.retry(database_url, lock_timeout, run_id, echo))


@runs.command("schedule")
@database_options
@click.option("--project", metavar="SLUG", help="Only this project's scheduled workflows.")
@click.option(
    "--count",
    type=click.IntRange(min=1, max=100),
    default=3,
    show_default=True,
    help="How many next slots to show per workflow.",
)
def runs_schedule(
    database_url: str | None, lock_timeout: float, project: str | None, count: int
) -> None:
    """Scheduled workflows: their last slot and the next ones (UTC)."""
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.schedule(database_url, lock_timeout, project, count, echo))


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
    from reconciler.commands import runs as runs_commands

    sys.exit(runs_commands.cleanup(database_url, lock_timeout, log_days, echo))


@cli.group("console", invoke_without_command=True)
@database_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port to listen on.",
)
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
    from reconciler.commands import console as console_commands

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
    from reconciler.commands import console as console_commands

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
    from reconciler.commands import reconcile as reconcile_commands

    sys.exit(reconcile_commands.plan(options_from(params), echo, save_to, say=say))


@cli.command("apply")
@apply_options
@click.argument(
    "plan_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def apply(yes: bool, dry_run: bool, plan_file: Path | None, **params: Any) -> None:
    """Apply the files to the database in one transaction.

    With PLAN_FILE (from `reconcile plan --out`): apply exactly that plan, or refuse it if the
    database or the files changed since it was made.
    """
    from reconciler.commands import reconcile as reconcile_commands

    options = options_from(params)
    if dry_run:
        if plan_file is not None:
            raise ReconcilerError("--dry-run shows a plan; a saved plan is shown by its file")
        sys.exit(reconcile_commands.plan(options, echo))
    if plan_file is not None:
        sys.exit(reconcile_commands.apply_saved(options, plan_file, echo))
    sys.exit(reconcile_commands.apply(options, echo, confirmation(yes)))


@cli.command("export")
@click.option(
    "-C",
    "--dir",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="The folder to write the YAML files into (created if missing).",
)
@connection_options
@project_option
def export(
    state_dir: Path, database_url: str | None, lock_timeout: float, projects: tuple[str, ...]
) -> None:
    """Write the YAML files of the rows a database already holds (then `plan --adopt`)."""
    from reconciler.commands import export as export_commands

    sys.exit(export_commands.run(state_dir, database_url, lock_timeout, projects, echo))


@cli.command("init")
@click.argument(
    "folder", required=False, type=click.Path(file_okay=False, path_type=Path), default=Path(".")
)
def init(folder: Path) -> None:
    """Start a state directory in FOLDER (default: here): a sample project, schema modelines,
    the ignore file, the CI workflows and a pre-commit config."""
    from reconciler.commands import init as init_commands

    sys.exit(init_commands.run(folder, echo))


@cli.command("schema")
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The folder to write the JSON Schemas into (created if missing).",
)
def schema(folder: Path) -> None:
    """Write the JSON Schemas (one per kind, and ops-reconciler.json for any file)."""
    from reconciler.commands import init as init_commands

    sys.exit(init_commands.write_schemas(folder, echo))


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script: `eval "$(reconcile completion bash)"` in ~/.bashrc
    (zsh: the same in ~/.zshrc; fish: into ~/.config/fish/completions/reconcile.fish)."""
    complete = get_completion_class(shell)
    assert complete is not None
    click.echo(complete(cli, {}, "reconcile", "_RECONCILE_COMPLETE").source())


@cli.group()
def db() -> None:
    """Install, inspect and remove the ops.* schema."""


@db.command("migrate")
@database_options
def db_migrate(database_url: str | None, lock_timeout: float) -> None:
    """Apply pending migrations (in one transaction, under an advisory lock)."""
    from reconciler.commands import db as db_commands

    sys.exit(db_commands.migrate(database_url, lock_timeout, echo))


@db.command("status")
@database_options
@output_option("text", "json")
def db_status(database_url: str | None, lock_timeout: float, output: str) -> None:
    """Schema version, pending migrations, and which auth schema was found.

    Exits 1 when the schema is older or newer than this ops-reconciler.
    """
    from reconciler.commands import db as db_commands

    sys.exit(db_commands.status(database_url, lock_timeout, output, echo))


@db.command("drop")
@database_options
@click.option("--yes", "-y", is_flag=True, help="Confirm: delete every ops.* table and its rows.")
def db_drop(database_url: str | None, lock_timeout: float, yes: bool) -> None:
    """Remove the ops.* schema (the seed's rollback). Refuses without --yes."""
    from reconciler.commands import db as db_commands

    sys.exit(db_commands.drop(database_url, lock_timeout, yes, echo))


def say(text: str) -> None:
    """A note for the user, on stderr (stdout keeps only the output asked for)."""
    echo_error(text)


def report_problems(invalid: InvalidFiles) -> None:
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: exit 0 ok, 1 user-fixable error (one line on stderr), 2 only for changes."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    secrets.remember_environment()
    try:
        cli.main(args=argv, prog_name="reconcile", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    except ReconcilerError as exc:
        from reconciler.commands.shared import InvalidFiles

        if isinstance(exc, InvalidFiles):
            report_problems(exc)
        else:
            echo_error(f"error: {exc}")
        return 1
    except click.exceptions.Abort:
        echo_error("error: aborted")
        return 1
    except click.ClickException as exc:
        where = exc.ctx.command_path if getattr(exc, "ctx", None) else "reconcile"  # type: ignore[attr-defined]
        echo_error(f"error: {exc.format_message()} (see `{where} --help`)")
        return 1
    except Exception as exc:  # the last resort: one line, details only on request
        if debug:
            echo_error(traceback.format_exc().rstrip("\n"))
        echo_error(
            f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)"
        )
        return 1
    return 0
