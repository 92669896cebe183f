"""PostgreSQL's own tools for the catalog part of backup and restore: ``pg_dump --format=custom``
and ``pg_restore``, never a home-made dump.

The tools come from the same major version as the server when it is installed (Debian keeps each
version's binaries in /usr/lib/postgresql/<major>/bin, outside PATH), else the nearest newer one,
else whatever PATH has: pg_dump refuses a server newer than itself. The password goes to them in
the environment (PGPASSWORD), never on a command line other users can read.
"""

import asyncio
import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from modelrepo.catalog import urls
from modelrepo.catalog.db import pg_connect, run_blocking
from modelrepo.catalog.schema import metadata
from modelrepo.ops import OpsError

TOOL_TIMEOUT = 3600.0


def find_tool(name: str, server_major: int) -> str:
    """The ``name`` binary for a server of ``server_major``: same major, else the nearest newer, else PATH."""
    versions = {}
    for path in glob.glob(f"/usr/lib/postgresql/*/bin/{name}"):
        major = path.split("/")[4]
        if major.isdigit():
            versions[int(major)] = path
    newer = sorted(v for v in versions if v >= server_major)
    if newer:
        return versions[newer[0]]
    found = shutil.which(name)
    if found is None:
        raise OpsError(f"{name} not found (in PATH or /usr/lib/postgresql/*/bin): install the PostgreSQL "
                       f"client tools, version {server_major} or newer (apt-get install postgresql-client)")
    return found


def _env(url: str) -> dict[str, str]:
    u = urls.parse(url)
    env = {**os.environ, "PGHOST": u.host or "", "PGDATABASE": u.database or ""}
    for key, value in (("PGPORT", u.port), ("PGUSER", u.username), ("PGPASSWORD", u.password),
                       ("PGSSLMODE", u.query.get("sslmode"))):
        if value:
            env[key] = str(value)
    return env


def _run(argv: list[str], url: str) -> None:
    try:
        res = subprocess.run(argv, env=_env(url), capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OpsError(f"{Path(argv[0]).name} could not run: {exc}") from None
    if res.returncode != 0:
        raise OpsError(f"{Path(argv[0]).name} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")


async def _server_major(conn: AsyncConnection) -> int:
    return int((await conn.exec_driver_sql("SHOW server_version_num")).scalar_one()) // 10000


def dump_catalog(url: str, dest: Path, read: Callable[[sa.Connection], Any]) -> Any:
    """``pg_dump --format=custom`` of the catalog into ``dest``, from a snapshot this function
    exports and holds; ``read(connection)`` runs in that same snapshot (what the backup copies
    next). Returns what ``read`` returned."""

    async def go() -> Any:
        async with pg_connect(url) as conn:
            await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = (await conn.exec_driver_sql("SELECT pg_export_snapshot()")).scalar_one()
            tool = find_tool("pg_dump", await _server_major(conn))
            await asyncio.to_thread(_run, [tool, "--format=custom", "--no-owner", "--no-privileges",
                                           f"--snapshot={snapshot}", f"--file={dest}"], url)
            result = await conn.run_sync(read)
            await conn.rollback()
            return result

    return run_blocking(go)


def read(url: str, fn: Callable[[sa.Connection], Any]) -> Any:
    """``fn(connection)`` on the PostgreSQL catalog (the same asyncpg driver, through run_sync)."""

    async def go() -> Any:
        async with pg_connect(url) as conn:
            return await conn.run_sync(fn)

    return run_blocking(go)


def _tables(conn: sa.Connection) -> list[str]:
    return sorted(set(sa.inspect(conn).get_table_names()) & ({t.name for t in metadata.tables.values()}
                                                              | {"alembic_version"}))


def check_empty(url: str) -> None:
    """A restore never overwrites: the database must hold none of the catalog's tables."""
    if found := read(url, _tables):
        raise OpsError(f"the catalog database {urls.redacted(url)} is not empty (it has {', '.join(found[:5])}"
                       f"{' …' if len(found) > 5 else ''}): restore never overwrites anything. Restore into a new "
                       f"database, or drop this one first")


def restore_catalog(url: str, dump: Path) -> None:
    """``pg_restore`` of a backup's ``catalog.pgdump`` in one transaction: all of it or nothing."""
    if not dump.is_file():
        raise OpsError(f"{dump} is missing: the backup has no PostgreSQL catalog dump")

    async def major() -> int:
        async with pg_connect(url) as conn:
            return await _server_major(conn)

    tool = find_tool("pg_restore", run_blocking(major))
    _run([tool, "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
          f"--dbname={urls.parse(url).database}", str(dump)], url)


def drop_catalog(url: str) -> None:
    """Undo a restore whose verification failed (the database was empty before it): every table
    of the catalog dropped, in one transaction."""

    def drop(conn: sa.Connection) -> None:
        for name in _tables(conn):
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
        conn.commit()

    read(url, drop)
