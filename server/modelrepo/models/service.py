"""Models: catalog rows plus their bare repositories, kept in step.

Creation writes the repository first and the row second, inside one transaction, so a failure at
either step leaves neither. Deletion removes the row and the directory together the same way.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.portable import json_text
from modelrepo.catalog.schema import deployments, memberships, model_card_tags, model_files, models, namespaces
from modelrepo.errors import Conflict, Forbidden, InvalidInput, model_not_found
from modelrepo.names import check_name, check_ref_name
from modelrepo.git import repos
from modelrepo.accounts.access import (
    ANONYMOUS,
    VISIBILITIES,
    Identity,
    check_model_role,
    check_namespace_admin,
    check_read,
)
from modelrepo.accounts.service import Accounts
from modelrepo.models.webhooks import enqueue, envelope

T = TypeVar("T")


@dataclass(frozen=True)
class Model:
    id: int
    namespace: str
    name: str
    description: str
    visibility: str
    default_branch: str
    created_at: float
    updated_at: float
    role: str | None = None  # the caller's role in the namespace, if any
    namespace_id: int = 0
    allow_force_push: bool = False
    card: dict | None = None
    summary: str = ""
    library_name: str | None = None
    pipeline_tag: str | None = None
    total_size: int = 0
    head_commit: str | None = None

    @property
    def key(self) -> str:
        """Identity that survives id reuse: SQLite may hand a deleted model's id to a new one."""
        return f"{self.id}.{int(self.created_at * 1000)}"

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self, base_url: str) -> dict:
        return {
            "id": self.full_name, "namespace": self.namespace, "name": self.name,
            "description": self.description, "visibility": self.visibility,
            "default_branch": self.default_branch, "created_at": self.created_at,
            "updated_at": self.updated_at, "clone_url": f"{base_url}/{self.full_name}.git",
            "allow_force_push": self.allow_force_push, "card": self.card or {}, "summary": self.summary,
            "library_name": self.library_name, "pipeline_tag": self.pipeline_tag,
            "tags": (self.card or {}).get("tags", []), "total_size": self.total_size, "head_commit": self.head_commit,
        }


_SELECT = sa.select(models, namespaces.c.name.label("ns_name")).join(namespaces, namespaces.c.id == models.c.namespace_id)


def _model(row: sa.Row, role: str | None = None) -> Model:
    return Model(id=row.id, namespace=row.ns_name, name=row.name, description=row.description,
                 visibility=row.visibility, default_branch=row.default_branch, created_at=row.created_at,
                 updated_at=row.updated_at, role=role, namespace_id=row.namespace_id,
                 allow_force_push=bool(row.allow_force_push),
                 card=json.loads(row.card_json) if row.card_json else None, summary=row.summary,
                 library_name=row.library_name, pipeline_tag=row.pipeline_tag, total_size=row.total_size,
                 head_commit=row.head_commit)


async def hold_for_link(conn, model_id: int) -> int:
    """Inside a transaction that links uploaded bytes to a model: a shared lock on the model's row
    (FOR SHARE on PostgreSQL; SQLite's writer lock holds everything), so a delete, which locks the
    row for update, waits for the link or has already won; then the upload is the missing model's
    404, not a foreign-key 500. Returns the model's namespace id."""
    ns_id = (await conn.execute(sa.select(models.c.namespace_id).where(models.c.id == model_id)
                                .with_for_update(read=True))).scalar_one_or_none()
    if ns_id is None:
        raise model_not_found()
    return ns_id


def _check_visibility(value: str) -> str:
    if value not in VISIBILITIES:
        raise InvalidInput(f"invalid visibility {value!r}: expected one of {', '.join(VISIBILITIES)}")
    return value


