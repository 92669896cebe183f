"""The LFS object store as git-lfs and /resolve see it: the verified store, plus every file that
was uploaded through Xet, read by rebuilding it from its xorbs.

One object, two protocols, stored once: a Xet upload registers the file and checks that its
bytes hash to the sha256 its LFS pointer names, but does not write a second copy; a read of that
OID streams the reconstruction. Only where a client must be sent straight to the bucket (S3
direct mode) is the object materialized, once, under its OID, through the verified ``put``.

``XetBackedStore`` is a ``storage.verified.ObjectStore`` over the same backend, so everything
holding "the store" (Lfs, fsck, backup's verification) gets the view without knowing about Xet;
``inner`` is the plain verified store (where xorbs live) for code that must not see the view.
"""

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from modelrepo.catalog.db import Catalog
from modelrepo.storage.base import Presigned, Presigner
from modelrepo.storage.verified import Digest, ObjectStore, pump
from modelrepo.xet.files import Files


def xet_view(inner: ObjectStore, catalog: Catalog) -> "XetBackedStore":
    """The store as LFS readers must see it (the daemon, the CLI, fsck, backup verification)."""
    return XetBackedStore(inner, Files(catalog, inner))


class XetBackedStore(ObjectStore):
    def __init__(self, inner: ObjectStore, files: Files) -> None:
        super().__init__(inner.backend)
        self.inner = inner
        self.files = files

    async def stat(self, oid: str) -> int | None:
        size = await self.inner.stat(oid)
        if size is not None:
            return size
        found = await self.files.by_sha256(oid)
        return None if found is None else found.size

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """An LFS upload of bytes Xet already holds is verified in full (proof of possession) and
        not written again; anything else goes to the backend through the verified put."""
        found = await self.files.by_sha256(oid)
        if found is None or found.size != size:
            await self.inner.put(oid, size, chunks)
            return
        await self.inner.check(oid, size, chunks)

    async def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        if await self.inner.stat(oid) is not None:
            async for chunk in self.inner.read(oid, start, end):
                yield chunk
            return
        found = await self.files.by_sha256(oid)
        if found is None:
            # Let the backend report the missing object its own way.
            async for chunk in self.inner.read(oid, start, end):
                yield chunk
            return
        async for chunk in self.files.stream(found.terms, start, end):
            yield chunk

    async def rehash(self, oid: str, on_bytes: Callable[[int], None] = lambda n: None) -> tuple[str, int]:
        """fsck's re-hash: a rebuilt object is hashed as it is rebuilt, so a xorb that decodes to
        other bytes than the file's sha256 shows up as a corrupt LFS object."""
        if await self.inner.stat(oid) is not None:
            return await self.inner.rehash(oid, on_bytes)
        digest = Digest()

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in self.read(oid):
                on_bytes(len(chunk))
                yield chunk

        await pump(digest, counted())
        return digest.hexdigest(), digest.received

    def local_path(self, oid: str) -> Path | None:
        """A file path only when the bytes are really on disk: a rebuilt object is streamed."""
        path = self.inner.local_path(oid)
        return path if path is not None and path.is_file() else None

    async def presign_download(self, presigner: Presigner, oid: str, ttl: float) -> Presigned:
        """S3 direct mode sends the client to the bucket: put a rebuilt object there first."""
        if await self.inner.stat(oid) is None:
            found = await self.files.by_sha256(oid)
            if found is not None:
                await self.inner.put(oid, found.size, self.files.stream(found.terms))
        return await self.inner.presign_download(presigner, oid, ttl)
