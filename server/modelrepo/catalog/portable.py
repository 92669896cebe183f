"""SQL that differs between the catalog's two engines, written once.

Upserts: SQLite and PostgreSQL both have ``INSERT … ON CONFLICT``, but SQLAlchemy builds it from
each dialect's own ``insert``; ``insert(conn, table)`` picks it from the connection, so the services
stay engine-agnostic. JSON: SQLite's ``json_extract`` and PostgreSQL's ``->>`` read a text column
holding JSON; ``json_text`` renders whichever the statement is compiled for.
"""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


def insert(conn: AsyncConnection | sa.Connection, table: sa.Table) -> Any:
    """The dialect's ``insert`` (with ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


class json_text(FunctionElement):  # noqa: N801 - used like a SQL function
    """``json_text(column, "key")``: the top-level ``key`` of the JSON text in ``column``, as text
    (SQL NULL when absent). The key is part of the statement, never user input: a plain name."""

    type = sa.Text()
    inherit_cache = False

    def __init__(self, column: sa.ColumnElement, key: str) -> None:
        if not key.isidentifier():
            raise ValueError(f"json_text: key must be a plain name, got {key!r}")
        self.key = key
        super().__init__(column)


@compiles(json_text, "sqlite")
def _json_text_sqlite(element: json_text, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"json_extract({compiler.process(column, **kw)}, '$.{element.key}')"


@compiles(json_text, "postgresql")
def _json_text_postgresql(element: json_text, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"(CAST({compiler.process(column, **kw)} AS JSON) ->> '{element.key}')"
