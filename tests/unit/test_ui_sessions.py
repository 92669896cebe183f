"""Browser sessions and passwords against a real SQLite catalog: idle and absolute expiry, sign-out,
a password change ending every session, argon2id at rest."""

import sqlalchemy as sa

from modelrepo.accounts import passwords
from modelrepo.accounts.access import Identity
from modelrepo.accounts.service import Accounts
from modelrepo.accounts.sessions import Sessions
from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import ui_sessions, users


async def _rows(catalog: Catalog) -> list:
    async with catalog.read() as conn:
        return (await conn.execute(sa.select(ui_sessions))).all()


async def _age(catalog: Catalog, *, created: float = 0, seen: float = 0) -> None:
    async with catalog.tx() as conn:
        await conn.execute(ui_sessions.update().values(created_at=ui_sessions.c.created_at - created,
                                                       last_seen_at=ui_sessions.c.last_seen_at - seen))


async def test_sessions_expire_and_end(tmp_path):
    catalog = Catalog.open(tmp_path / "catalog.db")
    try:
        accounts = Accounts(catalog)
        user = await accounts.create_user("ada")
        sessions = Sessions(catalog, idle=3600, absolute=86400)

        sid = await sessions.start(user.id)
        assert (await sessions.identity(sid)).name == "ada"
        rows = await _rows(catalog)
        assert len(rows) == 1 and sid not in rows[0].id_hash  # only the digest is stored
        assert await sessions.identity(sid + "x") is None

        await _age(catalog, seen=3601)  # idle too long
        assert await sessions.identity(sid) is None and await _rows(catalog) == []

        sid = await sessions.start(user.id)
        await _age(catalog, created=86401)  # active all along, but past the absolute limit
        assert await sessions.identity(sid) is None

        sid = await sessions.start(user.id)
        await sessions.end(sid)  # sign-out
        assert await sessions.identity(sid) is None

        one, two = await sessions.start(user.id), await sessions.start(user.id)
        self_ = Identity(user_id=user.id, name="ada", scope="admin")
        await passwords.set_password(accounts, self_, "ada", "a-long-enough-password")
        assert await sessions.identity(one) is None and await sessions.identity(two) is None
        async with catalog.read() as conn:
            stored = (await conn.execute(sa.select(users.c.password_hash))).scalar_one()
        assert stored.startswith("$argon2id$")
        assert (await passwords.verify(accounts, "ada", "a-long-enough-password")).name == "ada"
        assert await passwords.verify(accounts, "ada", "a-long-enough-passworD") is None
        assert await passwords.verify(accounts, "nobody", "a-long-enough-password") is None
    finally:
        await catalog.close()
