"""Local disk store: DATA/lfs/objects/aa/bb/<oid>, temp files in DATA/lfs/tmp (same filesystem).

Writes go to a unique temp file, are hashed while written, fsynced, and renamed into place; the
directory is fsynced too, so a crash never leaves a partial object under its final name.
File I/O and hashing run in worker threads, one chunk behind the network read (pipelined).
"""

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from modelrepo.storage.base import Verifier, batched

CHUNK = 1024 * 1024


class LocalStore:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        self.objects.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, oid: str) -> Path:
        return self.objects / oid[0:2] / oid[2:4] / oid

    def local_path(self, oid: str) -> Path | None:
        return self.path(oid)

    async def stat(self, oid: str) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path(oid))).st_size
        except FileNotFoundError:
            return None

    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        verifier = Verifier(oid, size)
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix=f"{oid[:16]}.")
        f = os.fdopen(fd, "wb", buffering=0)

        def work(group: list[bytes]) -> None:
            for chunk in group:
                verifier.update(chunk)
                f.write(chunk)

        pending: asyncio.Future | None = None
        try:
            async for group in batched(chunks, CHUNK):
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(asyncio.to_thread(work, group))
            if pending is not None:
                await pending
                pending = None
            verifier.finish()
            await asyncio.to_thread(self._commit, f, tmp, self.path(oid))
        except BaseException:
            if pending is not None:
                # A thread cannot be cancelled: let it finish before the file goes away.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(pending)
            f.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def _commit(f, tmp: str, final: Path) -> None:
        os.fsync(f.fileno())
        f.close()
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        f = await asyncio.to_thread(open, self.path(oid), "rb")
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                n = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(f.read, n)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        """(oid, size, mtime) of every stored object, for gc and fsck."""
        def scan() -> list[tuple[str, int, float]]:
            out = []
            for path in self.objects.glob("??/??/*"):
                st = path.stat()
                out.append((path.name, st.st_size, st.st_mtime))
            return out

        for item in await asyncio.to_thread(scan):
            yield item

    async def list_temp(self) -> list[tuple[str, float]]:
        """(name, mtime) of upload temp files: in-flight uploads, or leftovers of a crash."""
        return await asyncio.to_thread(lambda: [(p.name, p.stat().st_mtime) for p in self.tmp.iterdir()])

    async def delete_temp(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.tmp / name)

    async def delete(self, oid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path(oid))

    async def close(self) -> None:
        return None
