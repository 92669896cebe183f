"""Xet's part of ``modelrepo gc``: files nothing links, then xorbs no file needs.

A registered file lives while a repository links it (``xet_file_links``) or links its sha256 as
an LFS object (``lfs_links``: the LFS object is a view of the file's xorbs). A xorb lives while a
live file names it in a term; one no file names is kept through the grace period, which covers
an upload between its xorbs and its shard. Deleting follows LFS gc's discipline: under the
catalog's write lock, re-check, delete from the store, then the rows, so a shard registering a
file meanwhile either sees the xorb gone (and is refused) or keeps it (see ``Xet._register``).
"""

import asyncio
from dataclasses import dataclass, field

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import (
    lfs_links,
    lfs_objects,
    xet_dedup,
    xet_file_links,
    xet_files,
    xet_xorb_links,
    xet_xorbs,
)
from modelrepo.storage.verified import ObjectStore
from modelrepo.xet.files import unpack_terms

STORE_DELETE_TIMEOUT = 30.0


@dataclass
class XetGcResult:
    files: int = 0
    xorbs: int = 0
    xorb_bytes: int = 0
    kept_young: int = 0
    errors: list[str] = field(default_factory=list)


_DEAD_FILE = sa.and_(~sa.exists().where(xet_file_links.c.file_hash == xet_files.c.hash),
                     ~sa.exists().where(lfs_links.c.oid == xet_files.c.sha256))


async def sweep(catalog: Catalog, store: ObjectStore, cutoff: float, dry_run: bool) -> XetGcResult:
    result = XetGcResult()
    async with catalog.read() as conn:
        dead = (await conn.execute(sa.select(xet_files.c.hash).where(_DEAD_FILE, xet_files.c.created_at < cutoff)))
        dead_files = list(dead.scalars())
    if not dry_run and dead_files:
        async with catalog.tx() as conn:
            for h in dead_files:
                gone = await conn.execute(xet_files.delete().where(xet_files.c.hash == h, _DEAD_FILE))
                result.files += gone.rowcount
    else:
        result.files = len(dead_files)
    async with catalog.read() as conn:
        live = _named(await conn.execute(sa.select(xet_files.c.terms).where(
            xet_files.c.hash.notin_(dead_files) if dry_run else sa.true())))
        candidates = (await conn.execute(sa.select(xet_xorbs.c.hash, xet_xorbs.c.object_oid, xet_xorbs.c.size,
                                                   xet_xorbs.c.created_at))).all()
    for row in candidates:
        if row.hash in live:
            continue
        if row.created_at >= cutoff:
            result.kept_young += 1
            continue
        if dry_run or await _delete_xorb(catalog, store, row.hash, row.object_oid, result):
            result.xorbs += 1
            result.xorb_bytes += row.size
    return result


def _named(rows) -> set[str]:
    return {t.xorb for r in rows for t in unpack_terms(r.terms)}


async def _delete_xorb(catalog: Catalog, store: ObjectStore, xorb_hash: str, oid: str, result: XetGcResult) -> bool:
    try:
        async with catalog.tx() as conn:
            # Re-check under the lock: a shard may have registered a file naming it since we listed.
            if xorb_hash in _named(await conn.execute(sa.select(xet_files.c.terms))):
                return False
            shared = (await conn.execute(sa.select(sa.func.count()).select_from(xet_xorbs)
                                         .where(xet_xorbs.c.object_oid == oid))).scalar_one() > 1
            shared |= (await conn.execute(sa.select(lfs_objects.c.oid).where(lfs_objects.c.oid == oid))).first() \
                is not None
            if not shared:  # the same bytes uploaded as an LFS object stay for LFS gc to judge
                await asyncio.wait_for(store.delete(oid), STORE_DELETE_TIMEOUT)
            await conn.execute(xet_dedup.delete().where(xet_dedup.c.xorb_hash == xorb_hash))
            await conn.execute(xet_xorb_links.delete().where(xet_xorb_links.c.xorb_hash == xorb_hash))
            await conn.execute(xet_xorbs.delete().where(xet_xorbs.c.hash == xorb_hash))
    except Exception as exc:  # noqa: BLE001 - one xorb's failure must not stop the sweep; it is reported
        result.errors.append(f"xorb {xorb_hash}: not deleted: {exc}")
        return False
    return True
