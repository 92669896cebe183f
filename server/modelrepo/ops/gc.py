"""``modelrepo gc``: give back the space nothing can reach any more, never anything in use.

What goes, each only when older than the grace period (``--grace``, default 24h):

0. **Xet** (``xet/gc.py``): registered files no repository links, then xorbs no live file names.
1. **Unlinked LFS objects**: ``lfs_objects`` rows no ``lfs_links`` row points at (their models
   were deleted). A repository links an OID as soon as its upload is verified, *before* the git
   push that references it lands, so an object uploaded but not yet pushed is linked and stays:
   deciding "unreferenced" from the git refs instead is the race Gitea's LFS GC lost.
2. **Orphaned store objects**: objects in the store the catalog never recorded (a crash between
   the store write and the catalog insert).
3. **Partial uploads**: local temp files, S3 staging keys of direct uploads never verified, and
   S3 multipart uploads never completed. These use ``max(grace, lfs.action_expiry)``: a staging
   key older than the action expiry can never be verified (its verify token has expired), and a
   local temp file is rewritten with every chunk, so one untouched for that long belongs to a
   dead upload. A local temp file a live upload holds (its ``flock``) is never removed, whatever
   its age. (An S3 multipart upload only records when it started: a proxy upload streaming for
   longer than that bound is the one thing a short ``--grace`` could cut; 24h cannot.)
   At start-up the daemon does more (``clear_abandoned_uploads``): no upload of its own is live
   yet, so every temp file nobody holds and every multipart upload goes at once.
4. **Repository leftovers**: ``repos/NS/.deleted.*`` and ``repos/NS/.NAME.git.*`` directories
   left by a crash during a model's deletion or creation, once ``max(grace, 1h)`` old: creating
   or deleting a model takes well under a second, so an hour-old one is a crash's.
5. **Push quarantines**: ``objects/tmp_objdir-incoming-*`` in a repository. receive-pack writes
   a push's objects there and moves them in (or drops them) once the hooks have spoken; a crash
   in between leaves the directory, which git never looks at again. Same age rule as 4, measured
   from the newest file inside (a slow push is still writing).

The grace is measured from when an object was first stored (``lfs_objects.created_at``), not
from when it lost its last link: the grace protects work in flight, it is not an undo window (a
deleted model's repository is gone at once anyway). ``--grace 0`` is for tests and emergencies.
A bucket prefix must belong to one modelrepo: the orphan sweep deletes what this catalog lacks.

And each repository is repacked (``git gc``) when it holds ``LOOSE_LIMIT`` loose objects or
``PACK_LIMIT`` packs. git's own ``gc --auto`` waits for 6,700 loose objects or 50 packs, limits
tuned for a developer's laptop; here every push under ``receive.unpackLimit`` (100 objects) lands
as loose objects that upload-pack inflates and delta-searches on every clone, while a single pack
with a bitmap serves clones by reuse. Weights live in LFS, so repacking a model repository's git
data is cheap and we do it early. ``git gc`` keeps git's default prune expiry (2 weeks), which is
what makes it safe next to pushes in flight and the Hub API's object writes.

**Ordering and the catalog lock.** An unlinked object is deleted inside one ``Catalog.tx()``
transaction: re-check that nothing links it, delete it from the store, delete its row, commit.
That transaction holds the catalog's whole-catalog write lock: SQLite's ``BEGIN IMMEDIATE``, or on
PostgreSQL the exclusive catalog advisory lock, which the LFS and Xet registrations' shared one
(``tx(exclusive=False)``) waits for, so it holds across every daemon sharing the catalog. Holding
it across the store delete means no link can be committed for that OID meanwhile, and the store
delete comes first so that the durable states are:

- crash after the store delete, before the commit: the row survives without its object. Nothing
  links it (we checked under the lock), an upload of that OID finds no stored bytes and writes
  them again (``Lfs.receive``), and the next gc deletes the row. Harmless.
- the reverse order would commit the row's deletion first; an upload arriving in between stores
  fresh bytes and links them, and our store delete then removes bytes a model links. Data loss.

An object without a row (orphan) is deleted under the same lock after re-checking that no row
appeared. One race stays open until ``Lfs.record`` checks, inside its own transaction, that the
object is still stored (see the report to the lead): an upload whose bytes were written (or found
already stored) just before gc deletes them links an object that is gone. A long grace makes it
need a re-upload of an object unlinked for a day, during the seconds gc touches that OID.
"""

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import lfs_links, lfs_objects, xet_xorbs
from modelrepo.lfs.service import OID_RE
from modelrepo.push.rules import human
from modelrepo.git.repos import RepoStore
from modelrepo.settings import Settings
from modelrepo.storage.verified import ObjectStore
from modelrepo.git.ops import git, parse_count_objects
from modelrepo.xet import gc as xet_gc