class Models:
    def __init__(self, catalog: Catalog, accounts: Accounts, store: repos.RepoStore, default_branch: str,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.catalog = catalog
        self.accounts = accounts
        self.store = store
        self.default_branch = default_branch
        self.wake = wake  # nudges the webhook worker after a commit that enqueued events

    # -- lookups with access -------------------------------------------------------------------
    async def _find(self, namespace: str, name: str, identity: Identity) -> Model | None:
        # Invalid names cannot exist: treat them exactly like missing models (no oracle).
        try:
            check_name(namespace, "namespace")
            check_name(name, "model")
        except InvalidInput:
            return None
        async with self.catalog.read() as conn:
            row = (await conn.execute(_SELECT.where(namespaces.c.name_key == namespace.lower(),
                                                    models.c.name_key == name.lower()))).first()
            if row is None:
                return None
            role = None
            if not identity.anonymous:
                role = (await conn.execute(sa.select(memberships.c.role).where(
                    memberships.c.namespace_id == row.namespace_id,
                    memberships.c.user_id == identity.user_id))).scalar()
        return _model(row, role)

    async def find(self, namespace: str, name: str) -> Model | None:
        """A model by name with no access check: only for callers holding another proof (a signed
        action token, a push session)."""
        return await self._find(namespace, name, ANONYMOUS)

    async def exists(self, key: str) -> bool:
        """Whether the model of this ``Model.key`` (not a later one under its name or id) is still
        there: how a miss in what a delete removes with it (LFS links) is told from a real miss,
        and a signed token's model from a deleted one."""
        model_id, _, _ = key.partition(".")
        if not model_id.isdigit():
            return False
        async with self.catalog.read() as conn:
            row = (await conn.execute(_SELECT.where(models.c.id == int(model_id)))).first()
        return row is not None and _model(row).key == key

    async def for_read(self, identity: Identity, namespace: str, name: str) -> Model:
        model = await self._find(namespace, name, identity)
        check_read(identity, model.visibility if model else None, model.role if model else None)
        assert model is not None
        return model

    async def for_write(self, identity: Identity, namespace: str, name: str) -> Model:
        model = await self.for_read(identity, namespace, name)
        check_model_role(identity, model.role, "writer", "write")
        return model

    async def for_admin(self, identity: Identity, namespace: str, name: str) -> Model:
        model = await self.for_read(identity, namespace, name)
        check_namespace_admin(identity, model.role)
        return model

    # -- use cases -------------------------------------------------------------------------------
    async def create(self, identity: Identity, namespace: str, name: str, *, description: str = "",
                     visibility: str = "private", default_branch: str | None = None,
                     check_access: bool = True) -> Model:
        check_name(name, "model")
        _check_visibility(visibility)
        branch = check_ref_name(default_branch or self.default_branch, "branch")
        if check_access:
            ns, role = await self.accounts.visible_namespace(identity, namespace)
            check_model_role(identity, role, "writer", "write")
        else:
            ns = await self.accounts.get_namespace(namespace)
        now = time.time()
        try:
            async with self.catalog.tx() as conn:
                # Counted under the namespace's row lock: two processes cannot both take the last place.
                limits = await self.accounts.lock_quota(conn, ns.id)
                quota = limits.quota_models if limits else None
                if quota is not None and (await self.accounts.usage(ns.id, conn))["models"] >= quota:
                    raise Forbidden(f"namespace {ns.name} is at its quota of {quota} models", code="quota_exceeded")
                res = await conn.execute(models.insert().values(
                    namespace_id=ns.id, name=name, name_key=name.lower(), description=description,
                    visibility=visibility, default_branch=branch, created_at=now, updated_at=now))
                await enqueue(conn, namespace_id=ns.id, model_id=None, event="model.created", payload=envelope(
                    "model.created", ns.name, name, {"visibility": visibility, "description": description,
                                                     "created_by": identity.name}))
                # Inside the transaction: if the repository cannot be made, the row is rolled back.
                await asyncio.to_thread(self.store.create, ns.name, name, branch)
        except IntegrityError:
            raise Conflict(f"model {ns.name}/{name} already exists", code="model_exists") from None
        self.wake()
        return Model(id=res.inserted_primary_key[0], namespace=ns.name, name=name, description=description,
                     visibility=visibility, default_branch=branch, created_at=now, updated_at=now,
                     namespace_id=ns.id)

    async def list(self, identity: Identity, *, namespace: str | None = None, search: str | None = None,
                   tag: str | None = None, library: str | None = None, pipeline_tag: str | None = None,
                   keywords: list[str] | None = None, card_license: str | None = None, order: str = "name",
                   limit: int = 100, offset: int = 0) -> list[Model]:
        """``order``: "name" (namespace/name) or "updated" (most recently updated first)."""
        role = memberships.c.role
        query = (sa.select(models, namespaces.c.name.label("ns_name"), role)
                 .join(namespaces, namespaces.c.id == models.c.namespace_id)
                 .outerjoin(memberships, sa.and_(memberships.c.namespace_id == models.c.namespace_id,
                                                 memberships.c.user_id == (identity.user_id or -1))))
        # Filter in SQL with the same rule as access.can_read.
        if identity.anonymous:
            query = query.where(models.c.visibility == "public")
        elif not identity.is_admin:
            query = query.where(sa.or_(models.c.visibility.in_(("public", "shared")), role.is_not(None)))
        if namespace:
            query = query.where(namespaces.c.name_key == namespace.lower())
        if tag:
            query = query.where(sa.exists().where(model_card_tags.c.model_id == models.c.id,
                                                  model_card_tags.c.tag == tag))
        if library:
            query = query.where(sa.func.lower(models.c.library_name) == library.lower())
        for word in keywords or ():
            # A card tag, the library or the task: the Hub's `filter` semantics.
            query = query.where(sa.or_(
                sa.exists().where(model_card_tags.c.model_id == models.c.id, model_card_tags.c.tag == word),
                sa.func.lower(models.c.library_name) == word.lower(), models.c.pipeline_tag == word))
        if pipeline_tag:
            query = query.where(models.c.pipeline_tag == pipeline_tag)
        if card_license:
            query = query.where(json_text(models.c.card_json, "license") == card_license)
        if search:
            like = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(sa.or_(sa.func.lower(models.c.name).like(like, escape="\\"),
                                       sa.func.lower(models.c.description).like(like, escape="\\"),
                                       (namespaces.c.name_key + "/" + models.c.name_key).like(like, escape="\\")))
        if order == "updated":
            query = query.order_by(models.c.updated_at.desc(), models.c.id.desc())
        else:
            query = query.order_by(namespaces.c.name_key, models.c.name_key)
        query = query.limit(limit).offset(offset)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_model(r, r.role) for r in rows]

    async def update(self, identity: Identity, namespace: str, name: str, *, description: str | None = None,
                     visibility: str | None = None, default_branch: str | None = None,
                     allow_force_push: bool | None = None) -> Model:
        model = await self.for_read(identity, namespace, name)
        if (visibility is not None and visibility != model.visibility or default_branch is not None
                or allow_force_push is not None):
            check_namespace_admin(identity, model.role)
        else:
            check_model_role(identity, model.role, "writer", "write")
        values: dict = {"updated_at": time.time()}
        if allow_force_push is not None:
            values["allow_force_push"] = allow_force_push
        if description is not None:
            values["description"] = description
        if visibility is not None:
            values["visibility"] = _check_visibility(visibility)
        async with self.catalog.tx() as conn:
            if default_branch is not None:
                values["default_branch"] = check_ref_name(default_branch, "branch")
                await self.read(model, repos.set_default_branch, default_branch)
            await conn.execute(models.update().where(models.c.id == model.id).values(**values))
        return await self.for_read(identity, namespace, name)

    async def delete(self, identity: Identity, namespace: str, name: str) -> None:
        """Repository, catalog rows and LFS links go together (objects no other repository links
        are left for a later sweep); refused while a deployment is requested or active."""
        model = await self.for_admin(identity, namespace, name)
        async with self.catalog.tx() as conn:
            # Locked before the pin check: a deployment being requested (which locks the row too)
            # or a post-receive rebuilding the mirror finishes first, or waits and finds no model.
            if (await conn.execute(sa.select(models.c.id).where(models.c.id == model.id).with_for_update())).first() is None:
                raise model_not_found()
            live = (await conn.execute(sa.select(deployments.c.id, deployments.c.name, deployments.c.status).where(
                deployments.c.model_id == model.id, deployments.c.status.in_(("requested", "active"))))).all()
            if live:
                names = ", ".join(f"{d.name} (id {d.id}, {d.status})" for d in live)
                ids = " ".join(str(d.id) for d in live)
                raise Conflict(f"{model.full_name} is used by deployments: {names}. Stop them first: "
                               f"`modelrepo deployment stop {ids}`, or PATCH /api/v1/deployments/{{id}} "
                               f"with status \"stopped\" for each.", code="model_in_use")
            await enqueue(conn, namespace_id=model.namespace_id, model_id=None, event="model.deleted",
                          payload=envelope("model.deleted", model.namespace, model.name,
                                           {"deleted_by": identity.name}))
            await conn.execute(models.delete().where(models.c.id == model.id))
            # Renamed away inside the transaction (gone together with the rows); the slow part,
            # removing the files, happens after the commit so no other writer waits on it.
            trash = await asyncio.to_thread(self.store.trash, model.namespace, model.name)
        self.wake()
        if trash is not None:
            await asyncio.to_thread(shutil.rmtree, trash, True)

    async def webhook_scope(self, identity: Identity, namespace: str, name: str | None = None) -> dict:
        """Whose webhooks: a namespace's (``name`` None) or a model's. Managing either takes a
        namespace admin. The result is the ``namespace_id``/``model_id`` keywords of Webhooks."""
        if name is not None:
            model = await self.for_admin(identity, namespace, name)
            return {"namespace_id": None, "model_id": model.id}
        ns, role = await self.accounts.visible_namespace(identity, namespace)
        check_namespace_admin(identity, role)
        return {"namespace_id": ns.id, "model_id": None}

    # -- refs ------------------------------------------------------------------------------------
    def path(self, model: Model):
        return self.store.path(model.namespace, model.name)

    async def read(self, model: Model, read: Callable[..., T], *args: object) -> T:
        """``read(path, *args)`` on the model's repository, in a thread. Another process may delete
        the model between the access check and the read: a repository gone (or replaced) under the
        read is the model's 404, never a 500 (``repos.stable_read``). Ref writes go through it too:
        they read the repository first, and one that lands in a repository on its way to the
        trash is answered as the delete that won."""
        return await asyncio.to_thread(repos.stable_read, self.path(model), read, *args)

    async def refs(self, identity: Identity, namespace: str, name: str) -> dict:
        model = await self.for_read(identity, namespace, name)
        return await self.read(model, repos.list_refs)

    async def files(self, model: Model) -> list[dict]:
        """The default branch's files as post-receive recorded them (LFS sizes, not pointer sizes)."""
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(model_files).where(model_files.c.model_id == model.id)
                                       .order_by(model_files.c.path))).all()
        return [{"path": r.path, "size": r.size, "blob_id": r.blob_oid, **({"lfs_oid": r.lfs_oid} if r.lfs_oid else {})}
                for r in rows]
