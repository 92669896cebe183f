"""``modelrepo catalog migrate-to URL``: every row of one catalog copied into another, checked.

The usual move is from the embedded SQLite file to PostgreSQL when a team outgrows one process,
but any direction works: both ends are opened (and so migrated) by the same code, so their schemas
are the same revision. The copy

- refuses a target that holds any row (it never merges, never overwrites);
- reads the source in one snapshot and writes the target in one transaction, table by table in
  foreign-key order, rows streamed in batches (memory stays flat however big ``model_files`` is);
- moves PostgreSQL's id sequences past the copied ids, so the next user, token or model gets a
  fresh id rather than a duplicate-key error;
- counts every table on both sides before it commits: a mismatch rolls the whole copy back.

Stop the daemon first: writes made after the snapshot are not in the copy.
"""

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import metadata
from modelrepo.ops import OpsError

BATCH = 1000  # rows per INSERT … VALUES batch


async def _count(conn: AsyncConnection, table: sa.Table) -> int:
    return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


async def _check_empty(conn: AsyncConnection) -> None:
    for table in metadata.sorted_tables:
        if n := await _count(conn, table):
            raise OpsError(f"the target catalog is not empty: table {table.name} has {n} rows. migrate-to copies "
                           f"into an empty catalog only (create a new database for it)")


def _serial_columns(table: sa.Table) -> list[sa.Column]:
    """Integer primary keys PostgreSQL fills from a sequence (SERIAL)."""
    pk = list(table.primary_key.columns)
    return pk if len(pk) == 1 and isinstance(pk[0].type, sa.Integer) and pk[0].autoincrement in (True, "auto") \
        else []


async def _reset_sequences(conn: AsyncConnection) -> None:
    for table in metadata.sorted_tables:
        for col in _serial_columns(table):
            await conn.execute(sa.text(
                f"SELECT setval(pg_get_serial_sequence(:t, :c), COALESCE(MAX({col.name}), 1), MAX({col.name}) IS NOT NULL) "
                f"FROM {table.name}"), {"t": table.name, "c": col.name})


async def copy_catalog(source: Catalog, target: Catalog, say: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    """Copy every row; return the row count per table (as verified in the target before commit)."""
    counts: dict[str, int] = {}
    async with target.tx() as dst, source.snapshot() as src:
        await _check_empty(dst)
        for table in metadata.sorted_tables:
            copied = 0
            result = await src.stream(sa.select(table).order_by(*table.primary_key.columns))
            async for rows in result.partitions(BATCH):
                try:
                    await dst.execute(table.insert(), [row._asdict() for row in rows])
                except sa.exc.DBAPIError as exc:
                    raise OpsError(f"copying table {table.name} failed, nothing was copied: "
                                   f"{str(exc.orig).strip()}") from None
                copied += len(rows)
            counts[table.name] = copied
            say(f"copied {table.name}: {copied} rows")
        if target.dialect == "postgresql":
            await _reset_sequences(dst)
        for table in metadata.sorted_tables:
            there = await _count(dst, table)
            if there != counts[table.name] or there != await _count(src, table):
                raise OpsError(f"table {table.name}: {counts[table.name]} rows read, {there} in the target; "
                               f"nothing was copied")
    return counts