LOOSE_LIMIT = 100
PACK_LIMIT = 10
# How long one store delete may hold the catalog's write lock (the daemon's writers wait that long).
STORE_DELETE_TIMEOUT = 30.0
BATCH = 500  # OIDs per catalog lookup (SQLite's bound-parameter limit is higher, but not unbounded)
LEFTOVER_MIN_AGE = 3600.0


@dataclass
class Tally:
    count: int = 0
    bytes: int = 0

    def add(self, size: int = 0) -> None:
        self.count += 1
        self.bytes += size


@dataclass
class GcReport:
    dry_run: bool
    grace: float
    unlinked: Tally = field(default_factory=Tally)
    orphans: Tally = field(default_factory=Tally)
    partial: Tally = field(default_factory=Tally)
    leftovers: Tally = field(default_factory=Tally)
    quarantines: Tally = field(default_factory=Tally)
    repacked: Tally = field(default_factory=Tally)  # bytes: git object bytes freed
    xet_files: Tally = field(default_factory=Tally)  # registered files nothing links
    xet_xorbs: Tally = field(default_factory=Tally)  # xorbs no live file names
    repositories: int = 0
    kept_young: Tally = field(default_factory=Tally)  # unlinked, but inside the grace period
    errors: list[str] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return self.unlinked.bytes + self.orphans.bytes + self.repacked.bytes + self.xet_xorbs.bytes

    def lines(self) -> list[str]:
        verb = "would free" if self.dry_run else "freed"
        out = [f"gc{' (dry run)' if self.dry_run else ''}: {verb} {human(self.freed_bytes)}",
               f"  unlinked LFS objects    {self.unlinked.count:>6}  {human(self.unlinked.bytes)}",
               f"  orphaned store objects  {self.orphans.count:>6}  {human(self.orphans.bytes)}",
               f"  unlinked Xet files      {self.xet_files.count:>6}",
               f"  unreferenced xorbs      {self.xet_xorbs.count:>6}  {human(self.xet_xorbs.bytes)}",
               f"  partial uploads         {self.partial.count:>6}",
               f"  repository leftovers    {self.leftovers.count:>6}",
               f"  push quarantines        {self.quarantines.count:>6}",
               f"  repositories repacked   {self.repacked.count:>6}  "
               + ("" if self.dry_run else f"{human(self.repacked.bytes)}  ") + f"(of {self.repositories} checked)"]
        if self.kept_young.count:
            out.append(f"  kept {self.kept_young.count} unlinked object(s) ({human(self.kept_young.bytes)}) "
                       f"younger than the grace period ({_duration(self.grace)})")
        out += [f"  error: {e}" for e in self.errors]
        return out


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


async def collect_garbage(settings: Settings, catalog: Catalog, store: ObjectStore, repos: RepoStore, *,
                          grace: float, dry_run: bool) -> GcReport:
    """Every sweep, in an order where each sees the previous one's result."""
    report = GcReport(dry_run=dry_run, grace=grace)
    now = time.time()
    cutoff = now - grace
    await sweep_unlinked(catalog, store, cutoff, report)
    xet = await xet_gc.sweep(catalog, store, cutoff, dry_run)
    report.xet_files.count, report.xet_xorbs.count, report.xet_xorbs.bytes = xet.files, xet.xorbs, xet.xorb_bytes
    report.errors += xet.errors
    await sweep_orphans(catalog, store, cutoff, report)
    await sweep_partial(store, now - max(grace, settings.lfs.action_expiry), report)
    await asyncio.to_thread(sweep_leftover_dirs, repos.root, now - max(grace, LEFTOVER_MIN_AGE), report)
    repositories = await asyncio.to_thread(repos.all_repositories)
    await asyncio.to_thread(sweep_quarantines, repositories, now - max(grace, LEFTOVER_MIN_AGE), report)
    await maintain_repositories(settings.git.binary, repositories, report)
    return report


# -- LFS objects -----------------------------------------------------------------------------------

