"""The Alembic migrations and the table definitions the queries use must describe the same schema."""

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from modelrepo.catalog.db import migrate
from modelrepo.catalog.schema import metadata


def test_migrations_match_schema(tmp_path):
    path = tmp_path / "catalog.db"
    migrate(path)
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diff == [], diff


def test_migrate_is_idempotent(tmp_path):
    path = tmp_path / "catalog.db"
    migrate(path)
    migrate(path)  # a restart runs it again: nothing to do, nothing broken
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        version = conn.execute(sa.text("select version_num from alembic_version")).scalar()
    engine.dispose()
    assert version == "0009"
