"""Synchronous, seekable file objects over an object store's ranged reads.

The parsers (json, zipfile, the pickle opcode walk) are synchronous and run in a worker thread; the
object stores are async. ``RangeReader`` bridges the two: each miss fetches one bounded range on
the event loop (``run_coroutine_threadsafe``) and the thread waits for it. Seeking is free, so
skipping a tensor's bytes or a zip member costs nothing, and ``fetched`` counts every byte that
crossed from the store — what the bench reports.
"""

import asyncio
import io
from collections.abc import Callable

MIN_BLOCK = 64 * 1024
MAX_BLOCK = 1024 * 1024
FETCH_TIMEOUT = 120.0  # one ranged read; a store that hangs fails the inspection, not the thread forever
MAX_LINE = 1024 * 1024  # pickle protocol 0 lines (GLOBAL, INT, STRING …) longer than this are refused


class RangeReader(io.RawIOBase):
    """Read-only, seekable view of ``size`` bytes fetched as ranges by ``fetch(start, end)``.

    Sequential reads grow the read-ahead from 64 KiB to 1 MiB, so a pickle walk makes few round
    trips; a seek elsewhere starts small again, so header reads stay small."""

    def __init__(self, fetch: Callable[[int, int], bytes], size: int) -> None:
        super().__init__()
        self._fetch = fetch
        self.size = size
        self.pos = 0
        self.fetched = 0
        self._buf = b""
        self._buf_start = 0
        self._block = MIN_BLOCK

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        new = base + offset
        if new < 0:
            raise ValueError("negative seek position")
        self.pos = new
        return new

    def _fill(self, want: int) -> None:
        """Make the buffer cover [pos, pos + want) as far as the object goes."""
        buf_end = self._buf_start + len(self._buf)
        if self._buf_start <= self.pos and self.pos + want <= buf_end:
            return
        sequential = self.pos == buf_end and self._buf
        self._block = min(self._block * 2, MAX_BLOCK) if sequential else MIN_BLOCK
        start = self.pos
        end = min(self.size, start + max(want, self._block))
        if start >= end:
            self._buf, self._buf_start = b"", start
            return
        data = self._fetch(start, end)
        self.fetched += len(data)
        self._buf, self._buf_start = data, start

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self.size - self.pos
        n = max(0, min(n, self.size - self.pos))
        if n == 0:
            return b""
        self._fill(n)
        off = self.pos - self._buf_start
        out = self._buf[off:off + n]
        self.pos += len(out)
        return out

    def window(self, start: int, length: int) -> "RangeReader":
        """A reader over [start, start + length) of this one; its fetches count here too."""

        def fetch(s: int, e: int) -> bytes:
            data = self._fetch(start + s, start + e)
            self.fetched += len(data)
            return data

        return RangeReader(fetch, max(0, min(length, self.size - start)))

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, limit: int = -1) -> bytes:
        """Bounded: pickletools calls readline() with no limit, so a 4 GiB "line" must not be
        read into memory; past MAX_LINE the line comes back without its newline (a parse error)."""
        cap = MAX_LINE if limit is None or limit < 0 else min(limit, MAX_LINE)
        out = bytearray()
        while len(out) < cap and self.pos < self.size:
            chunk = self.read(min(4096, cap - len(out)))
            nl = chunk.find(b"\n")
            if nl >= 0:
                out += chunk[:nl + 1]
                self.pos -= len(chunk) - nl - 1
                break
            out += chunk
        return bytes(out)


def store_fetcher(store, oid: str, loop: asyncio.AbstractEventLoop) -> Callable[[int, int], bytes]:
    """fetch(start, end) for a worker thread: one ranged ``store.read`` run on the event loop."""

    async def collect(start: int, end: int) -> bytes:
        parts = [chunk async for chunk in store.read(oid, start, end)]
        return b"".join(parts)

    def fetch(start: int, end: int) -> bytes:
        return asyncio.run_coroutine_threadsafe(collect(start, end), loop).result(FETCH_TIMEOUT)

    return fetch


def bytes_reader(data: bytes) -> RangeReader:
    """The same reader over bytes in memory (plain git blobs, which are small by push rule)."""
    view = memoryview(data)
    return RangeReader(lambda start, end: bytes(view[start:end]), len(data))
