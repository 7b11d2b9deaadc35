"""Everything that talks to PostgreSQL: connections, migrations, the embedded server."""
