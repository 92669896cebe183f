"""The LFS object store as git-lfs and /resolve see it: the physical store, plus every file that
was uploaded through Xet, read by rebuilding it from its xorbs.

One object, two protocols, stored once: a Xet upload registers the file and checks that its
bytes hash to the sha256 its LFS pointer names, but does not write a second copy; a read of that
OID streams the reconstruction. Only where a client must be sent straight to S3 (direct mode) is
the object materialized, once, under its OID.

Calls used on the wrapped store (``storage.base.ObjectStore``): stat, put, read, local_path,
delete, list_objects, list_temp, delete_temp, close; and in S3 direct mode presign_download
(anything else is passed through untouched).
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from modelrepo.catalog.db import Catalog
from modelrepo.storage.base import ObjectStore, Verifier, batched
from modelrepo.xet.files import Files


def xet_view(inner: ObjectStore, catalog: Catalog) -> "XetBackedStore":
    """The store as LFS readers must see it (the daemon, fsck)."""
    return XetBackedStore(inner, Files(catalog, inner))


class XetBackedStore:
    def __init__(self, inner: ObjectStore, files: Files) -> None:
        self.inner = inner
        self.files = files
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        # S3 direct-mode extras (can_presign_upload, presign_upload, verify_upload, ...).
        return getattr(self.inner, attr)

    async def stat(self, oid: str) -> int | None:
        size = await self.inner.stat(oid)
        if size is not None:
            return size
        found = await self.files.by_sha256(oid)
        return None if found is None else found.size

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """An LFS upload of bytes Xet already holds is verified in full (proof of possession) and
        not written again; anything else goes to the physical store."""
        found = await self.files.by_sha256(oid)
        if found is None or found.size != size:
            await self.inner.put(oid, size, chunks)
            return
        verifier = Verifier(oid, size)
        async for group in batched(chunks, 1024 * 1024):
            await asyncio.to_thread(lambda g=group: [verifier.update(c) for c in g])
        verifier.finish()

    async def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if await self.inner.stat(oid) is not None:
            async for chunk in self.inner.read(oid, start, end):
                yield chunk
            return
        found = await self.files.by_sha256(oid)
        if found is None:
            # Let the physical store report the missing object its own way.
            async for chunk in self.inner.read(oid, start, end):
                yield chunk
            return
        async for chunk in self.files.stream(found.terms, start, end):
            yield chunk

    def local_path(self, oid: str) -> Path | None:
        """A file path only when the bytes are really on disk: a rebuilt object is streamed."""
        path = self.inner.local_path(oid)
        return path if path is not None and path.is_file() else None

    async def presign_download(self, oid: str, ttl: float):
        """S3 direct mode sends the client to the bucket: put a rebuilt object there first."""
        if await self.inner.stat(oid) is None:
            found = await self.files.by_sha256(oid)
            if found is not None:
                await self.inner.put(oid, found.size, self.files.stream(found.terms))
        return await self.inner.presign_download(oid, ttl)  # type: ignore[attr-defined]

    async def delete(self, oid: str) -> None:
        await self.inner.delete(oid)

    def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        return self.inner.list_objects()

    async def list_temp(self) -> list[tuple[str, float]]:
        return await self.inner.list_temp()

    async def delete_temp(self, name: str) -> None:
        await self.inner.delete_temp(name)

    async def close(self) -> None:
        await self.inner.close()
