"""Alembic environment: migrations run synchronously (stdlib sqlite3) before the daemon's async
engine opens, so start-up and the CLI share one code path."""

from alembic import context

from modelrepo.catalog.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