_UNLINKED = ~sa.exists().where(lfs_links.c.oid == lfs_objects.c.oid)


async def _unlinked_rows(catalog: Catalog) -> list[sa.Row]:
    async with catalog.read() as conn:
        return list((await conn.execute(
            sa.select(lfs_objects.c.oid, lfs_objects.c.size, lfs_objects.c.created_at).where(_UNLINKED))).all())


async def sweep_unlinked(catalog: Catalog, store: ObjectStore, cutoff: float, report: GcReport) -> None:
    for row in await _unlinked_rows(catalog):
        if row.created_at >= cutoff:
            report.kept_young.add(row.size)
        elif report.dry_run or await _delete_unlinked(catalog, store, row.oid, cutoff, report):
            report.unlinked.add(row.size)


async def _delete_unlinked(catalog: Catalog, store: ObjectStore, oid: str, cutoff: float,
                           report: GcReport) -> bool:
    """Store first, row second, under the write lock (see the module docstring for why)."""
    try:
        async with catalog.tx() as conn:
            still = (await conn.execute(sa.select(lfs_objects.c.oid).where(
                lfs_objects.c.oid == oid, lfs_objects.c.created_at < cutoff, _UNLINKED))).first()
            if still is None:  # linked again (re-uploaded) since we listed it
                return False
            if not await _is_xorb(conn, oid):  # the same bytes also hold a xorb: Xet's gc judges them
                await asyncio.wait_for(store.delete(oid), STORE_DELETE_TIMEOUT)
            await conn.execute(lfs_objects.delete().where(lfs_objects.c.oid == oid))
    except Exception as exc:  # noqa: BLE001 - one object's failure must not stop the sweep; it is reported
        report.errors.append(f"LFS object {oid}: not deleted: {exc}")
        return False
    return True


async def _batches(items: AsyncIterator[tuple[str, int, float]], size: int) -> AsyncIterator[list]:
    batch: list = []
    async for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _recorded(catalog: Catalog, oids: list[str]) -> set[str]:
    """Store keys the catalog knows: LFS objects, and xorbs (stored under their bytes' sha256)."""
    async with catalog.read() as conn:
        lfs = set((await conn.execute(sa.select(lfs_objects.c.oid).where(lfs_objects.c.oid.in_(oids)))).scalars())
        xorbs = set((await conn.execute(sa.select(xet_xorbs.c.object_oid).where(xet_xorbs.c.object_oid.in_(oids))))
                    .scalars())
    return lfs | xorbs


async def _is_xorb(conn, oid: str) -> bool:
    return (await conn.execute(sa.select(xet_xorbs.c.hash).where(xet_xorbs.c.object_oid == oid))).first() is not None


async def sweep_orphans(catalog: Catalog, store: ObjectStore, cutoff: float, report: GcReport) -> None:
    """Store objects with no catalog row, older than the grace period. Names that are not OIDs
    are left alone: gc deletes only what it understands."""
    async for batch in _batches(store.list_objects(), BATCH):
        old = [(oid, size) for oid, size, mtime in batch if mtime < cutoff and OID_RE.match(oid)]
        if not old:
            continue
        recorded = await _recorded(catalog, [oid for oid, _ in old])
        for oid, size in old:
            if oid in recorded:
                continue
            if report.dry_run or await _delete_orphan(catalog, store, oid, report):
                report.orphans.add(size)


