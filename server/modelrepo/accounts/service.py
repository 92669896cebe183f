"""Users, tokens, namespaces and memberships.

Tokens are 256 random bits shown once. The catalog keeps only their SHA-256: with that much entropy
a slow hash buys nothing, and a fast one lets every request authenticate in one indexed lookup.
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.portable import insert
from modelrepo.catalog.schema import (
    lfs_links,
    lfs_objects,
    memberships,
    models,
    namespaces,
    tokens,
    users,
    xet_files,
    xet_xorb_links,
    xet_xorbs,
)
from modelrepo.errors import Conflict, Forbidden, InvalidInput, NotFound
from modelrepo.names import check_name
from modelrepo.accounts.access import ROLES, SCOPES, Identity, check_namespace_admin, require_authenticated, require_site_admin

TOKEN_PREFIX = "mr_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_admin: bool
    created_at: float
    disabled_at: float | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "admin": self.is_admin, "created_at": self.created_at,
                "disabled": self.disabled_at is not None}


@dataclass(frozen=True)
class Namespace:
    id: int
    name: str
    description: str
    created_at: float

    def to_json(self) -> dict:
        return {"name": self.name, "description": self.description, "created_at": self.created_at}


def _user(row: sa.Row) -> User:
    return User(id=row.id, name=row.name, is_admin=bool(row.is_admin), created_at=row.created_at,
                disabled_at=row.disabled_at)


def _namespace(row: sa.Row) -> Namespace:
    return Namespace(id=row.id, name=row.name, description=row.description, created_at=row.created_at)


async def _insert_token(conn, user_id: int, scope: str, name: str) -> tuple[str, int, float]:
    """A new token for ``user_id`` inside the caller's transaction: (token, id, created_at)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    res = await conn.execute(tokens.insert().values(
        user_id=user_id, name=name, token_hash=hash_token(token), scope=scope, created_at=now))
    return token, res.inserted_primary_key[0], now


