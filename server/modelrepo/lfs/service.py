"""Git LFS use cases: batch planning, verified uploads, per-repository links, downloads.

The catalog is the authority on what a repository may read: ``lfs_links`` rows, written only after
the bytes were verified against the OID. Knowing a hash is never enough: an OID the store holds for
another tenant is a per-object 404 on download here, and an upload of it must send (and we verify)
every byte before the link is made — the store still keeps one copy.
"""

import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.portable import insert
from modelrepo.catalog.schema import lfs_links, lfs_objects
from modelrepo.catalog.schema import models as models_table
from modelrepo.errors import (
    Conflict,
    InsufficientStorage,
    IntegrityError,
    NotFound,
    StorageUnavailable,
    TooLarge,
    Unprocessable,
    model_not_found,
)
from modelrepo.settings import LfsSettings
from modelrepo.storage.base import Presigned, Presigner
from modelrepo.storage.verified import ObjectStore
from modelrepo.accounts.access import Identity
from modelrepo.lfs.action_tokens import ActionSigner
from modelrepo.models.service import Model, Models, hold_for_link
from modelrepo.push.rules import human

OID_RE = re.compile(r"^[0-9a-f]{64}$")
OPERATIONS = ("upload", "download")


def check_oid(oid: object) -> str:
    if not isinstance(oid, str) or not OID_RE.match(oid):
        raise Unprocessable(f"invalid OID {oid!r}: expected 64 lowercase hex characters (sha256)")
    return oid


@dataclass(frozen=True)
class Urls:
    """Where this repository's LFS endpoints are, as the client reached us."""

    lfs_base: str  # e.g. http://host:port/acme/bert.git/info/lfs

    def object(self, oid: str, token: str | None = None) -> str:
        return f"{self.lfs_base}/objects/{oid}" + (f"?token={token}" if token else "")

    @property
    def verify(self) -> str:
        return f"{self.lfs_base}/verify"