async def _delete_orphan(catalog: Catalog, store: ObjectStore, oid: str, report: GcReport) -> bool:
    try:
        async with catalog.tx() as conn:
            if (await conn.execute(sa.select(lfs_objects.c.oid).where(lfs_objects.c.oid == oid))).first() \
                    or await _is_xorb(conn, oid):
                return False  # recorded since we listed it: an upload just finished
            await asyncio.wait_for(store.delete(oid), STORE_DELETE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - reported, and the sweep goes on
        report.errors.append(f"orphaned object {oid}: not deleted: {exc}")
        return False
    return True


async def sweep_partial(store: ObjectStore, cutoff: float, report: GcReport) -> None:
    for partial in await store.list_partial():
        if partial.held or partial.mtime >= cutoff:
            continue
        try:
            if not report.dry_run and not await store.delete_partial(partial.name):
                continue  # an upload took it up meanwhile
        except Exception as exc:  # noqa: BLE001 - reported, and the sweep goes on
            report.errors.append(f"partial upload {partial.name}: not deleted: {exc}")
            continue
        report.partial.add()


async def clear_abandoned_uploads(store: ObjectStore, action_expiry: float, *, shared: bool = False) -> int:
    """Start-up, before the daemon listens: partial uploads no live upload owns. A temp file
    nobody holds belongs to a process that died (its writer's flock says so, across hosts too). A
    staging key waits for its presigned URL to expire: the client may still be sending it, and the
    restarted daemon verifies it. A multipart upload carries no owner: with the embedded catalog one
    daemon serves the prefix and it has started none yet, so they all go; with a ``shared`` catalog
    (PostgreSQL: replicas on one bucket) another replica may be receiving it right now, so it is
    treated like a staging key and waits out ``action_expiry`` (gc takes it later otherwise).
    Returns how many were removed."""
    cutoff = time.time() - action_expiry
    removed = 0
    for partial in await store.list_partial():
        young = partial.mtime >= cutoff
        if partial.held or (young and (partial.kind == "staged" or (shared and partial.kind == "multipart"))):
            continue
        if await store.delete_partial(partial.name):
            removed += 1
    return removed


# -- repositories ------------------------------------------------------------------------------------

def sweep_leftover_dirs(root: Path, cutoff: float, report: GcReport) -> None:
    """Dot-directories beside the repositories are never served (``RepoStore.all_repositories``
    skips them): a crash left them while renaming a deleted model away or building a new one."""
    if not root.exists():
        return
    for path in root.glob("*/.*"):
        try:
            stale = path.is_dir() and path.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue  # renamed into place or removed while we looked
        if stale:
            _remove_dir(path, "leftover", report.leftovers, report)


def _remove_dir(path: Path, what: str, tally: Tally, report: GcReport) -> None:
    try:
        if not report.dry_run:
            shutil.rmtree(path)
    except OSError as exc:
        report.errors.append(f"{what} {path}: not removed: {exc}")
        return
    tally.add()


QUARANTINE_GLOB = "objects/tmp_objdir-incoming-*"


def _newest_mtime(path: Path) -> float:
    newest = path.stat().st_mtime
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(parent, name)).st_mtime)
    return newest


def stale_quarantines(repository: Path, cutoff: float) -> list[Path]:
    """Quarantine directories of pushes that ended long ago without git removing them."""
    out = []
    for path in sorted(repository.glob(QUARANTINE_GLOB)):
        with contextlib.suppress(FileNotFoundError):  # the push finished while we looked
            if path.is_dir() and _newest_mtime(path) < cutoff:
                out.append(path)
    return out


def sweep_quarantines(repositories: list[Path], cutoff: float, report: GcReport) -> None:
    for repository in repositories:
        for path in stale_quarantines(repository, cutoff):
            _remove_dir(path, "quarantine", report.quarantines, report)


@dataclass(frozen=True)
class ObjectCounts:
    loose: int
    packs: int
    kib: int  # loose + packed + garbage

    @property
    def needs_repack(self) -> bool:
        return self.loose >= LOOSE_LIMIT or self.packs >= PACK_LIMIT


async def count_objects(binary: str, path: Path) -> ObjectCounts:
    result = await git(binary, path, "count-objects", "-v")
    if not result.ok:
        raise RuntimeError(result.output.strip())
    c = parse_count_objects(result.output)
    return ObjectCounts(loose=c.get("count", 0), packs=c.get("packs", 0),
                        kib=c.get("size", 0) + c.get("size-pack", 0) + c.get("size-garbage", 0))


async def maintain_repositories(binary: str, paths: list[Path], report: GcReport) -> None:
    """One repository at a time: a repack is CPU-bound and the daemon is serving meanwhile."""
    report.repositories = len(paths)
    for path in paths:
        try:
            before = await count_objects(binary, path)
            if not before.needs_repack:
                continue
            if not report.dry_run:
                result = await git(binary, path, "gc", "--quiet")
                if not result.ok:
                    raise RuntimeError(f"git gc failed ({result.returncode}): {result.output.strip()[:500]}")
                after = await count_objects(binary, path)
                report.repacked.add(max(before.kib - after.kib, 0) * 1024)
            else:
                report.repacked.add()
        except (OSError, RuntimeError) as exc:
            report.errors.append(f"repository {_rel(path)}: {exc}")


def _rel(path: Path) -> str:
    return os.path.join(path.parent.name, path.name)