class Accounts:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    # -- users -------------------------------------------------------------------------------
    async def create_user(self, name: str, *, admin: bool = False) -> User:
        check_name(name, "user")
        now = time.time()
        try:
            async with self.catalog.tx() as conn:
                res = await conn.execute(users.insert().values(
                    name=name, name_key=name.lower(), is_admin=admin, created_at=now))
                return User(id=res.inserted_primary_key[0], name=name, is_admin=admin, created_at=now)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists", code="user_exists") from None

    async def get_user(self, name: str) -> User:
        async with self.catalog.read() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.name_key == name.lower()))).first()
        if row is None:
            raise NotFound(f"user {name!r} not found", code="user_not_found")
        return _user(row)

    async def create_user_as(self, identity: Identity, name: str, admin: bool) -> User:
        require_site_admin(identity)
        return await self.create_user(name, admin=admin)

    async def list_users(self, identity: Identity) -> list[User]:
        require_site_admin(identity)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(users).order_by(users.c.name_key))).all()
        return [_user(r) for r in rows]

    async def set_disabled(self, identity: Identity, name: str, disabled: bool) -> User:
        """A disabled user's tokens stop authenticating (and no new one can be made) until the
        user is enabled again; nothing is deleted, so enabling restores the same access. A site
        admin cannot disable himself: that is how a site loses its last administrator."""
        require_site_admin(identity)
        user = await self.get_user(name)
        if disabled and user.id == identity.user_id:
            raise Conflict("you cannot disable yourself", code="cannot_disable_self")
        if (user.disabled_at is not None) == disabled:
            return user
        async with self.catalog.tx() as conn:
            await conn.execute(users.update().where(users.c.id == user.id).values(
                disabled_at=time.time() if disabled else None))
        return await self.get_user(name)

    # -- tokens ------------------------------------------------------------------------------
    async def create_token(self, user_name: str, *, scope: str = "write", name: str = "") -> tuple[str, dict]:
        """Returns (token, description). The token is never retrievable again."""
        if scope not in SCOPES:
            raise InvalidInput(f"invalid scope {scope!r}: expected one of {', '.join(SCOPES)}")
        if len(name) > 200:
            raise InvalidInput("token name longer than 200 characters")
        user = await self.get_user(user_name)
        if user.disabled_at is not None:
            raise Conflict(f"user {user.name!r} is disabled: enable it first (modelrepo user enable {user.name})",
                           code="user_disabled")
        async with self.catalog.tx() as conn:
            token, token_id, now = await _insert_token(conn, user.id, scope, name)
        return token, {"id": token_id, "name": name, "scopes": list(SCOPES[: SCOPES.index(scope) + 1]),
                       "user": user.name, "created_at": now}

    async def bootstrap_admin(self, name: str = "admin") -> str | None:
        """First start of an empty catalog: the site admin and its admin-scoped token, in one
        transaction, or None when the catalog has users already. Replicas starting together on
        one catalog race here: SQLite's write lock serializes them (the second sees a user), and on
        PostgreSQL the loser's insert meets the winner's unique name and rolls back; either way
        exactly one process gets the token."""
        now = time.time()
        try:
            async with self.catalog.tx() as conn:
                if (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one():
                    return None
                res = await conn.execute(users.insert().values(name=name, name_key=name.lower(), is_admin=True,
                                                               created_at=now))
                token, _, _ = await _insert_token(conn, res.inserted_primary_key[0], "admin", "bootstrap")
        except IntegrityError:
            return None
        return token

    async def create_token_as(self, identity: Identity, user_name: str, *, scope: str, name: str) -> tuple[str, dict]:
        require_authenticated(identity)
        is_self = identity.name is not None and identity.name.lower() == user_name.lower()
        if not (identity.site_admin or is_self):
            # Another user's tokens: as invisible as the user himself would be to a non-admin.
            raise NotFound(f"user {user_name!r} not found", code="user_not_found")
        if not identity.allows(scope):
            raise Forbidden(f"a {identity.scope}-scoped token cannot create a {scope}-scoped token")
        return await self.create_token(user_name, scope=scope, name=name)

    async def list_tokens(self, identity: Identity, user_name: str) -> list[dict]:
        require_authenticated(identity)
        if not (identity.site_admin or (identity.name or "").lower() == user_name.lower()):
            raise NotFound(f"user {user_name!r} not found", code="user_not_found")
        user = await self.get_user(user_name)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(tokens).where(tokens.c.user_id == user.id).order_by(tokens.c.id))).all()
        return [{"id": r.id, "name": r.name, "scopes": list(SCOPES[: SCOPES.index(r.scope) + 1]),
                 "created_at": r.created_at, "last_used_at": r.last_used_at} for r in rows]

    async def revoke_token(self, identity: Identity, user_name: str, token_id: int) -> None:
        require_authenticated(identity)
        if not (identity.site_admin or (identity.name or "").lower() == user_name.lower()):
            raise NotFound(f"user {user_name!r} not found", code="user_not_found")
        user = await self.get_user(user_name)
        async with self.catalog.tx() as conn:
            res = await conn.execute(tokens.delete().where(tokens.c.id == token_id, tokens.c.user_id == user.id))
        if res.rowcount == 0:
            raise NotFound("token not found", code="token_not_found")

    async def token_name(self, token_id: int | None) -> str | None:
        if token_id is None:
            return None
        async with self.catalog.read() as conn:
            return (await conn.execute(sa.select(tokens.c.name).where(tokens.c.id == token_id))).scalar()

    async def authenticate(self, token: str, user_name: str | None = None) -> Identity | None:
        """Identity for a presented token, or None. With Basic auth the user name must match."""
        digest = hash_token(token)
        async with self.catalog.read() as conn:
            row = (await conn.execute(
                sa.select(tokens.c.id, tokens.c.token_hash, tokens.c.scope, users.c.id.label("uid"),
                          users.c.name, users.c.is_admin)
                .join(users, users.c.id == tokens.c.user_id)
                .where(tokens.c.token_hash == digest, users.c.disabled_at.is_(None)))).first()
        # The lookup is by digest; the compare below keeps the final decision constant-time.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if user_name is not None and user_name.lower() != row.name.lower():
            return None
        return Identity(user_id=row.uid, name=row.name, is_admin=bool(row.is_admin), scope=row.scope,
                        token_id=row.id)

    # -- namespaces --------------------------------------------------------------------------
    async def create_namespace(self, name: str, description: str = "") -> Namespace:
        check_name(name, "namespace")
        now = time.time()
        try:
            async with self.catalog.tx() as conn:
                res = await conn.execute(namespaces.insert().values(
                    name=name, name_key=name.lower(), description=description, created_at=now))
        except IntegrityError:
            raise Conflict(f"namespace {name!r} already exists", code="namespace_exists") from None
        return Namespace(id=res.inserted_primary_key[0], name=name, description=description, created_at=now)

    async def create_namespace_as(self, identity: Identity, name: str, description: str) -> Namespace:
        require_site_admin(identity)
        return await self.create_namespace(name, description)

    async def get_namespace(self, name: str) -> Namespace:
        async with self.catalog.read() as conn:
            row = (await conn.execute(sa.select(namespaces).where(namespaces.c.name_key == name.lower()))).first()
        if row is None:
            raise NotFound(f"namespace {name!r} not found", code="namespace_not_found")
        return _namespace(row)

    async def role_in(self, namespace_id: int, identity: Identity) -> str | None:
        if identity.anonymous:
            return None
        async with self.catalog.read() as conn:
            return (await conn.execute(sa.select(memberships.c.role).where(
                memberships.c.namespace_id == namespace_id, memberships.c.user_id == identity.user_id))).scalar()

    async def visible_namespace(self, identity: Identity, name: str) -> tuple[Namespace, str | None]:
        """A namespace the caller belongs to (or any, for a site admin); others look missing."""
        require_authenticated(identity)
        try:
            ns = await self.get_namespace(name)
        except NotFound:
            raise NotFound(f"namespace {name!r} not found", code="namespace_not_found") from None
        role = await self.role_in(ns.id, identity)
        if role is None and not identity.is_admin:
            raise NotFound(f"namespace {name!r} not found", code="namespace_not_found")
        return ns, role

    async def list_namespaces(self, identity: Identity) -> list[dict]:
        require_authenticated(identity)
        query = sa.select(namespaces, memberships.c.role).select_from(
            namespaces.outerjoin(memberships, sa.and_(memberships.c.namespace_id == namespaces.c.id,
                                                      memberships.c.user_id == identity.user_id)))
        if not identity.is_admin:
            query = query.where(memberships.c.role.is_not(None))
        async with self.catalog.read() as conn:
            rows = (await conn.execute(query.order_by(namespaces.c.name_key))).all()
        return [{**_namespace(r).to_json(), "role": r.role} for r in rows]

    async def set_member(self, ns_name: str, user_name: str, role: str) -> dict:
        if role not in ROLES:
            raise InvalidInput(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
        ns = await self.get_namespace(ns_name)
        user = await self.get_user(user_name)
        async with self.catalog.tx() as conn:
            stmt = insert(conn, memberships).values(namespace_id=ns.id, user_id=user.id, role=role)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["namespace_id", "user_id"],
                                                          set_={"role": role}))
        return {"namespace": ns.name, "user": user.name, "role": role}

    async def set_member_as(self, identity: Identity, ns_name: str, user_name: str, role: str) -> dict:
        ns, my_role = await self.visible_namespace(identity, ns_name)
        check_namespace_admin(identity, my_role)
        return await self.set_member(ns.name, user_name, role)

    async def remove_member_as(self, identity: Identity, ns_name: str, user_name: str) -> None:
        ns, my_role = await self.visible_namespace(identity, ns_name)
        check_namespace_admin(identity, my_role)
        user = await self.get_user(user_name)
        async with self.catalog.tx() as conn:
            res = await conn.execute(memberships.delete().where(
                memberships.c.namespace_id == ns.id, memberships.c.user_id == user.id))
        if res.rowcount == 0:
            raise NotFound(f"{user.name} is not a member of {ns.name}", code="member_not_found")

    async def list_members(self, identity: Identity, ns_name: str) -> list[dict]:
        ns, _ = await self.visible_namespace(identity, ns_name)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(users.c.name, memberships.c.role)
                                       .join(users, users.c.id == memberships.c.user_id)
                                       .where(memberships.c.namespace_id == ns.id)
                                       .order_by(users.c.name_key))).all()
        return [{"user": r.name, "role": r.role} for r in rows]

    # -- quotas ------------------------------------------------------------------------------------
    @staticmethod
    async def lock_quota(conn: AsyncConnection, namespace_id: int) -> sa.Row | None:
        """The namespace's name and quotas, its row locked until the caller's transaction ends, or
        None (and nothing locked) when it has no quota. Every write a quota limits takes this lock
        and counts usage inside the same transaction, so processes sharing the catalog cannot both
        pass a check and together exceed the quota (SQLite's write lock already serializes them;
        on PostgreSQL this row lock does, also in ``tx(exclusive=False)``)."""
        query = sa.select(namespaces.c.name, namespaces.c.quota_bytes, namespaces.c.quota_models).where(
            namespaces.c.id == namespace_id)
        row = (await conn.execute(query)).one()
        if row.quota_bytes is None and row.quota_models is None:
            return None
        return (await conn.execute(query.with_for_update())).one()

    async def usage(self, namespace_id: int, conn: AsyncConnection | None = None) -> dict:
        """Stored bytes (each distinct object once, however many models link it) and model count.
        Objects uploaded through Xet are not stored whole: they count as their xorbs, each distinct
        xorb once, so a new version of a file costs only the chunks that changed. ``conn``: count
        inside the caller's transaction (after ``lock_quota``)."""
        if conn is not None:
            return await self._usage(conn, namespace_id)
        async with self.catalog.read() as conn:
            return await self._usage(conn, namespace_id)

    @staticmethod
    async def _usage(conn: AsyncConnection, namespace_id: int) -> dict:
        linked = (sa.select(lfs_links.c.oid).distinct().join(models, models.c.id == lfs_links.c.model_id)
                  .where(models.c.namespace_id == namespace_id).subquery())
        xorbs = (sa.select(xet_xorb_links.c.xorb_hash).distinct()
                 .join(models, models.c.id == xet_xorb_links.c.model_id)
                 .where(models.c.namespace_id == namespace_id).subquery())
        used = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(lfs_objects.c.size), 0))
                                   .where(lfs_objects.c.oid.in_(sa.select(linked.c.oid)),
                                          lfs_objects.c.oid.notin_(sa.select(xet_files.c.sha256))))).scalar_one()
        used += (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(xet_xorbs.c.size), 0))
                                    .where(xet_xorbs.c.hash.in_(sa.select(xorbs.c.xorb_hash))))).scalar_one()
        count = (await conn.execute(sa.select(sa.func.count()).select_from(models)
                                    .where(models.c.namespace_id == namespace_id))).scalar_one()
        return {"bytes": int(used), "models": int(count)}

    async def quota(self, namespace_id: int) -> dict:
        async with self.catalog.read() as conn:
            row = (await conn.execute(sa.select(namespaces.c.quota_bytes, namespaces.c.quota_models)
                                      .where(namespaces.c.id == namespace_id))).one()
        return {"bytes": row.quota_bytes, "models": row.quota_models}

    async def set_quota(self, ns_name: str, *, bytes_: int | None, models_: int | None) -> dict:
        for value, what in ((bytes_, "bytes"), (models_, "models")):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise InvalidInput(f"quota {what} must be an integer >= 0 or null")
        ns = await self.get_namespace(ns_name)
        async with self.catalog.tx() as conn:
            await conn.execute(namespaces.update().where(namespaces.c.id == ns.id).values(
                quota_bytes=bytes_, quota_models=models_))
        return {"namespace": ns.name, "quota": {"bytes": bytes_, "models": models_}, "usage": await self.usage(ns.id)}

    async def set_quota_as(self, identity: Identity, ns_name: str, *, bytes_: int | None, models_: int | None) -> dict:
        require_site_admin(identity)
        return await self.set_quota(ns_name, bytes_=bytes_, models_=models_)

    async def namespace_json(self, identity: Identity, ns_name: str) -> dict:
        ns, role = await self.visible_namespace(identity, ns_name)
        return {**ns.to_json(), "role": role, "quota": await self.quota(ns.id), "usage": await self.usage(ns.id)}
