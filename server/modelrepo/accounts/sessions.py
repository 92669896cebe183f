"""Browser sessions of the web UI, kept in the catalog so that signing out, a password change or
a restart are all the same thing: the row is gone and the cookie is worth nothing.

The cookie carries 256 random bits; the catalog keeps only their SHA-256 (as for tokens), so a
copy of the catalog does not sign anyone in. A session ends after ``idle`` seconds without a
request and ``absolute`` seconds after sign-in, whichever comes first.
"""

import hashlib
import secrets
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from modelrepo.accounts.access import Identity
from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import ui_sessions, users

# last_seen_at is written at most this often: a page view must not cost a catalog write each time.
TOUCH_EVERY = 60.0


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


async def end_all(conn: AsyncConnection, user_id: int) -> None:
    """Inside the caller's transaction: every session of a user (password change)."""
    await conn.execute(ui_sessions.delete().where(ui_sessions.c.user_id == user_id))


class Sessions:
    def __init__(self, catalog: Catalog, idle: float, absolute: float) -> None:
        self.catalog = catalog
        self.idle = idle
        self.absolute = absolute

    def _expired(self, now: float) -> sa.ColumnElement:
        return sa.or_(ui_sessions.c.last_seen_at < now - self.idle, ui_sessions.c.created_at < now - self.absolute)

    async def start(self, user_id: int) -> str:
        """A new session id (the cookie value; never stored). Expired rows are swept here, so the
        table cannot grow without bound."""
        session_id = secrets.token_urlsafe(32)
        now = time.time()
        async with self.catalog.tx() as conn:
            await conn.execute(ui_sessions.delete().where(self._expired(now)))
            await conn.execute(ui_sessions.insert().values(id_hash=_digest(session_id), user_id=user_id,
                                                           created_at=now, last_seen_at=now))
        return session_id

    async def identity(self, session_id: str) -> Identity | None:
        """Who a live session belongs to. A session acts with the user's full roles (scope admin):
        scopes are for tokens handed to programs, a signed-in person is the user."""
        digest = _digest(session_id)
        now = time.time()
        async with self.catalog.read() as conn:
            row = (await conn.execute(
                sa.select(ui_sessions.c.created_at, ui_sessions.c.last_seen_at, users.c.id, users.c.name,
                          users.c.is_admin)
                .join(users, users.c.id == ui_sessions.c.user_id)
                # A disabled user's sessions stop working at once, like its tokens.
                .where(ui_sessions.c.id_hash == digest, users.c.disabled_at.is_(None)))).first()
        if row is None:
            return None
        if row.last_seen_at < now - self.idle or row.created_at < now - self.absolute:
            await self.end(session_id)
            return None
        if now - row.last_seen_at > TOUCH_EVERY:
            async with self.catalog.tx() as conn:
                await conn.execute(ui_sessions.update().where(ui_sessions.c.id_hash == digest)
                                   .values(last_seen_at=now))
        return Identity(user_id=row.id, name=row.name, is_admin=bool(row.is_admin), scope="admin")

    async def end(self, session_id: str) -> None:
        async with self.catalog.tx() as conn:
            await conn.execute(ui_sessions.delete().where(ui_sessions.c.id_hash == _digest(session_id)))
