"""Catalog URLs: the two engines the catalog runs on, told apart and checked once, at configuration.

``sqlite:///PATH`` is the embedded default (one machine); ``postgresql://USER:PASSWORD@HOST:PORT/DB``
is for replicas and worker processes sharing one catalog. SQLAlchemy's own URL parser does the
parsing (quoting, ports, query options); this module only decides what we accept and says why not.
"""

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}
POSTGRES_DRIVERS = {"postgresql", "postgres", "postgresql+asyncpg"}


class BadCatalogUrl(ValueError):
    """The URL names no catalog we can run on; the message says why (settings makes it a ConfigError)."""


EXPECTED = "expected sqlite:///PATH or postgresql://USER:PASSWORD@HOST[:PORT]/DATABASE"


def redacted(url: str | URL) -> str:
    """The URL with its password masked: what logs and error messages may show."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "(not a URL)"


def parse(url: str) -> URL:
    """The URL, checked; ``BadCatalogUrl`` in words for anything we cannot run on."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise BadCatalogUrl(f"catalog.url: not a URL ({EXPECTED})") from None
    if parsed.drivername in SQLITE_DRIVERS:
        if not parsed.database or parsed.database == ":memory:" or parsed.host:
            raise BadCatalogUrl(f"catalog.url: an SQLite catalog needs a file path, sqlite:///PATH, "
                              f"got {redacted(parsed)!r}")
        return parsed.set(drivername="sqlite")
    if parsed.drivername in POSTGRES_DRIVERS:
        if not parsed.host or not parsed.database:
            raise BadCatalogUrl(f"catalog.url: a PostgreSQL catalog needs a host and a database name "
                              f"({EXPECTED}), got {redacted(parsed)!r}")
        return parsed.set(drivername="postgresql")
    raise BadCatalogUrl(f"catalog.url: unsupported database {parsed.drivername!r} ({EXPECTED})")


def normalize(url: str) -> str:
    """The configured URL in one spelling: ``sqlite:///ABSOLUTE`` or ``postgresql://…``."""
    parsed = parse(url)
    if parsed.drivername == "sqlite":
        return f"sqlite:///{Path(parsed.database).expanduser().resolve()}"
    return parsed.render_as_string(hide_password=False)


def dialect(url: str) -> str:
    """``sqlite`` or ``postgresql``."""
    return parse(url).drivername


def sqlite_path(url: str) -> Path:
    return Path(parse(url).database)


def async_url(url: str) -> URL:
    """The URL for SQLAlchemy's async engine: aiosqlite or asyncpg."""
    parsed = parse(url)
    return parsed.set(drivername="sqlite+aiosqlite" if parsed.drivername == "sqlite" else "postgresql+asyncpg")
