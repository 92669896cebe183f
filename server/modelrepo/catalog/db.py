"""Catalog connection: migrations at open, the engine for SQLite or PostgreSQL, one transaction helper.

SQLite (the embedded default): the daemon and the admin CLI open the same file at the same time,
so it runs in WAL mode with a busy timeout: readers never block the writer and a short write from
the CLI waits its turn.

PostgreSQL (replicas and worker processes sharing one catalog), driven with asyncpg through
SQLAlchemy, so the same queries run on both. The services were written for SQLite's "one writer at
a time"; ``Catalog.tx`` keeps exactly that on PostgreSQL with a catalog-wide advisory lock (below).
"""

import asyncio
import concurrent.futures
import contextlib
import fcntl
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from modelrepo.catalog import urls
from modelrepo.errors import CatalogBusy, InvalidInput

MIGRATIONS = Path(__file__).parent / "migrations"
# PostgreSQL advisory lock keys (64-bit, one namespace per database): the catalog-wide write lock
# that ``tx()`` takes, and the lock around migrations so that two replicas starting together do
# not both upgrade. Arbitrary constants; "modelrep" in ASCII, and the next one.
CATALOG_LOCK = 0x6D6F64656C726570
MIGRATION_LOCK = CATALOG_LOCK + 1
# How long connecting to a PostgreSQL catalog may take before start-up gives up, in seconds.
CONNECT_TIMEOUT = 10.0
# Defaults of catalog.lock_timeout and catalog.idle_in_transaction_timeout (seconds; see settings).
LOCK_TIMEOUT = 10.0
IDLE_IN_TRANSACTION_TIMEOUT = 60.0
# When a client refused because the catalog is busy should try again, in seconds.
BUSY_RETRY_AFTER = 2.0

log = structlog.get_logger("modelrepo.catalog")


class CatalogUnavailable(ConnectionError):
    """The catalog's database server cannot be reached or refused us (a start-up error in words).

    A ``ConnectionError`` (an ``OSError``), so the daemon's start-up reports it like a port it
    cannot bind."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def catalog_url(target: Path | str) -> str:
    """A path is an SQLite file (what callers passed before PostgreSQL); a string is a catalog URL."""
    return f"sqlite:///{Path(target).resolve()}" if isinstance(target, Path) else urls.normalize(target)


def _alembic_upgrade(conn: sa.Connection) -> None:
    from alembic import command  # noqa: PLC0415 - only when there is something to upgrade
    from alembic.config import Config as AlembicConfig  # noqa: PLC0415

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")


_ASSIGNED = r'^{name}\s*(?::[^=\n]*)?=\s*["\'](\w+)["\']'


@functools.cache
def head_revision() -> str | None:
    """The newest migration, from the scripts' own ``revision``/``down_revision`` lines.

    Every daemon start and admin command opens the catalog, and importing Alembic only to learn
    that there is nothing to do cost ~0.3 s of CPU each time. None (let Alembic decide) unless the
    scripts form one line with one head; a test keeps this equal to Alembic's own answer."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (MIGRATIONS / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8")
        revision = re.search(_ASSIGNED.format(name="revision"), text, re.M)
        parent = re.search(_ASSIGNED.format(name="down_revision"), text, re.M)
        if revision:
            revisions.add(revision.group(1))
        if parent:
            parents.add(parent.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _sqlite_is_current(path: Path) -> bool:
    """The file exists and its ``alembic_version`` names the head (read-only, no Alembic)."""
    head = head_revision()
    if head is None or not path.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=10)) as db:
            rows = db.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False  # no table yet, or unreadable: the full path below says what is wrong
    return rows == [(head,)]


