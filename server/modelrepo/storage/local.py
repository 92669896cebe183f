"""Local disk backend: DATA/lfs/objects/aa/bb/<oid>, uploads in DATA/lfs/tmp (same filesystem).

An upload is written to a unique temp file, fsynced, and renamed into place; the directory is
fsynced too, so a crash never leaves a partial object under its final name. File I/O runs in
worker threads.

The writer holds an exclusive ``flock`` on its temp file from creation to rename. The kernel drops
it when the process dies, so "no live upload owns this file" is a question the lock answers
exactly: the start-up sweep and gc remove only temp files nobody holds (``delete_partial`` takes
the lock before it unlinks). The writer checks, once it holds the lock, that its file is still the
one under the name, so a sweep that ran between ``mkstemp`` and ``flock`` costs a retry, not an
upload.
"""

import asyncio
import contextlib
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from modelrepo.storage.base import Partial

CHUNK = 1024 * 1024


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _create_held(directory: Path, prefix: str) -> tuple[int, Path]:
    """A new temp file, locked, and still the file under its name."""
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        fd, name = tempfile.mkstemp(dir=directory, prefix=prefix)
        path = Path(name)
        try:
            if _try_lock(fd):
                mine, there = os.fstat(fd), os.stat(path)
                if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                    return fd, path
        except FileNotFoundError:
            pass  # swept between mkstemp and flock: take another name
        os.close(fd)


class LocalWrite:
    def __init__(self, fd: int, path: Path, final: Path) -> None:
        self.fd = fd
        self.path = path
        self.final = final
        self._busy: asyncio.Future | None = None

    async def _in_thread(self, fn, *args) -> None:
        # Shielded: a thread cannot be cancelled, so abort() waits for it before closing the file.
        self._busy = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        await asyncio.shield(self._busy)

    async def write(self, pieces: list[bytes]) -> None:
        await self._in_thread(self._write, pieces)

    def _write(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            _write_all(self.fd, piece)

    async def commit(self) -> None:
        await self._in_thread(self._commit)

    def _commit(self) -> None:
        os.fsync(self.fd)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, self.final)  # still locked: no sweep can take it meanwhile
        os.close(self.fd)
        self.fd = -1
        fsync_dir(self.final.parent)

    async def abort(self) -> None:
        if self._busy is not None:
            with contextlib.suppress(BaseException):
                await self._busy
        await asyncio.to_thread(self._abort)

    def _abort(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1


class LocalBackend:
    name = "local"

    def __init__(self, root: Path, *, create: bool = True) -> None:
        """``create=False`` reads a tree without writing to it (a backup being restored)."""
        self.objects = root / "objects"
        self.tmp = root / "tmp"
        if create:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, oid: str) -> Path:
        return self.objects / oid[0:2] / oid[2:4] / oid

    def local_path(self, oid: str) -> Path | None:
        return self.path(oid)

    def location(self, oid: str) -> str:
        return str(self.path(oid))

    async def begin(self, oid: str, size: int) -> LocalWrite:
        made = asyncio.get_running_loop().run_in_executor(None, _create_held, self.tmp, f"{oid[:16]}.")
        try:
            fd, path = await asyncio.shield(made)
        except asyncio.CancelledError:
            # Cancelled (the client went away) while the thread made the file: it goes on and
            # makes it, held, and nobody else would ever remove it. Wait for it, then undo it.
            with contextlib.suppress(Exception):
                fd, path = await made
                await asyncio.to_thread(LocalWrite(fd, path, self.path(oid))._abort)
            raise
        return LocalWrite(fd, path, self.path(oid))

    async def stat(self, oid: str) -> int | None:
        try:
            return (await asyncio.to_thread(os.stat, self.path(oid))).st_size
        except FileNotFoundError:
            return None

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
        def scan() -> list[tuple[str, int, float]]:
            out = []
            for path in self.objects.glob("??/??/*"):
                with contextlib.suppress(FileNotFoundError):  # deleted while we looked
                    st = path.stat()
                    out.append((path.name, st.st_size, st.st_mtime))
            return out

        for item in await asyncio.to_thread(scan):
            yield item

    async def list_partial(self) -> list[Partial]:
        def scan() -> list[Partial]:
            out = []
            try:
                entries = list(self.tmp.iterdir())
            except FileNotFoundError:
                return []
            for path in entries:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except (FileNotFoundError, IsADirectoryError):
                    continue
                try:
                    held = not _try_lock(fd)
                    out.append(Partial(path.name, os.fstat(fd).st_mtime, "temp", held))
                finally:
                    os.close(fd)  # drops our probe lock
            return out

        return await asyncio.to_thread(scan)

    async def delete_partial(self, name: str) -> bool:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"not a temp file name: {name!r}")

        def remove() -> bool:
            try:
                fd = os.open(self.tmp / name, os.O_RDONLY)
            except FileNotFoundError:
                return True
            try:
                if not _try_lock(fd):
                    return False  # a live upload
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.tmp / name)
                return True
            finally:
                os.close(fd)

        return await asyncio.to_thread(remove)

    async def delete(self, oid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self.path(oid))

    async def close(self) -> None:
        return None
