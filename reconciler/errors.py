"""The errors a user can fix. Each one's text is the single line the CLI prints (exit code 1)."""


class ReconcilerError(Exception):
    """Base of every error the user can act on; str() is the message shown."""


class DatabaseUnavailable(ReconcilerError):
    """The database could not be reached or refused the connection."""


class SchemaTooNew(ReconcilerError):
    """The database schema was migrated by a newer ops-reconciler than this one."""


class SchemaTooOld(ReconcilerError):
    """The database schema lacks migrations this ops-reconciler needs."""


class SchemaConflict(ReconcilerError):
    """The database holds objects in the way of the migrations."""


class LockTimeout(ReconcilerError):
    """Another process held the lock for longer than the timeout."""


class EmbeddedServerError(ReconcilerError):
    """The embedded PostgreSQL server could not be set up or started."""


class ConfirmationRequired(ReconcilerError):
    """A destructive command was run without its confirmation flag."""


class CheckoutError(ReconcilerError):
    """A run's code could not be checked out: a refused repository URL or commit, a repository
    that cannot be reached, a commit that is not in it, or a timeout. One line, no credentials."""