def run_blocking(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion from synchronous code, inside a running event loop or not.

    ``Catalog.open`` is synchronous (the composition root builds everything before serving) but is
    called from the daemon's and the CLI's event loop; a private loop in a thread runs the
    PostgreSQL work there. Blocking start-up is intended: nothing is served before the catalog is
    current."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="catalog-open") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def pg_engine(url: str, *, lock_timeout: float | None = None, idle_timeout: float | None = None,
              **pool: Any) -> AsyncEngine:
    """An asyncpg engine; ``pool`` are SQLAlchemy pool arguments (``poolclass=NullPool`` for one-shots).

    ``lock_timeout``: the longest any statement waits for a lock (the catalog-wide advisory lock,
    a row, a table an admin is altering) before failing with SQLSTATE 55P03, like SQLite's busy
    timeout; without it one stuck transaction would hang every writer for ever.
    ``idle_timeout``: the server ends a session of ours left idle inside a transaction that long
    (a hung or partitioned process), releasing what it held. Both are set at connect, for every
    session of the pool; None leaves the server's default (no limit), which migrations want: a
    replica waits for another one's upgrade however long it takes."""
    server_settings = {"application_name": "modelrepo"}
    if lock_timeout is not None:
        server_settings["lock_timeout"] = str(_millis(lock_timeout))
    if idle_timeout is not None:
        server_settings["idle_in_transaction_session_timeout"] = str(_millis(idle_timeout))
    return create_async_engine(urls.async_url(url), connect_args={
        "timeout": CONNECT_TIMEOUT, "server_settings": server_settings}, **pool)


def _millis(seconds: float) -> int:
    """PostgreSQL's timeouts are whole milliseconds, and 0 means "no limit": never round down to it."""
    return max(1, round(seconds * 1000))


@asynccontextmanager
async def pg_connect(url: str, engine: AsyncEngine | None = None) -> AsyncIterator[AsyncConnection]:
    """A connection, or ``CatalogUnavailable`` saying why not (refused, wrong password, no database)."""
    own = engine is None
    engine = engine or pg_engine(url, poolclass=sa.pool.NullPool)
    try:
        try:
            conn = await engine.connect()
        except (OSError, asyncio.TimeoutError, sa.exc.DBAPIError) as exc:
            reason = getattr(exc, "orig", None) or exc
            raise CatalogUnavailable(f"cannot connect to the catalog at {urls.redacted(url)}: "
                                     f"{str(reason).strip() or type(reason).__name__}") from None
        try:
            yield conn
        finally:
            await conn.close()
    finally:
        if own:
            await engine.dispose()


async def _migrate_pg(url: str) -> None:
    async with pg_connect(url) as conn:
        # A session lock held across the upgrade: a second replica starting now waits here, then
        # finds nothing left to do. PostgreSQL's DDL is transactional, so the upgrade is all or nothing.
        await conn.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK})")
        await conn.commit()
        try:
            await conn.run_sync(_alembic_upgrade)
            await conn.commit()
        finally:
            await conn.rollback()
            await conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK})")
            await conn.commit()


