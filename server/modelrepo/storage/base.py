"""The backend seam: what a place that keeps LFS bytes must offer, and nothing about checking them.

Backends (``local.LocalBackend``, ``s3.S3Backend``) only move bytes: write to a temp place, commit
it under the OID or abort it, read, stat, list, delete. Whether the bytes *are* the OID is decided
once, for every backend, by ``verified.ObjectStore``, the only object the rest of the code holds.
So a new backend cannot forget the check, and the check cannot drift between backends.

Stores only ever receive validated OIDs (``lfs.service.check_oid``), so an OID can be used as a
path part or object key as is.

Presigning (clients talk to the backend directly) is a capability, not part of every backend: a
backend that has it also satisfies ``Presigner``, and ``ObjectStore.presigner`` says so.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Presigned:
    href: str
    header: dict[str, str]


@dataclass(frozen=True)
class Partial:
    """Bytes of an upload that never became an object: a temp file, an S3 multipart upload, or the
    staging key of a direct upload. ``held``: a live writer provably owns it (it holds the temp
    file's lock); a backend that cannot tell says False."""

    name: str
    mtime: float
    kind: str  # "temp" | "multipart" | "staged"
    held: bool = False


@dataclass(frozen=True)
class Staged:
    """A direct upload as the backend holds it, before anyone vouched for it."""

    oid: str
    nonce: str
    size: int
    etag: str
    sha256: str | None  # hex, when the backend recorded a checksum of the bytes; None: re-hash them


class PendingWrite(Protocol):
    """One upload in a temp place. ``write`` is called with consecutive pieces; ``commit`` makes
    the object visible under its OID atomically; ``abort`` removes every trace. Exactly one of
    commit/abort is called, and abort also after a failed or cancelled write or commit."""

    async def write(self, pieces: list[bytes]) -> None: ...

    async def commit(self) -> None: ...

    async def abort(self) -> None: ...


class Backend(Protocol):
    name: str

    async def begin(self, oid: str, size: int) -> PendingWrite:
        """Start an upload of ``size`` bytes to a temp place (nothing visible under ``oid``)."""

    async def stat(self, oid: str) -> int | None:
        """Size of the stored object, or None if absent."""

    def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the object."""

    def local_path(self, oid: str) -> Path | None:
        """A file path for zero-copy serving, when the backend is a local disk."""

    def location(self, oid: str) -> str:
        """Where the object lives, in words an operator can act on (a path, an S3 URL)."""

    async def delete(self, oid: str) -> None: ...

    def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        """(oid, size, mtime) of every stored object."""

    async def list_partial(self) -> list[Partial]: ...

    async def delete_partial(self, name: str) -> bool:
        """Remove a partial upload; False when a live writer holds it (nothing is removed)."""

    async def close(self) -> None: ...


@runtime_checkable
class Presigner(Protocol):
    """A backend clients can reach directly with presigned URLs (S3 in direct mode). Uploads go
    to a one-off staging key; ``ObjectStore.accept_staged`` checks it and ``promote`` moves it in."""

    def can_presign_upload(self, size: int) -> bool: ...

    async def presign_upload(self, oid: str, nonce: str, ttl: float) -> Presigned: ...

    async def presign_download(self, oid: str, ttl: float) -> Presigned: ...

    async def head_staged(self, oid: str, nonce: str) -> Staged:
        """The staged upload, or NotFound."""

    def read_staged(self, staged: Staged) -> AsyncIterator[bytes]:
        """Exactly the bytes ``staged`` describes (refused if they changed since)."""

    async def promote(self, staged: Staged) -> None:
        """Copy exactly the judged bytes under the OID's key."""

    async def drop_staged(self, staged: Staged) -> None: ...
