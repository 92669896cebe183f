"""Files registered through Xet, rebuilt from their xorbs: the catalog lookups and the streaming
reconstruction that both the CAS service and the LFS store view (``xet.store``) use."""

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import xet_files, xet_xorbs
from modelrepo.errors import StorageUnavailable
from modelrepo.storage.verified import ObjectStore
from modelrepo.xet import hashes
from modelrepo.xet.xorb import ChunkDecoder, XorbTable

_TERM = struct.Struct("<32sIII")  # xorb hash, first chunk, end chunk, unpacked bytes


@dataclass(frozen=True)
class Term:
    xorb: str  # string form
    start: int
    end: int
    unpacked: int


@dataclass(frozen=True)
class XetFile:
    hash: str
    sha256: str
    size: int
    terms: list[Term]


def pack_terms(terms: list[Term]) -> bytes:
    return b"".join(_TERM.pack(hashes.from_hex(t.xorb), t.start, t.end, t.unpacked) for t in terms)


def unpack_terms(blob: bytes) -> list[Term]:
    out = []
    for i in range(0, len(blob), _TERM.size):
        x, s, e, u = _TERM.unpack_from(blob, i)
        out.append(Term(hashes.to_hex(x), s, e, u))
    return out


class Files:
    def __init__(self, catalog: Catalog, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store  # the physical store: xorbs live here under the sha256 of their bytes

    async def by_sha256(self, sha256: str) -> XetFile | None:
        """A registered file with these bytes, if any (whichever repository registered it: callers
        have already checked the repository's LFS link)."""
        async with self.catalog.read() as conn:
            row = (await conn.execute(sa.select(xet_files).where(xet_files.c.sha256 == sha256).limit(1))).first()
        return None if row is None else XetFile(row.hash, row.sha256, row.size, unpack_terms(row.terms))

    async def xorb_tables(self, xorb_hexes: set[str]) -> dict[str, tuple[str, XorbTable]]:
        """(store OID, chunk table) of each stored xorb among ``xorb_hexes``."""
        found: dict[str, tuple[str, XorbTable]] = {}
        wanted = sorted(xorb_hexes)
        async with self.catalog.read() as conn:
            for i in range(0, len(wanted), 500):
                rows = await conn.execute(sa.select(xet_xorbs.c.hash, xet_xorbs.c.object_oid, xet_xorbs.c.chunks,
                                                    xet_xorbs.c.data_end)
                                          .where(xet_xorbs.c.hash.in_(wanted[i:i + 500])))
                for r in rows:
                    found[r.hash] = (r.object_oid, XorbTable.unpack(r.chunks, r.data_end))
        return found

    async def stream(self, terms: list[Term], start: int = 0, end: int | None = None,
                     tables: dict[str, tuple[str, XorbTable]] | None = None) -> AsyncIterator[bytes]:
        """Bytes [start, end) of the file the terms describe, read from the store one range at a
        time and decoded in a worker thread: memory holds one read buffer and its chunks. Only the
        chunks that overlap the range are read."""
        if tables is None:
            tables = await self.xorb_tables({t.xorb for t in terms})
        pos = 0
        for term in terms:
            if end is not None and pos >= end:
                return
            if pos + term.unpacked <= start:
                pos += term.unpacked
                continue
            if term.xorb not in tables:
                raise StorageUnavailable(f"xorb {term.xorb} is missing from the catalog")
            oid, table = tables[term.xorb]
            first, skip = term.start, 0
            while first < term.end and pos + table.chunks[first].length <= start:
                pos += table.chunks[first].length
                first += 1
            skip = max(start - pos, 0)
            last = first
            span = pos
            while last < term.end and (end is None or span < end):
                span += table.chunks[last].length
                last += 1
            lo, hi = table.byte_range(first, last)
            decoder = ChunkDecoder()
            count = 0
            async for piece in self.store.read(oid, lo, hi):
                for chunk in await asyncio.to_thread(decoder.feed, piece):
                    if len(chunk) != table.chunks[first + count].length:
                        raise StorageUnavailable(f"xorb {term.xorb} in the store does not match its catalog entry")
                    count += 1
                    lo_cut, hi_cut = skip, len(chunk)
                    if end is not None and pos + hi_cut > end:
                        hi_cut = end - pos
                    pos += len(chunk)
                    skip = 0
                    if lo_cut or hi_cut != len(chunk):
                        chunk = chunk[lo_cut:hi_cut]
                    if chunk:
                        yield chunk
            decoder.finish()
            if count != last - first:
                raise StorageUnavailable(f"xorb {term.xorb} in the store holds fewer chunks than its catalog entry")
            pos += sum(table.chunks[i].length for i in range(last, term.end))
