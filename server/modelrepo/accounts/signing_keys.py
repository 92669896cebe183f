"""The daemon's signing key, kept in the catalog so every process and replica shares it.

LFS and Xet action tokens are verified by whichever process receives the transfer, and the web
UI's CSRF key is derived from the same bytes, so a key per process (or per data directory) would
make a token from one replica useless at the next. The key is created once, by whichever process
starts first: an insert that does nothing when the row exists, then a read, so two processes
starting together end up with the one row that won. A ``DATA/secret.key`` from before the key
moved into the catalog is what gets inserted, so tokens issued before the upgrade stay valid.
"""

import secrets
import time
from pathlib import Path

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from modelrepo.catalog.db import Catalog, run_blocking
from modelrepo.catalog.portable import insert
from modelrepo.catalog.schema import signing_keys

log = structlog.get_logger("modelrepo.keys")

ACTIONS = "actions"  # LFS/Xet action tokens; the UI derives its CSRF key from it
KEY_BYTES = 32


def _legacy_key(path: Path | None) -> bytes | None:
    """The key a daemon of an earlier version kept in DATA/secret.key, if any."""
    if path is None:
        return None
    try:
        key = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return key if len(key) >= KEY_BYTES else None


async def _load_or_create(url: sa.URL, name: str, legacy: Path | None) -> bytes:
    # A private engine: this runs on its own event loop, and the catalog engine's pooled
    # connections belong to the daemon's loop.
    connect_args = {"timeout": 10} if url.get_backend_name() == "sqlite" else {}
    engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    try:
        imported = _legacy_key(legacy)
        async with engine.begin() as conn:
            res = await conn.execute(insert(conn, signing_keys).values(
                name=name, secret=imported or secrets.token_bytes(KEY_BYTES), created_at=time.time())
                .on_conflict_do_nothing(index_elements=["name"]))
            key = (await conn.execute(sa.select(signing_keys.c.secret)
                                      .where(signing_keys.c.name == name))).scalar_one()
        if res.rowcount:
            log.info("signing_key_created", name=name, imported_from=str(legacy) if imported else None)
        return bytes(key)
    finally:
        await engine.dispose()


def load_or_create_key(catalog: Catalog, name: str = ACTIONS, legacy: Path | None = None) -> bytes:
    """The key named ``name``, created on first use (from ``legacy`` when that file holds one).

    Synchronous, like the rest of building the services, and run the way ``Catalog.open`` runs
    migrations (on a private event loop, in a thread when called inside a running loop).
    """
    return run_blocking(lambda: _load_or_create(catalog.engine.url, name, legacy))
