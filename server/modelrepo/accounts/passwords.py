"""Passwords for people signing in to the web UI (programs keep using tokens).

argon2id (argon2-cffi's defaults, RFC 9106's second recommendation) is slow on purpose, so
hashing and verifying run in a thread. Setting a password ends the user's browser sessions.
"""

import asyncio
import functools

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from modelrepo.accounts.access import Identity, require_authenticated
from modelrepo.accounts.service import Accounts
from modelrepo.accounts.sessions import end_all
from modelrepo.catalog.schema import users
from modelrepo.errors import InvalidInput, NotFound

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" is only a way to burn CPU
_hasher = PasswordHasher()


@functools.cache
def _dummy() -> str:
    """Verified against when the user does not exist or has no password, so that the answer takes
    as long as for a real account and timing does not tell which user names exist. Made on first
    use: hashing costs tens of milliseconds that no CLI command should pay at import."""
    return _hasher.hash("modelrepo-no-such-password")


def check_password_rules(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_LENGTH} characters long", code="weak_password")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"password longer than {MAX_LENGTH} characters")
    return password


async def set_password(accounts: Accounts, identity: Identity, user_name: str, password: object) -> None:
    """Self or a site admin; anyone else is told the user does not exist (as for tokens)."""
    require_authenticated(identity)
    if not (identity.site_admin or (identity.name or "").lower() == user_name.lower()):
        raise NotFound(f"user {user_name!r} not found", code="user_not_found")
    check_password_rules(password)
    user = await accounts.get_user(user_name)
    hashed = await asyncio.to_thread(_hasher.hash, password)
    async with accounts.catalog.tx() as conn:
        await conn.execute(users.update().where(users.c.id == user.id).values(password_hash=hashed))
        await end_all(conn, user.id)


async def verify(accounts: Accounts, user_name: str, password: str) -> Identity | None:
    """The user's identity if the password is right, else None (unknown user, no password set and
    a wrong password are one answer)."""
    async with accounts.catalog.read() as conn:
        row = (await conn.execute(sa.select(users.c.id, users.c.name, users.c.is_admin, users.c.password_hash)
                                  # A disabled user cannot sign in, as its tokens cannot authenticate.
                                  .where(users.c.name_key == user_name.lower(), users.c.disabled_at.is_(None)))).first()
    stored = row.password_hash if row is not None and row.password_hash else None
    if len(password) > MAX_LENGTH:
        return None

    def check() -> bool:
        try:
            return _hasher.verify(stored or _dummy(), password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    if not await asyncio.to_thread(check):
        return None
    if _hasher.check_needs_rehash(stored):
        hashed = await asyncio.to_thread(_hasher.hash, password)
        async with accounts.catalog.tx() as conn:
            await conn.execute(users.update().where(users.c.id == row.id).values(password_hash=hashed))
    return Identity(user_id=row.id, name=row.name, is_admin=bool(row.is_admin), scope="admin")
