"""The Alembic migrations and the table definitions the queries use must describe the same schema,
on both engines the catalog runs on (SQLite, the default, and PostgreSQL)."""

import asyncio

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from modelrepo.catalog.db import catalog_url, migrate, pg_connect
from modelrepo.catalog.schema import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return catalog_url(tmp_path / "catalog.db")
    return request.getfixturevalue("pg_server").url()


def _inspect(url, fn):
    """``fn(sync_connection)`` on the catalog at ``url`` (asyncpg through run_sync on PostgreSQL:
    the same single driver the daemon uses)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            result = fn(conn)
        engine.dispose()
        return result

    async def go():
        async with pg_connect(url) as conn:
            return await conn.run_sync(fn)

    return asyncio.run(go())


def test_migrations_match_schema(url):
    migrate(url)
    # Server defaults compared on PostgreSQL only: SQLite's reflection of the defaults batch mode
    # copied spells them differently (a false alarm there, a real check here).
    opts = {"compare_type": True, "compare_server_default": url.startswith("postgresql")}
    diff = _inspect(url, lambda conn: compare_metadata(MigrationContext.configure(conn, opts=opts), metadata))
    assert diff == [], diff


def test_migrate_is_idempotent(url):
    migrate(url)
    migrate(url)  # a restart runs it again: nothing to do, nothing broken
    version = _inspect(url, lambda conn: conn.execute(sa.text("select version_num from alembic_version")).scalar())
    assert version == "0009"


def test_concurrent_start_ups_migrate_once(url):
    """Processes starting at once on one fresh catalog (replicas, worker processes, a CLI beside
    the daemon): one upgrades, the others wait and then find the schema current. Without the lock
    (advisory on PostgreSQL, a flock on SQLite) the second CREATE TABLE fails: already exists."""
    import subprocess
    import sys

    code = "import sys; from modelrepo.catalog.db import migrate; migrate(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    assert _inspect(url, lambda conn: conn.execute(sa.text("select count(*) from alembic_version")).scalar()) == 1


def test_head_revision_is_alembics_own():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from modelrepo.catalog.db import MIGRATIONS, head_revision

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_current_sqlite_catalog_opens_without_alembic(tmp_path):
    """Every start and admin command opens the catalog: when it is current, Alembic stays unloaded;
    when it is not (a fresh file, an older schema), the upgrade runs."""
    import subprocess
    import sys

    path = tmp_path / "catalog.db"
    code = ("import sys; from modelrepo.catalog.db import migrate; migrate(__import__('pathlib').Path(sys.argv[1])); "
            "print('alembic' in sys.modules)")
    run = lambda: subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
    assert run() == "True"  # fresh: migrated
    assert run() == "False"  # current: nothing loaded
    from alembic import command
    from alembic.config import Config

    from modelrepo.catalog.db import MIGRATIONS

    engine = sa.create_engine(catalog_url(path))
    with engine.begin() as conn:  # an installation one release behind
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0008")
    engine.dispose()
    assert run() == "True"  # behind: upgraded again
    assert _inspect(catalog_url(path), lambda c: c.execute(sa.text("select version_num from alembic_version")).scalar()) == "0009"
