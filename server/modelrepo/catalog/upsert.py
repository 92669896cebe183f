"""``INSERT … ON CONFLICT DO NOTHING`` for whichever engine holds the catalog.

SQLAlchemy spells it per dialect (``sqlalchemy.dialects.sqlite.insert`` and
``…postgresql.insert``); callers that must be right on SQLite and PostgreSQL alike ask here with
the connection they are in, so "create once, whoever comes first" is one statement everywhere.
"""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def insert_ignore(conn: AsyncConnection, table: sa.Table, index_elements: list[str]):
    """An insert into ``table`` that does nothing when a row with the same ``index_elements``
    exists (add ``.values(…)``). Its rowcount says whether this caller inserted."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=index_elements)
