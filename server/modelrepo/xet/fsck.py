"""Xet's part of ``modelrepo fsck``: every xorb is read back and verified as on upload (chunks
decompress, Merkle root = its hash, same chunk table as recorded), and every registered file's
terms name stored xorbs and chunks. That each file rebuilds to its sha256 is checked by fsck's
LFS pass, which re-hashes the LFS objects through the Xet-backed store view."""

import asyncio

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import xet_files, xet_xorbs
from modelrepo.errors import ModelrepoError
from modelrepo.storage.verified import ObjectStore
from modelrepo.xet import hashes, xorb
from modelrepo.xet.files import unpack_terms
from modelrepo.xet.xorb import XorbTable


async def check(catalog: Catalog, store: ObjectStore) -> tuple[int, int, list[str]]:
    """(xorbs verified, their bytes, problems)."""
    problems: list[str] = []
    verified = total = 0
    async with catalog.read() as conn:
        rows = (await conn.execute(sa.select(xet_xorbs.c.hash, xet_xorbs.c.object_oid, xet_xorbs.c.size,
                                             xet_xorbs.c.chunks, xet_xorbs.c.data_end))).all()
        files = (await conn.execute(sa.select(xet_files.c.hash, xet_files.c.terms))).all()
    counts = {r.hash: len(XorbTable.unpack(r.chunks, r.data_end).chunks) for r in rows}
    for row in rows:
        if await store.stat(row.object_oid) != row.size:
            problems.append(f"xorb {row.hash}: its object {row.object_oid} is missing or has the wrong size")
            continue
        data = b"".join([piece async for piece in store.read(row.object_oid)])
        try:
            table = await asyncio.to_thread(xorb.parse, data, hashes.from_hex(row.hash))
        except ModelrepoError as exc:
            problems.append(f"xorb {row.hash}: corrupt: {exc}")
            continue
        if table != XorbTable.unpack(row.chunks, row.data_end):
            problems.append(f"xorb {row.hash}: its chunks differ from the catalog's record")
            continue
        verified += 1
        total += row.size
    for f in files:
        for n, term in enumerate(unpack_terms(f.terms)):
            if term.xorb not in counts:
                problems.append(f"Xet file {f.hash}: term {n} names xorb {term.xorb}, which is not recorded")
            elif term.end > counts[term.xorb]:
                problems.append(f"Xet file {f.hash}: term {n} names chunks past the end of xorb {term.xorb}")
    return verified, total, problems