class Lfs:
    def __init__(self, catalog: Catalog, models: Models, store: ObjectStore, signer: ActionSigner,
                 settings: LfsSettings, on_verified: Callable[[str, int], None] = lambda oid, size: None) -> None:
        self.catalog = catalog
        self.on_verified = on_verified  # inspect.Inspections.schedule: look inside the new object
        self.models = models
        self.store = store
        self.signer = signer
        self.settings = settings
        # Direct mode: clients move the bytes to and from the backend itself, with presigned URLs.
        direct = settings.storage == "s3" and settings.s3.mode == "direct"
        self.presigner: Presigner | None = store.presigner if direct else None
        self.direct = self.presigner is not None

    # -- batch ---------------------------------------------------------------------------------
    async def batch(self, identity: Identity, namespace: str, name: str, body: dict, urls: Urls) -> dict:
        operation = body.get("operation")
        if operation not in OPERATIONS:
            raise Unprocessable(f"unknown operation {operation!r}: expected upload or download")
        model = await (self.models.for_write if operation == "upload" else self.models.for_read)(
            identity, namespace, name)
        transfers = body.get("transfers") or ["basic"]
        if not isinstance(transfers, list) or "basic" not in transfers:
            raise Unprocessable(f"no supported transfer adapter in {transfers!r}: this server speaks 'basic'")
        ref = body.get("ref")
        if ref is not None and not isinstance(ref, dict):
            raise Unprocessable("ref must be an object like {\"name\": \"refs/heads/main\"}")
        hash_algo = body.get("hash_algo", "sha256")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise Unprocessable("objects must be a list")
        if len(objects) > self.settings.max_batch_objects:
            raise TooLarge(f"{len(objects)} objects in one batch; the limit is {self.settings.max_batch_objects}")

        # huggingface_hub PUTs to the upload href with no headers at all (the action header is
        # ignored), and is the only client that offers "multipart": such clients get daemon hrefs
        # carrying the signed token in the query, even in S3 direct mode.
        self_contained = "multipart" in transfers
        wanted = [o["oid"] for o in objects if isinstance(o, dict) and isinstance(o.get("oid"), str)
                  and OID_RE.match(o["oid"])]
        linked = await self.linked_sizes(model.id, wanted)
        if operation == "download" and len(linked) < len(set(wanted)) and not await self.models.exists(model.key):
            raise model_not_found()  # deleted since for_read: not "object not found", object by object
        if operation == "upload":
            await self.check_quota(model, objects, wanted)
        out = []
        for obj in objects:
            out.append(await self._plan(model, operation, obj, hash_algo, linked, urls, self_contained))
        return {"transfer": "basic", "objects": out, "hash_algo": "sha256"}

    async def _plan(self, model: Model, operation: str, obj: object, hash_algo: object, linked: dict[str, int],
                    urls: Urls, self_contained: bool = False) -> dict:
        if not isinstance(obj, dict):
            return {"oid": "", "size": 0, "error": {"code": 422, "message": "object must be {oid, size}"}}
        oid, size = obj.get("oid"), obj.get("size")
        entry: dict = {"oid": oid if isinstance(oid, str) else str(oid), "size": size if _is_size(size) else 0}
        if hash_algo != "sha256":
            entry["error"] = {"code": 409, "message": f"unsupported hash_algo {hash_algo!r}: this server uses sha256"}
            return entry
        if not isinstance(oid, str) or not OID_RE.match(oid):
            entry["error"] = {"code": 422, "message": "invalid OID: expected 64 lowercase hex characters"}
            return entry
        if not _is_size(size):
            entry["error"] = {"code": 422, "message": f"invalid size {size!r}: expected an integer >= 0"}
            return entry
        if size > self.settings.max_object_size:
            entry["error"] = {"code": 422, "message": f"object of {size} bytes exceeds the limit of "
                                                      f"{self.settings.max_object_size} bytes"}
            return entry
        stored = linked.get(oid)
        ttl = self.settings.action_expiry
        # Tell the client to re-batch a little before the token really expires.
        expires_in = max(int(ttl) - 30, 1)
        if operation == "download":
            if stored is None:
                entry["error"] = {"code": 404, "message": "object not found in this repository"}
            elif stored != size:
                entry["error"] = {"code": 422, "message": f"size {size} does not match the stored object ({stored})"}
            else:
                entry["authenticated"] = True
                entry["actions"] = {"download": await self._download_action(model, oid, size, urls, ttl,
                                                                           expires_in)}
            return entry
        if stored is not None:
            if stored != size:
                entry["error"] = {"code": 422, "message": f"size {size} does not match the stored object ({stored})"}
            # Present and linked: no actions, the client skips it.
            return entry
        entry["authenticated"] = True
        nonce = ""
        if self.presigner is not None and not self_contained and self.presigner.can_presign_upload(size):
            # Straight to S3, into a one-off staging key that verify checks and moves into place.
            nonce = secrets.token_hex(16)
            p = await self.presigner.presign_upload(oid, nonce, ttl)
            upload = {"href": p.href, "header": p.header, "expires_in": expires_in}
        else:
            token = self.signer.sign("upload", model.key, oid, size, ttl)
            upload = {"href": urls.object(oid, token if self_contained else None),
                      "header": {"Authorization": "Bearer " + token}, "expires_in": expires_in}
        verify_token = self.signer.sign("verify", model.key, oid, size, ttl, nonce)
        entry["actions"] = {
            "upload": upload,
            "verify": {"href": urls.verify, "expires_in": expires_in,
                       "header": {"Authorization": "Bearer " + verify_token}},
        }
        return entry

    async def _download_action(self, model: Model, oid: str, size: int, urls: Urls, ttl: float,
                               expires_in: int) -> dict:
        if self.direct:
            p = await self.presigned_download(oid)
            return {"href": p.href, "header": p.header, "expires_in": expires_in}
        token = self.signer.sign("download", model.key, oid, size, ttl)
        return {"href": urls.object(oid), "header": {"Authorization": "Bearer " + token}, "expires_in": expires_in}

    async def presigned_download(self, oid: str) -> Presigned:
        """A URL the client fetches the object from directly (direct mode only)."""
        if self.presigner is None:
            raise RuntimeError("presigned downloads need lfs.s3.mode: direct")
        return await self.store.presign_download(self.presigner, oid, self.settings.action_expiry)

    async def check_quota(self, model: Model, objects: list, wanted: list[str]) -> None:
        """Refuse the whole batch (507, as batch.md names it) when the namespace's LFS quota would be
        exceeded. Objects the namespace already links count nothing: they are stored once."""
        quota = (await self.models.accounts.quota(model.namespace_id))["bytes"]
        if quota is None:
            return
        sizes = {o["oid"]: o.get("size") for o in objects if isinstance(o, dict) and o.get("oid") in set(wanted)}
        async with self.catalog.read() as conn:
            present = set((await conn.execute(
                sa.select(lfs_links.c.oid).distinct().join(models_table, models_table.c.id == lfs_links.c.model_id)
                .where(models_table.c.namespace_id == model.namespace_id, lfs_links.c.oid.in_(wanted)))).scalars())
        needed = sum(s for oid, s in sizes.items() if oid not in present and isinstance(s, int) and s > 0)
        if not needed:
            return
        used = (await self.models.accounts.usage(model.namespace_id))["bytes"]
        if used + needed > quota:
            raise _over_quota(model.namespace, used, quota, needed)

    # -- links ---------------------------------------------------------------------------------
    async def linked_sizes(self, model_id: int, oids: list[str]) -> dict[str, int]:
        if not oids:
            return {}
        found: dict[str, int] = {}
        async with self.catalog.read() as conn:
            for i in range(0, len(oids), 500):  # stay under SQLite's bound-parameter limit
                rows = await conn.execute(
                    sa.select(lfs_objects.c.oid, lfs_objects.c.size)
                    .join(lfs_links, lfs_links.c.oid == lfs_objects.c.oid)
                    .where(lfs_links.c.model_id == model_id, lfs_links.c.oid.in_(oids[i:i + 500])))
                found.update({r.oid: r.size for r in rows})
        return found

    async def linked_size(self, model_id: int, oid: str) -> int | None:
        return (await self.linked_sizes(model_id, [oid])).get(oid)

    async def record(self, model_id: int, oid: str, size: int) -> None:
        """The object's bytes are verified and in the store: record it and link it, in one transaction.

        The batch's quota check admits a push; this one decides it. Concurrent pushes (from any
        process on the catalog) can each pass the batch check, so the link that would take the
        namespace over its quota is refused here, counted under the namespace's row lock; its
        unlinked bytes are left for gc."""
        now = time.time()
        accounts = self.models.accounts
        # Not exclusive (see Catalog.tx): two inserts ON CONFLICT DO NOTHING, safe side by side; a
        # quota is the one thing to decide between them, under the namespace's row lock.
        async with self.catalog.tx(exclusive=False) as conn:
            # gc deletes unlinked objects from the store while holding the exclusive write lock:
            # checking under ours that the bytes are still stored means we never link an object gc removed.
            if await self.store.stat(oid) != size:
                raise StorageUnavailable("the object was removed while it was being uploaded; upload it again")
            ns_id = await hold_for_link(conn, model_id)
            limits = await accounts.lock_quota(conn, ns_id)
            quota = limits.quota_bytes if limits else None
            if quota is not None:
                before = (await accounts.usage(ns_id, conn))["bytes"]
            await conn.execute(insert(conn, lfs_objects).values(oid=oid, size=size, created_at=now)
                               .on_conflict_do_nothing(index_elements=["oid"]))
            await conn.execute(insert(conn, lfs_links).values(model_id=model_id, oid=oid, created_at=now)
                               .on_conflict_do_nothing(index_elements=["model_id", "oid"]))
            if quota is not None:
                after = (await accounts.usage(ns_id, conn))["bytes"]
                if after > before and after > quota:
                    raise _over_quota(limits.name, before, quota, after - before)
        self.on_verified(oid, size)

    async def known_size(self, oid: str) -> int | None:
        async with self.catalog.read() as conn:
            return (await conn.execute(sa.select(lfs_objects.c.size).where(lfs_objects.c.oid == oid))).scalar()

    # -- transfers -------------------------------------------------------------------------------
    async def receive(self, model_id: int, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """A verified upload. If the store already holds the OID (another repository sent it), the
        bytes are still hashed in full — proof of possession — but not written a second time."""
        check_oid(oid)
        known = await self.known_size(oid)
        if known is not None and known != size:
            raise Conflict(f"an object with this OID is stored with size {known}, not {size}")
        if known is not None and await self.store.stat(oid) == size:
            await self.store.check(oid, size, chunks)
        else:
            await self.store.put(oid, size, chunks)
        await self.record(model_id, oid, size)

    async def verify(self, model: Model, oid: str, size: int, nonce: str = "") -> None:
        """The client's post-upload check. In S3 direct mode this is where the object the client put
        into its staging key is checked, moved into place and linked."""
        check_oid(oid)
        model_id = model.id
        stored = await self.linked_size(model_id, oid)
        if stored is None and self.presigner is not None and nonce:
            known = await self.known_size(oid)
            if known is not None and known != size:
                raise Conflict(f"an object with this OID is stored with size {known}, not {size}")
            await self.store.accept_staged(self.presigner, oid, size, nonce)
            await self.record(model_id, oid, size)
            return
        if stored is None:
            if not await self.models.exists(model.key):
                raise model_not_found()  # deleted since the upload: its links went with it
            raise NotFound("object not found in this repository")
        if stored != size:
            raise IntegrityError(f"size {size} does not match the stored object ({stored})")

    async def readable_size(self, model: Model, oid: str) -> int:
        check_oid(oid)
        size = await self.linked_size(model.id, oid)
        if size is None:
            if not await self.models.exists(model.key):
                raise model_not_found()  # deleted since the caller found it: its links went with it
            raise NotFound("object not found in this repository")
        return size


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _over_quota(namespace: str, used: int, quota: int, needed: int) -> InsufficientStorage:
    return InsufficientStorage(
        f"namespace {namespace} LFS quota exceeded: {human(used)} used of {human(quota)}, "
        f"this push needs {human(needed)} more. Ask an administrator to raise the quota "
        f"(modelrepo namespace set-quota {namespace} --bytes ...) or delete unused models.")
