"""Alembic environment: migrations run on a synchronous connection handed in by ``catalog.db.migrate``
(stdlib sqlite3, or asyncpg through ``run_sync``) before the daemon serves, so start-up and the CLI
share one code path. Batch mode is for SQLite, whose ALTER TABLE cannot do everything; on
PostgreSQL the same operations are plain ALTER TABLE statements."""

from alembic import context

from modelrepo.catalog.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
