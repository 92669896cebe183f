"""A catalog lock someone else holds never hangs a request: past ``catalog.lock_timeout`` the request
gets 503 + Retry-After in words, nothing is written, and the same request succeeds once the lock is
let go. The holder is a real second connection (psql, as an admin's forgotten transaction; asyncpg,
as a stuck daemon process) against a real daemon, on PostgreSQL and on the SQLite default."""

import asyncio
import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import asyncpg
import pytest

from modelrepo.catalog.db import CATALOG_LOCK, Catalog

from ..helpers import short_tmpdir, start_daemon

URL_KEY = "MODELREPO_CATALOG__URL"
BOUND = 2.0  # catalog.lock_timeout for these daemons: short, so that the test is quick
SLACK = 6.0  # what a loaded CI machine may add to the bound (below the 10 s default: the setting applies)


@pytest.fixture
def daemon_on(pg_server):
    started = []

    def start(engine: str):
        env = {"MODELREPO_CATALOG__LOCK_TIMEOUT": str(BOUND)}
        # None: the SQLite default even when MODELREPO_TESTS_CATALOG=postgresql runs the suite
        env[URL_KEY] = pg_server.url() if engine == "postgresql" else None
        d = start_daemon(extra_env=env, seed=engine == "sqlite")
        d.env = env
        started.append(d)
        d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
        return d

    yield start
    for d in started:
        assert d.stop(signal.SIGTERM) == 0, d.log()[-4000:]
        shutil.rmtree(d.data.parent, ignore_errors=True)


@contextlib.contextmanager
def psql_holding(pg_server, url: str, sql: str):
    """An interactive psql inside an open transaction that ran ``sql``: an operator's session left open."""
    env = {**os.environ, "PGPASSWORD": pg_server.password}
    proc = subprocess.Popen([str(pg_server.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", url.replace(
        f":{pg_server.password}@", "@")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=env)
    proc.stdin.write(f"BEGIN;\n{sql};\n\\echo HELD\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "HELD"
    try:
        yield
    finally:
        proc.stdin.write("ROLLBACK;\n\\q\n")
        proc.stdin.close()
        proc.wait(30)


def create(d, name: str):
    started = time.monotonic()
    r = d.api("POST", "/api/v1/models", body={"namespace": "acme", "name": name, "visibility": "public"})
    return r, time.monotonic() - started


def assert_busy(r, took: float) -> None:
    assert r.status == 503, (r.status, r.body)
    assert BOUND * 0.9 <= took < BOUND + SLACK, took
    assert int(r.headers["Retry-After"]) >= 1
    error = r.json()["error"]
    assert error["code"] == "catalog_busy"
    assert "held a lock" in error["message"] and "nothing was changed" in error["message"]


def test_advisory_lock_held_by_a_stuck_process_gives_503_then_succeeds(daemon_on):
    d = daemon_on("postgresql")

    async def hold_then_try():
        # A stuck replica: a session that took the catalog-wide write lock and never lets go.
        conn = await asyncpg.connect(d.env[URL_KEY])
        try:
            await conn.execute(f"SELECT pg_advisory_lock({CATALOG_LOCK})")
            r, took = await asyncio.to_thread(create, d, "bert")
            assert_busy(r, took)
            # Nothing half-written: the model is not there, not in the catalog nor on disk.
            assert d.api("GET", "/api/v1/models/acme/bert").status == 404
            assert await conn.fetchval("SELECT count(*) FROM models") == 0
            assert not (d.data / "repos" / "acme" / "bert.git").exists()
        finally:
            await conn.close()  # the session ends: PostgreSQL releases its locks

    asyncio.run(hold_then_try())
    r, _ = create(d, "bert")
    assert r.status == 201, r.body
    assert d.ok("GET", "/api/v1/models/acme/bert")["name"] == "bert"
    assert '"catalog_busy"' in d.log()


def test_table_locked_by_an_open_psql_transaction_gives_503_for_writes_and_reads(daemon_on, pg_server):
    d = daemon_on("postgresql")
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "one", "visibility": "public"})
    with psql_holding(pg_server, d.env[URL_KEY], "LOCK TABLE models IN ACCESS EXCLUSIVE MODE"):
        r, took = create(d, "two")
        assert_busy(r, took)
        started = time.monotonic()
        r = d.api("GET", "/api/v1/models/acme/one")
        assert_busy(r, time.monotonic() - started)
    assert [m["name"] for m in d.ok("GET", "/api/v1/models?namespace=acme")] == ["one"]
    r, _ = create(d, "two")
    assert r.status == 201, r.body


def test_sqlite_write_lock_held_gives_the_same_503(daemon_on):
    d = daemon_on("sqlite")
    db = sqlite3.connect(d.data / "catalog.db", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # the admin CLI or a script holding SQLite's one write lock
        r, took = create(d, "bert")
        assert_busy(r, took)
        assert db.execute("SELECT count(*) FROM models").fetchone() == (0,)
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert not (d.data / "repos" / "acme" / "bert.git").exists()
    r, _ = create(d, "bert")
    assert r.status == 201, r.body


def test_a_session_idle_in_a_transaction_loses_its_locks(pg_server):
    """A daemon that hangs inside ``Catalog.tx`` (the catalog-wide lock held) holds it only for
    ``idle_in_transaction_timeout``: the server ends that session and the next writer goes on."""
    url = pg_server.url()

    async def go():
        hung = Catalog.open(url, lock_timeout=30, idle_timeout=1)
        other = Catalog.open(url, lock_timeout=30)
        try:
            entered = asyncio.Event()

            async def hang():
                async with hung.tx() as conn:
                    await conn.exec_driver_sql("SELECT 1")
                    entered.set()
                    await asyncio.sleep(60)

            task = asyncio.create_task(hang())
            await entered.wait()
            started = time.monotonic()
            async with other.tx() as conn:  # waits for the lock until the server ends the hung session
                await conn.exec_driver_sql("SELECT 1")
            assert 0.9 <= time.monotonic() - started < 1 + SLACK
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        finally:
            await hung.close()
            await other.close()

    asyncio.run(go())


def test_lock_timeouts_are_configured_and_checked():
    from modelrepo.settings import ConfigError, load_settings

    tmp = short_tmpdir()
    s = load_settings(None, environ={"MODELREPO_CATALOG__LOCK_TIMEOUT": "3"}, overrides={"data_dir": str(tmp)})
    assert s.catalog.lock_timeout == 3 and s.catalog.idle_in_transaction_timeout == 60
    with pytest.raises(ConfigError, match="lock_timeout"):
        load_settings(None, environ={}, overrides={"data_dir": str(tmp), "catalog.lock_timeout": 0})
    shutil.rmtree(tmp, ignore_errors=True)
