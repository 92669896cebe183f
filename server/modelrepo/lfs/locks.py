"""Git LFS file locks (docs/api/locking.md): create, list, verify, unlock.

Writers lock; anyone who can read lists; only the owner unlocks, or a namespace admin with force.
The catalog decides between processes: the unique (model, path) makes one of two racing creates a
409, and an unlock deletes the row it locked.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import lfs_locks, users
from modelrepo.errors import Conflict, Forbidden, InvalidInput, NotFound, model_not_found
from modelrepo.accounts.access import Identity
from modelrepo.models.service import Model

MAX_PAGE = 100


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _lock_json(row: sa.Row) -> dict:
    return {"id": str(row.id), "path": row.path, "locked_at": _iso(row.locked_at), "owner": {"name": row.owner}}


_SELECT = sa.select(lfs_locks, users.c.name.label("owner")).join(users, users.c.id == lfs_locks.c.owner_id)


class LockConflict(Conflict):
    def __init__(self, lock: dict) -> None:
        super().__init__("already created lock", code="lock_exists")
        self.lock = lock


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path or len(path) > 4096 or "\x00" in path:
        raise InvalidInput("path must be a non-empty string")
    return path


def _page(cursor: object, limit: object) -> tuple[int, int]:
    try:
        after = int(cursor) if cursor not in (None, "") else 0
        size = int(limit) if limit not in (None, "") else MAX_PAGE
    except (TypeError, ValueError):
        raise InvalidInput("cursor and limit must be integers") from None
    if size < 1:
        raise InvalidInput("limit must be at least 1")
    return after, min(size, MAX_PAGE)


class Locks:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    async def create(self, identity: Identity, model: Model, path: object, ref: str | None) -> dict:
        path = _check_path(path)
        try:
            async with self.catalog.tx() as conn:
                res = await conn.execute(lfs_locks.insert().values(
                    model_id=model.id, path=path, ref=ref, owner_id=identity.user_id, locked_at=time.time()))
                row = (await conn.execute(_SELECT.where(lfs_locks.c.id == res.inserted_primary_key[0]))).one()
        except DbIntegrityError:
            async with self.catalog.read() as conn:
                row = (await conn.execute(_SELECT.where(lfs_locks.c.model_id == model.id,
                                                        lfs_locks.c.path == path))).first()
            if row is None:  # not a lock taken first: the model was deleted under us
                raise model_not_found() from None
            raise LockConflict(_lock_json(row)) from None
        return _lock_json(row)

    async def list(self, model: Model, *, path: str | None = None, lock_id: str | None = None,
                   cursor: object = None, limit: object = None) -> dict:
        after, size = _page(cursor, limit)
        query = _SELECT.where(lfs_locks.c.model_id == model.id, lfs_locks.c.id > after)
        if path:
            query = query.where(lfs_locks.c.path == path)
        if lock_id:
            if not lock_id.isdigit():
                return {"locks": []}
            query = query.where(lfs_locks.c.id == int(lock_id))
        async with self.catalog.read() as conn:
            rows = (await conn.execute(query.order_by(lfs_locks.c.id).limit(size + 1))).all()
        out: dict = {"locks": [_lock_json(r) for r in rows[:size]]}
        if len(rows) > size:
            out["next_cursor"] = str(rows[size - 1].id)
        return out

    async def verify(self, identity: Identity, model: Model, cursor: object = None, limit: object = None) -> dict:
        page = await self.list(model, cursor=cursor, limit=limit)
        ours = [lock for lock in page["locks"] if lock["owner"]["name"] == identity.name]
        theirs = [lock for lock in page["locks"] if lock["owner"]["name"] != identity.name]
        out = {"ours": ours, "theirs": theirs}
        if "next_cursor" in page:
            out["next_cursor"] = page["next_cursor"]
        return out

    async def unlock(self, identity: Identity, model: Model, lock_id: str, force: bool) -> dict:
        if not lock_id.isdigit():
            raise NotFound("lock not found")
        async with self.catalog.tx() as conn:
            # Locked until the delete: of two unlocks racing (from any process), one answers 404.
            row = (await conn.execute(_SELECT.where(lfs_locks.c.model_id == model.id, lfs_locks.c.id == int(lock_id))
                                      .with_for_update(of=lfs_locks))).first()
            if row is None:
                raise NotFound("lock not found")
            if row.owner_id != identity.user_id:
                if not force:
                    raise Forbidden(f"lock is owned by {row.owner}; use --force (namespace admins only)")
                if not identity.namespace_admin(model.role):
                    raise Forbidden("only a namespace admin can force-unlock another user's lock")
            await conn.execute(lfs_locks.delete().where(lfs_locks.c.id == row.id))
        return _lock_json(row)

    async def held_by_others(self, model_id: int, user_id: int | None) -> dict[str, tuple[str, str]]:
        """path -> (owner, lock id) of every lock on the model not held by ``user_id``: what a push
        by that user may not change (pre-receive enforces locks server-side)."""
        query = _SELECT.where(lfs_locks.c.model_id == model_id)
        if user_id is not None:
            query = query.where(lfs_locks.c.owner_id != user_id)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(query)).all()
        return {r.path: (r.owner, str(r.id)) for r in rows}
