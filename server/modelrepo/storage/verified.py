"""``ObjectStore``: the one verifying layer, over any backend. The rest of the code holds this.

Every byte that becomes an object passes through here: ``put`` streams the body into the
backend's temp place while hashing it, and commits only when the sha256 is the OID and the size is
the declared one (aborting otherwise, also on a dropped connection or a cancelled task). A direct
upload (presigned, the bytes never pass the daemon) is judged here too, in ``accept_staged``, from
the checksum the backend recorded or by re-hashing what it holds. ``check`` is the same hash
without storing (proof of possession of an object that is already stored), ``rehash`` what fsck
reads back. Reads, listings and deletes pass straight to the backend.

Hashing runs in worker threads (hashlib releases the GIL on large buffers) at the same time as
the backend writes the same piece, one piece behind the network read: the read of piece N+1, the
hash of piece N and its write overlap.
"""

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from modelrepo.errors import IntegrityError, InvalidInput
from modelrepo.storage.base import Backend, Partial, Presigned, PendingWrite, Presigner

CHUNK = 1024 * 1024

Sink = Callable[[list[bytes]], Awaitable[None]]


class Digest:
    """Running sha256 and byte count."""

    def __init__(self) -> None:
        self.received = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes | memoryview) -> None:
        self.received += len(chunk)
        self._hash.update(chunk)

    def update_all(self, pieces: list[bytes]) -> None:
        """Runs in a worker thread."""
        for piece in pieces:
            self.update(piece)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class Verifier(Digest):
    """The bytes must be exactly ``size`` long and hash to ``oid``: too many is an error as soon as
    it happens, too few or the wrong hash when ``finish`` is called."""

    def __init__(self, oid: str, size: int) -> None:
        super().__init__()
        self.oid = oid
        self.size = size

    def update(self, chunk: bytes | memoryview) -> None:
        if self.received + len(chunk) > self.size:
            raise IntegrityError(f"body is larger than the declared size {self.size}")
        super().update(chunk)

    def finish(self) -> None:
        if self.received < self.size:
            raise InvalidInput(f"body ended after {self.received} of {self.size} bytes")
        if self.hexdigest() != self.oid:
            raise IntegrityError(f"sha256 of the body is {self.hexdigest()}, not the OID {self.oid}")


async def batched(chunks: AsyncIterator[bytes], target: int) -> AsyncIterator[list[bytes]]:
    """Group network reads into lists of about ``target`` bytes, without copying them: per-piece
    work (a thread hop, a write) is paid per MiB, not per 64 KiB socket read, and joining them on
    the event loop would cost a copy of every byte on the one thread that also reads the sockets."""
    group: list[bytes] = []
    size = 0
    async for chunk in chunks:
        group.append(chunk)
        size += len(chunk)
        if size >= target:
            yield group
            group, size = [], 0
    if group:
        yield group


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def _step(digest: Digest, group: list[bytes], sink: Sink | None) -> None:
    """Hash one piece in a thread while the backend writes it. The write always finishes before
    the step does, so the next step's write never overtakes it."""
    hashing = asyncio.ensure_future(asyncio.to_thread(digest.update_all, group))
    hashing.add_done_callback(_retrieve)
    if sink is not None:
        await sink(group)
    await hashing


async def pump(digest: Digest, chunks: AsyncIterator[bytes], sink: Sink | None = None) -> None:
    """Feed ``chunks`` through ``digest`` (and ``sink``), one piece in flight while the next is read."""
    step: asyncio.Future | None = None
    try:
        async for group in batched(chunks, CHUNK):
            if step is not None:
                await step
            step = asyncio.ensure_future(_step(digest, group, sink))
        if step is not None:
            await step
    finally:
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step


class ObjectStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name

    @property
    def presigner(self) -> Presigner | None:
        """The backend, when clients can reach it with presigned URLs."""
        return self.backend if isinstance(self.backend, Presigner) else None

    # -- writes: always verified -------------------------------------------------------------------
    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Store exactly ``size`` bytes whose sha256 is ``oid``, or raise and store nothing."""
        verifier = Verifier(oid, size)
        pending: PendingWrite = await self.backend.begin(oid, size)
        try:
            await pump(verifier, chunks, pending.write)
            verifier.finish()
            await pending.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending.abort())
            raise

    async def check(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Raise unless ``chunks`` are exactly the object; store nothing."""
        verifier = Verifier(oid, size)
        await pump(verifier, chunks)
        verifier.finish()

    async def accept_staged(self, presigner: Presigner, oid: str, size: int, nonce: str) -> None:
        """Judge a direct upload and move it under its OID, or raise; the staging key goes either way."""
        staged = await presigner.head_staged(oid, nonce)
        try:
            if staged.size != size:
                raise IntegrityError(f"uploaded object has {staged.size} bytes, expected {size}")
            if staged.sha256 is not None:
                if staged.sha256 != oid:
                    raise IntegrityError("uploaded object's sha256 does not match its OID")
            else:  # the backend kept no checksum: hash the staged bytes before trusting them
                await self.check(oid, size, presigner.read_staged(staged))
            if await self.backend.stat(oid) is None:
                await presigner.promote(staged)
        finally:
            with contextlib.suppress(Exception):
                await presigner.drop_staged(staged)

    async def presign_download(self, presigner: Presigner, oid: str, ttl: float) -> Presigned:
        """A URL the client downloads the object from; a view that rebuilds objects (``xet.store``)
        first puts the bytes where the URL points."""
        return await presigner.presign_download(oid, ttl)

    async def rehash(self, oid: str, on_bytes: Callable[[int], None] = lambda n: None) -> tuple[str, int]:
        """(sha256, bytes read) of what the backend holds under ``oid``, streaming."""
        digest = Digest()

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in self.backend.read(oid):
                on_bytes(len(chunk))
                yield chunk

        await pump(digest, counted())
        return digest.hexdigest(), digest.received

    # -- everything else is the backend's ------------------------------------------------------------
    async def stat(self, oid: str) -> int | None:
        return await self.backend.stat(oid)

    def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        return self.backend.read(oid, start, end)

    def local_path(self, oid: str) -> Path | None:
        return self.backend.local_path(oid)

    def location(self, oid: str) -> str:
        return self.backend.location(oid)

    async def delete(self, oid: str) -> None:
        await self.backend.delete(oid)

    def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        return self.backend.list_objects()

    async def list_partial(self) -> list[Partial]:
        return await self.backend.list_partial()

    async def delete_partial(self, name: str) -> bool:
        return await self.backend.delete_partial(name)

    async def close(self) -> None:
        await self.backend.close()
