"""Catalog.tx on PostgreSQL keeps the "one writer at a time" the services were written for, across
processes (two Catalog objects here, two engines, as two daemons have); ``exclusive=False`` runs
side by side with itself but never beside an exclusive transaction. And migrate-to's copy works in
the other direction too (PostgreSQL → SQLite), reading PostgreSQL in one snapshot."""

import asyncio

import pytest
import sqlalchemy as sa

from modelrepo.accounts.service import Accounts
from modelrepo.catalog.db import Catalog, catalog_url
from modelrepo.catalog.schema import users
from modelrepo.ops import OpsError
from modelrepo.ops.catalog_copy import copy_catalog

HOLD = 0.5
# Another session of this database waiting for a lock (the advisory lock): it is blocked by us now.
BLOCKED = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted"
                  " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")


async def _hold(catalog: Catalog, exclusive: bool, log: list, name: str) -> None:
    """Inside the transaction until the other one has shown what it does: entered beside this one,
    or blocked on the lock (then HOLD more, where a lock that let it in would show). Waiting on that
    instead of for a fixed time keeps the verdict the same however slowly the other one connects."""
    async with catalog.tx(exclusive=exclusive) as conn:
        log.append(("in", name))
        if name == "a":
            deadline = asyncio.get_running_loop().time() + 60
            while ("in", "b") not in log and not (await conn.execute(BLOCKED)).scalar():
                assert asyncio.get_running_loop().time() < deadline, "b neither entered nor waited"
                await asyncio.sleep(0.02)
        await asyncio.sleep(HOLD)
        log.append(("out", name))


def _overlapped(log: list) -> bool:
    """True when the second transaction entered before the first left."""
    return log[1][0] == "in"


@pytest.mark.parametrize("first, second, overlap", [
    (True, True, False),    # two writers: one after the other
    (False, False, True),   # two hot-path upserts: side by side
    (True, False, False),   # gc (exclusive) excludes an LFS registration (shared) ...
    (False, True, False),   # ... and the other way round
])
def test_tx_locks_across_engines(pg_server, first, second, overlap):
    url = pg_server.url()

    async def go() -> list:
        a, b = Catalog.open(url), Catalog.open(url)
        log: list = []
        try:
            one = asyncio.create_task(_hold(a, first, log, "a"))
            while ("in", "a") not in log:  # a is inside its transaction
                assert not one.done(), one.result()
                await asyncio.sleep(0.02)
            await asyncio.gather(one, _hold(b, second, log, "b"))
        finally:
            await a.close()
            await b.close()
        return log

    log = asyncio.run(go())
    assert log[0] == ("in", "a") and _overlapped(log) is overlap, log


def test_copy_postgresql_to_sqlite(pg_server, tmp_path):
    async def go() -> dict:
        pg = Catalog.open(pg_server.url())
        lite = Catalog.open(catalog_url(tmp_path / "c.db"))
        try:
            for name in ("ann", "bob"):
                await Accounts(pg).create_user(name)
            counts = await copy_catalog(pg, lite)
            async with lite.read() as conn:
                names = (await conn.execute(sa.select(users.c.name).order_by(users.c.id))).scalars().all()
            with pytest.raises(OpsError, match="not empty: table users has 2 rows"):
                await copy_catalog(pg, lite)
            return {"counts": counts, "names": names}
        finally:
            await pg.close()
            await lite.close()

    out = asyncio.run(go())
    assert out["names"] == ["ann", "bob"] and out["counts"]["users"] == 2 and out["counts"]["models"] == 0