def migrate(target: Path | str) -> None:
    """Bring the catalog (an SQLite path, or a catalog URL) to the newest schema (synchronous; call
    before serving)."""
    url = catalog_url(target)
    if urls.dialect(url) == "postgresql":
        run_blocking(lambda: _migrate_pg(url))
        return
    path = urls.sqlite_path(url)
    if _sqlite_is_current(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # Two processes starting on one fresh file (worker processes, a CLI beside the daemon) would
    # both see no schema and both create it ("table users already exists"): pysqlite runs DDL
    # outside a transaction. An exclusive flock on a sidecar file makes the second one wait, then
    # find nothing to do. A sidecar, not the database: closing any descriptor of the database would
    # drop the POSIX locks SQLite holds on it in this process.
    with open(path.with_name(path.name + ".migrate-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            with engine.begin() as conn:
                _alembic_upgrade(conn)
        finally:
            engine.dispose()


# SQLSTATE 22021 (character_not_in_repertoire): PostgreSQL text cannot hold U+0000, which JSON,
# SQLite and a search box can. Such a value is the caller's bad input on either engine's side.
_NUL_IN_TEXT = "22021"
# SQLSTATE 55P03 (lock_not_available): a lock wait ran past lock_timeout.
_LOCK_NOT_AVAILABLE = "55P03"


def _lock_wait_expired(orig: BaseException | None) -> bool:
    """PostgreSQL's lock_timeout, or SQLite's busy timeout ("database is locked", SQLITE_BUSY)."""
    if getattr(orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
        return True
    return isinstance(orig, sqlite3.OperationalError) and \
        (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


def _raise_in_words(exc: BaseException, lock_timeout: float) -> None:
    """Database errors that are not bugs become typed errors (the transaction was already rolled
    back: nothing changed): text PostgreSQL cannot store is a 400; a lock held by someone else past
    the bound is a 503 with Retry-After, the same on both engines, rather than a 500."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return
    if getattr(exc.orig, "sqlstate", None) == _NUL_IN_TEXT:
        raise InvalidInput("text cannot contain the NUL character (\\u0000)") from None
    if _lock_wait_expired(exc.orig):
        log.warning("catalog_busy", lock_timeout=lock_timeout, error=str(exc.orig).strip())
        raise CatalogBusy(f"the catalog is busy: another transaction has held a lock for more than "
                          f"{lock_timeout:g} s; nothing was changed, try again shortly", BUSY_RETRY_AFTER) from None


class Catalog:
    """An async engine plus the transaction helper every service uses."""

    def __init__(self, engine: AsyncEngine, url: str | None = None, *, lock_timeout: float = LOCK_TIMEOUT) -> None:
        self.engine = engine
        self.url = url or engine.url.render_as_string(hide_password=False)
        self.dialect = engine.dialect.name  # "sqlite" | "postgresql"
        self.lock_timeout = lock_timeout
        self._writer: asyncio.Lock | None = None
        self._writer_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(cls, target: Path | str, *, pool_size: int = 5, max_overflow: int = 10,
             lock_timeout: float = LOCK_TIMEOUT, idle_timeout: float = IDLE_IN_TRANSACTION_TIMEOUT) -> "Catalog":
        """Migrate, then open. ``target``: an SQLite file path, or a catalog URL (``catalog.url``).

        PostgreSQL: a pool of ``pool_size`` connections per process (plus ``max_overflow`` at a
        peak; several processes share the server's ``max_connections``), each checked with a
        ping when taken from the pool, so a server restart costs one failed ping, not a request.
        Every wait for a lock is bounded by ``lock_timeout`` on both engines (SQLite's busy
        timeout), then ``CatalogBusy``; PostgreSQL also ends our sessions left ``idle_timeout``
        inside a transaction."""
        url = catalog_url(target)
        migrate(url)
        if urls.dialect(url) == "postgresql":
            engine = pg_engine(url, lock_timeout=lock_timeout, idle_timeout=idle_timeout, pool_size=pool_size,
                               max_overflow=max_overflow, pool_pre_ping=True, pool_recycle=1800)
            return cls(engine, url, lock_timeout=lock_timeout)
        engine = create_async_engine(urls.async_url(url))
        sa.event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, lock_timeout=lock_timeout))
        return cls(engine, url, lock_timeout=lock_timeout)

    @asynccontextmanager
    async def tx(self, *, exclusive: bool = True) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back on any exception.

        SQLite: the deferred BEGIN upgrades to a write lock lazily, which can deadlock two writers
        that both read first; BEGIN IMMEDIATE takes the write lock up front and waits on busy. One
        writer at a time, whatever ``exclusive`` says.

        PostgreSQL: by default the transaction takes the catalog-wide advisory lock
        (``pg_advisory_xact_lock``, released at commit or rollback), the exact "one writer at a
        time" the services were written for: read-check-write sequences (quotas, name checks, gc's
        re-check before a store delete, delete-dependency checks) stay correct across processes.
        ``exclusive=False`` takes the same lock shared instead: such transactions run alongside each
        other but never alongside an exclusive one (gc, model deletion). It is for reviewed hot paths
        whose writes are safe concurrently with row locks and ``ON CONFLICT`` alone:
        - LFS object registration (``Lfs.record``): two inserts ``ON CONFLICT DO NOTHING``; its
          "still stored?" check relies only on gc's exclusive lock, which the shared one excludes;
        - the inspections upsert (``Inspections._save``): one ``ON CONFLICT DO UPDATE`` by OID;
        - Xet xorb and file registration (``Xet``): inserts ``ON CONFLICT DO NOTHING``, rows
          written in sorted order so that two uploads sharing chunks cannot deadlock.
        """
        async with self._one_sqlite_writer() as waited:
            async with self._transaction(exclusive, waited) as conn:
                yield conn

    @asynccontextmanager
    async def _one_sqlite_writer(self) -> AsyncIterator[float]:
        """SQLite: this process's write transactions queue here, first come first served, and
        only the head of the queue waits in SQLite's busy handler. That handler polls, backing off
        to 100 ms: with every writer of a busy process polling, a writer of another process (a
        delete served by the second worker) could lose every poll for longer than the lock bound
        and get 503 while the catalog was never stuck (CI's test_delete_races). One poller per
        process makes the processes take turns. Bounded by ``lock_timeout`` like the lock itself."""
        if self.dialect != "sqlite":
            yield 0.0
            return
        loop = asyncio.get_running_loop()
        if self._writer_loop is not loop:  # an asyncio.Lock belongs to one loop (the CLI runs several)
            self._writer, self._writer_loop = asyncio.Lock(), loop
        writer = self._writer
        started = loop.time()
        try:
            await asyncio.wait_for(writer.acquire(), self.lock_timeout)
        except TimeoutError:
            log.warning("catalog_busy", lock_timeout=self.lock_timeout, error="queued behind this process's writers")
            raise CatalogBusy(f"the catalog is busy: another transaction has held a lock for more than "
                              f"{self.lock_timeout:g} s; nothing was changed, try again shortly",
                              BUSY_RETRY_AFTER) from None
        try:
            yield loop.time() - started
        finally:
            writer.release()

    @asynccontextmanager
    async def _transaction(self, exclusive: bool, waited: float = 0.0) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            try:
                if self.dialect == "sqlite" and waited > 0.05:
                    # What is left of the bound after the queue: the whole wait stays within it.
                    left = max(1, int((self.lock_timeout - waited) * 1000))
                    await conn.exec_driver_sql(f"PRAGMA busy_timeout = {left}")
                    try:
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    finally:
                        await conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
                elif self.dialect == "sqlite":
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                else:
                    lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
                    await conn.exec_driver_sql(f"SELECT {lock}({CATALOG_LOCK})")
                yield conn
            except BaseException as exc:
                await conn.rollback()
                _raise_in_words(exc, self.lock_timeout)
                raise
            else:
                try:
                    await conn.commit()
                except sa.exc.DBAPIError as exc:  # SQLite's COMMIT can wait for readers to let go
                    await conn.rollback()
                    _raise_in_words(exc, self.lock_timeout)
                    raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """One read-only transaction: every query in it sees the catalog as of one moment, while
        writers go on (WAL on SQLite; REPEATABLE READ on PostgreSQL). For copies: migrate-to, backup."""
        async with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                await conn.exec_driver_sql("BEGIN")  # deferred: the snapshot starts at the first read
            else:
                await conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                # A copy may pause between tables while its destination writes; a read-only
                # snapshot blocks no writer, so the idle-in-transaction bound does not apply.
                await conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
            try:
                yield conn
            finally:
                await conn.rollback()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            try:
                yield conn
            except sa.exc.DBAPIError as exc:
                _raise_in_words(exc, self.lock_timeout)
                raise

    async def close(self) -> None:
        await self.engine.dispose()
