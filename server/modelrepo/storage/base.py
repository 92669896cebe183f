"""The object store seam. Deliberately narrow: what the LFS service needs and nothing more.

Stores only ever receive validated OIDs (``lfs.oid.check_oid``), so an OID can be used as a path
part or object key as is. ``put`` verifies sha256 and size while streaming and makes the object
visible atomically, or not at all.
"""

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelrepo.errors import IntegrityError, InvalidInput


@dataclass(frozen=True)
class Presigned:
    href: str
    header: dict[str, str]


class ObjectStore(Protocol):
    name: str

    async def stat(self, oid: str) -> int | None:
        """Size of the stored object, or None if absent."""

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        """Store exactly ``size`` bytes whose sha256 is ``oid``, or raise and store nothing."""

    def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the object."""

    def local_path(self, oid: str) -> Path | None:
        """A file path for zero-copy serving, when the store is a local disk."""

    async def delete(self, oid: str) -> None: ...

    def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        """(oid, size, mtime) of every stored object."""

    async def list_temp(self) -> list[tuple[str, float]]:
        """(name, mtime) of partial uploads (temp files, staging keys, open multipart uploads)."""

    async def delete_temp(self, name: str) -> None: ...

    async def close(self) -> None: ...


class Verifier:
    """Running sha256 + byte count of an upload; ``finish`` raises if the bytes are not the OID."""

    def __init__(self, oid: str, size: int) -> None:
        self.oid = oid
        self.size = size
        self.received = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes | memoryview) -> None:
        """Runs in a worker thread: hashlib releases the GIL on large buffers."""
        self.received += len(chunk)
        if self.received > self.size:
            raise IntegrityError(f"body is larger than the declared size {self.size}")
        self._hash.update(chunk)

    def finish(self) -> None:
        if self.received < self.size:
            raise InvalidInput(f"body ended after {self.received} of {self.size} bytes")
        if self._hash.hexdigest() != self.oid:
            raise IntegrityError(f"sha256 of the body is {self._hash.hexdigest()}, not the OID {self.oid}")


async def rechunk(chunks: AsyncIterator[bytes], target: int) -> AsyncIterator[bytes]:
    """Coalesce small network reads into ``target``-sized buffers so per-chunk work (a thread
    hop, an S3 part) is paid per MiB, not per 64 KiB socket read."""
    buf = bytearray()
    async for chunk in chunks:
        if not buf and len(chunk) >= target:
            yield chunk
            continue
        buf += chunk
        if len(buf) >= target:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def fixed_chunks(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """Exactly ``size``-byte pieces, the last one shorter: S3 multipart parts must all be at
    least 5 MiB except the last."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


async def batched(chunks: AsyncIterator[bytes], target: int) -> AsyncIterator[list[bytes]]:
    """Group network reads into lists of about ``target`` bytes, without copying them: the
    worker thread hashes and writes each piece; joining them on the event loop would cost a copy
    of every byte on the one thread that also reads the sockets."""
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
