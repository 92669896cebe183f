"""``modelrepo fsck [NS/NAME]``: is every byte we would serve the byte that was verified?

Three checks, all read-only, safe while the daemon runs:

(a) **LFS objects**: every object the catalog records (``lfs_objects``; with NS/NAME, those the
    model links) is read back from the store and re-hashed, streaming (hashing in a worker thread,
    a few objects at a time for S3 latency). Unlinked ones are hashed too: an upload of their OID
    would link the stored bytes without rewriting them. Objects in the store the catalog never
    recorded are left to gc: nothing serves them.
(b) **git fsck** of each repository (or the one), *full*, not ``--connectivity-only``: weights
    live in LFS so a model repository's git data is small, and only a full fsck re-hashes blobs
    and pack checksums, which is where bit rot shows. ``--no-dangling``: unreachable objects are
    gc's business, not damage. A failure is re-run once before it is reported, because a repack
    finishing during the first run (``git gc``, receive-pack's auto gc) can pull a pack away.
(c) **LFS pointers**: every pointer in the tree of every branch and tag tip must name an object
    the model links (``lfs_links``) and the store holds at the pointer's size; otherwise a clone
    of that ref fails. Trees already walked under another ref are skipped by OID and pointer blobs
    are parsed once, so many similar refs cost little more than one. History behind the tips is
    not walked: a push is judged on its tips too.

Models without a repository and repositories without a model are reported as well, and so is
(d) a **catalog out of step** with a repository: recorded branch/tag tips or default-branch tip
that are not the refs (a crash between a ref update and its catalog rebuild; ``ops.converge``).
A drift is compared again after ``SETTLE`` seconds before it is reported, since next to a live
daemon it may be a push whose post-receive is running. ``--repair`` rebuilds those models' mirror.
Push quarantine directories left by crashes (gc removes them) are noted, not counted as problems.
Objects uploaded through Xet are LFS objects rebuilt from their xorbs (the store callers hold is
the Xet-backed view, ``xet.store``), so (a) re-hashes them too; the xorbs themselves are verified
by ``xet/fsck.py``.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pygit2
import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import lfs_links, lfs_objects, models, namespaces
from modelrepo.lfs.pointer import POINTER_MAX, LfsPointer, parse_pointer
from modelrepo.push.rules import human
from modelrepo.git.repos import RepoStore
from modelrepo.models.service import Models
from modelrepo.ops.converge import Drift, converge_catalog, find_drift
from modelrepo.ops.gc import LEFTOVER_MIN_AGE, stale_quarantines
from modelrepo.push.effects import PushEffects
from modelrepo.storage.verified import ObjectStore
from modelrepo.git.ops import git
from modelrepo.xet import fsck as xet_fsck

HASH_CONCURRENCY = 4
STAT_CONCURRENCY = 16
MAX_LOCATIONS = 3  # pointer locations named per object problem
MAX_GIT_LINES = 20
SETTLE = 1.0  # seconds a drift must persist to be reported (a post-receive finishing)


@dataclass(frozen=True)
class ModelRef:
    id: int
    full_name: str  # as displayed: Namespace/Name
    path: Path


@dataclass(frozen=True)
class PointerUse:
    """One place an LFS pointer was found: the first ref and path it was seen at."""

    model: ModelRef
    ref: str
    path: str
    oid: str
    size: int

    @property
    def where(self) -> str:
        return f"{self.model.full_name} {self.ref}:{self.path}"


@dataclass(frozen=True)
class StoredObject:
    oid: str
    size: int
    linked_by: tuple[str, ...]


@dataclass
class FsckReport:
    problems: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    repositories: int = 0
    refs: int = 0
    pointers: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"{self.objects} LFS object(s) ({human(self.bytes)}) re-hashed, {self.repositories} "
                f"repositor{'y' if self.repositories == 1 else 'ies'} checked by git fsck, "
                f"{self.pointers} LFS pointer(s) on {self.refs} ref(s)")

    def lines(self) -> list[str]:
        if self.ok:
            return [f"fsck: clean: {self.summary()}", *self.notes]
        out = [f"fsck: {len(self.problems)} problem(s) ({self.summary()}):"]
        for problem in self.problems:
            first, *rest = problem.splitlines()
            out.append(f"  - {first}")
            out += [f"      {line}" for line in rest]
        return out + self.notes


# -- what to check ------------------------------------------------------------------------------

async def list_models(catalog: Catalog, repos: RepoStore, only: int | None = None) -> list[ModelRef]:
    query = (sa.select(models.c.id, models.c.name, namespaces.c.name.label("ns"))
             .join(namespaces, namespaces.c.id == models.c.namespace_id).order_by(models.c.id))
    if only is not None:
        query = query.where(models.c.id == only)
    async with catalog.read() as conn:
        rows = (await conn.execute(query)).all()
    return [ModelRef(r.id, f"{r.ns}/{r.name}", repos.path(r.ns, r.name)) for r in rows]


async def list_stored(catalog: Catalog, only: int | None = None) -> list[StoredObject]:
    """Recorded objects (all, or those model ``only`` links) and the models linking each."""
    linkers = (sa.select(lfs_links.c.oid, (namespaces.c.name + "/" + models.c.name).label("model"))
               .join(models, models.c.id == lfs_links.c.model_id)
               .join(namespaces, namespaces.c.id == models.c.namespace_id))
    query = sa.select(lfs_objects.c.oid, lfs_objects.c.size).order_by(lfs_objects.c.oid)
    if only is not None:
        query = query.where(sa.exists().where(lfs_links.c.oid == lfs_objects.c.oid, lfs_links.c.model_id == only))
    async with catalog.read() as conn:
        rows = (await conn.execute(query)).all()
        names: dict[str, list[str]] = {}
        for r in (await conn.execute(linkers)).all():
            names.setdefault(r.oid, []).append(r.model)
    return [StoredObject(r.oid, r.size, tuple(sorted(names.get(r.oid, ())))) for r in rows]


async def linked_oids(catalog: Catalog, model_id: int) -> set[str]:
    async with catalog.read() as conn:
        return set((await conn.execute(sa.select(lfs_links.c.oid).where(lfs_links.c.model_id == model_id))).scalars())


# -- (c) pointers at ref tips ------------------------------------------------------------------------

@dataclass
class PointerScan:
    refs: int = 0
    uses: list[PointerUse] = field(default_factory=list)  # the first use of each LFS OID
    unreadable: list[str] = field(default_factory=list)  # refs whose tree could not be read


def scan_pointers(model: ModelRef) -> PointerScan:
    """LFS pointers at the tips of all branches and tags. Synchronous pygit2: run it in a thread.
    A damaged repository is reported ref by ref (git fsck then says what is damaged)."""
    repo = pygit2.Repository(str(model.path))
    seen_trees: set[pygit2.Oid] = set()
    pointer_of: dict[pygit2.Oid, LfsPointer | None] = {}
    uses: dict[str, PointerUse] = {}
    scan = PointerScan()
    refs = sorted(name for name in repo.references if name.startswith(("refs/heads/", "refs/tags/")))
    scan.refs = len(refs)
    for name in refs:
        try:
            tree = repo.references[name].peel(pygit2.Commit).tree
        except (KeyError, ValueError, pygit2.InvalidSpecError):
            continue  # a tag of a blob or tree: no files to check
        except pygit2.GitError as exc:
            scan.unreadable.append(f"{model.full_name} {name}: cannot be read ({exc}); see git fsck")
            continue
        try:
            for path, entry_id in _new_blobs(repo, tree, seen_trees):
                if entry_id not in pointer_of:
                    pointer_of[entry_id] = _pointer(repo, entry_id)
                pointer = pointer_of[entry_id]
                if pointer is not None and pointer.oid not in uses:
                    uses[pointer.oid] = PointerUse(model, name, path, pointer.oid, pointer.size)
        except pygit2.GitError as exc:
            scan.unreadable.append(f"{model.full_name} {name}: its files cannot all be read ({exc}); see git fsck")
    scan.uses = list(uses.values())
    return scan


def _new_blobs(repo: pygit2.Repository, root: pygit2.Tree, seen: set):
    """(path, blob id) of every blob under trees not walked before."""
    stack: list[tuple[str, pygit2.Tree]] = [("", root)]
    while stack:
        prefix, tree = stack.pop()
        if tree.id in seen:
            continue
        seen.add(tree.id)
        for entry in tree:
            if entry.type_str == "tree":
                stack.append((f"{prefix}{entry.name}/", repo[entry.id]))
            elif entry.type_str == "blob":
                yield f"{prefix}{entry.name}", entry.id


def _pointer(repo: pygit2.Repository, blob_id: pygit2.Oid) -> LfsPointer | None:
    _, size = repo.odb.read_header(blob_id)
    return parse_pointer(repo[blob_id].data) if size < POINTER_MAX else None


# -- (a) LFS objects ------------------------------------------------------------------------------

async def stat_all(store: ObjectStore, oids: set[str]) -> dict[str, int | None]:
    sem = asyncio.Semaphore(STAT_CONCURRENCY)

    async def one(oid: str) -> tuple[str, int | None]:
        async with sem:
            return oid, await store.stat(oid)

    return dict(await asyncio.gather(*(one(oid) for oid in sorted(oids))))


async def hash_all(store: ObjectStore, objects: list[StoredObject],
                   on_bytes: Callable[[int], None]) -> dict[str, tuple[str, int] | str]:
    """oid -> (sha256, bytes read), or an error message when the object could not be read."""
    sem = asyncio.Semaphore(HASH_CONCURRENCY)

    async def one(obj: StoredObject) -> tuple[str, tuple[str, int] | str]:
        async with sem:
            try:
                return obj.oid, await store.rehash(obj.oid, on_bytes)
            except Exception as exc:  # noqa: BLE001 - a read error is a finding, not a crash of fsck
                return obj.oid, f"{type(exc).__name__}: {exc}"

    return dict(await asyncio.gather(*(one(o) for o in objects)))


def _locations(oid: str, uses: dict[str, list[PointerUse]]) -> str:
    found = uses.get(oid, [])
    if not found:
        return "no branch or tag tip points at it"
    names = ", ".join(u.where for u in found[:MAX_LOCATIONS])
    more = len(found) - MAX_LOCATIONS
    return f"used at {names}" + (f" and {more} more" if more > 0 else "")


def object_problems(objects: list[StoredObject], sizes: dict[str, int | None],
                    hashes: dict[str, tuple[str, int] | str], uses: dict[str, list[PointerUse]],
                    store_name: str, location: Callable[[str], str]) -> tuple[list[str], list[str]]:
    """(problems, notes) about recorded objects: missing, wrong size, unreadable, corrupt."""
    problems, notes = [], []
    leftovers = 0
    for obj in objects:
        linked = f"linked by {', '.join(obj.linked_by)}" if obj.linked_by else "linked by no model"
        where = f"{linked}; {_locations(obj.oid, uses)}"
        stored = sizes.get(obj.oid)
        if stored is None:
            if not obj.linked_by:
                leftovers += 1  # a gc interrupted between store delete and row delete
                continue
            problems.append(f"missing LFS object {obj.oid} ({human(obj.size)}): not in the {store_name} store; "
                            f"{where}\nfix: put it back at {location(obj.oid)} from a backup or an older "
                            f"version of the store; the catalog still vouches for it, "
                            f"so clients will not upload it again")
        elif stored != obj.size:
            problems.append(f"LFS object {obj.oid} has {stored} bytes in the store, the catalog recorded "
                            f"{obj.size}; {where}\nfix: replace it from a backup")
        elif isinstance(hashes.get(obj.oid), str):
            problems.append(f"LFS object {obj.oid} could not be read: {hashes[obj.oid]}; {where}")
        elif obj.oid in hashes and hashes[obj.oid][0] != obj.oid:
            problems.append(f"corrupt LFS object {obj.oid} ({human(obj.size)}): its bytes hash to "
                            f"{hashes[obj.oid][0]}; {where}\nfix: replace it from a backup, or delete it from "
                            f"the store and upload it again (git lfs push --object-id REMOTE {obj.oid})")
    if leftovers:
        notes.append(f"note: {leftovers} unlinked catalog row(s) without an object (an interrupted gc); "
                     f"the next gc removes them")
    return problems, notes


def pointer_problems(uses: list[PointerUse], linked: dict[int, set[str]], sizes: dict[str, int | None],
                     recorded: dict[str, int]) -> list[str]:
    """Pointers whose model may not read the object, or whose object is gone or of another size.
    (A missing object that the catalog records is already reported with its locations.)"""
    problems = []
    for use in uses:
        stored = sizes.get(use.oid)
        if use.oid not in linked.get(use.model.id, set()):
            problems.append(f"{use.where}: LFS object {use.oid} ({human(use.size)}) was never received by "
                            f"{use.model.full_name} (no link), so a clone of {use.ref} cannot download it\n"
                            f"fix: git lfs push --object-id REMOTE {use.oid} from a clone that has it")
        elif stored is None and use.oid not in recorded:
            problems.append(f"{use.where}: LFS object {use.oid} is linked but neither recorded nor stored")
        elif stored is not None and stored != use.size:
            problems.append(f"{use.where}: the pointer says {use.size} bytes but the stored object "
                            f"{use.oid} has {stored}")
    return problems


# -- (b) git fsck -----------------------------------------------------------------------------------

async def git_fsck(binary: str, model: ModelRef) -> str | None:
    """A problem text, or None when git fsck passes (one re-run before giving up, see above)."""
    result = None
    for _ in range(2):
        result = await git(binary, model.path, "fsck", "--no-progress", "--no-dangling")
        if result.ok:
            return None
    assert result is not None
    lines = result.output.strip().splitlines()
    shown = lines[:MAX_GIT_LINES] + ([f"... {len(lines) - MAX_GIT_LINES} more lines"]
                                     if len(lines) > MAX_GIT_LINES else [])
    return f"{model.full_name}: git fsck failed (exit {result.returncode}):\n" + "\n".join(shown)


def repository_problems(all_models: list[ModelRef], on_disk: list[Path]) -> list[str]:
    known = {m.path for m in all_models}
    problems = [f"{m.full_name}: its repository {m.path} is missing" for m in all_models if not m.path.is_dir()]
    problems += [f"repository {p} belongs to no model in the catalog" for p in on_disk if p.resolve() not in known]
    return problems


# -- the whole run ---------------------------------------------------------------------------------

Progress = Callable[[int], Callable[[int], None]]


def no_progress(total: int) -> Callable[[int], None]:
    return lambda n: None


async def run_fsck(catalog: Catalog, store: ObjectStore, repos: RepoStore, git_binary: str, *,
                   only: ModelRef | None = None, progress: Progress = no_progress,
                   models_: Models | None = None, repair: bool = False) -> FsckReport:
    """All checks over every model, or ``only`` one. ``progress(total_bytes)`` returns the
    per-chunk callback of the re-hash (a progress bar, or nothing). (d) needs ``models_``;
    ``repair`` rebuilds the mirror of the models that drifted."""
    report = FsckReport()
    scope = [only] if only else await list_models(catalog, repos)
    present = [m for m in scope if m.path.is_dir()]
    if only is None:
        report.problems += repository_problems(scope, await asyncio.to_thread(repos.all_repositories))
    elif not present:
        report.problems.append(f"{only.full_name}: its repository {only.path} is missing")
    if models_ is not None:
        await _check_mirror(models_, only, repair, report)
    report.notes += await asyncio.to_thread(quarantine_notes, present)
    # (c)'s scan first: the pointer locations make (a)'s findings readable.
    uses = await _scan_all(present, report)
    await _check_objects(catalog, store, only, uses, progress, report)
    if only is None:
        xorbs, xorb_bytes, problems = await xet_fsck.check(catalog, store)
        report.problems += problems
        report.notes.append(f"{xorbs} Xet xorb(s) ({human(xorb_bytes)}) verified")
    # (b) last: the slowest, and independent of the rest.
    for model in present:
        if problem := await git_fsck(git_binary, model):
            report.problems.append(problem)
    report.repositories = len(present)
    return report


async def _scan_all(present: list[ModelRef], report: FsckReport) -> list[PointerUse]:
    uses: list[PointerUse] = []
    for model in present:
        scan = await asyncio.to_thread(scan_pointers, model)
        report.refs += scan.refs
        report.problems += scan.unreadable
        uses += scan.uses
    report.pointers = len(uses)
    return uses


async def _check_objects(catalog: Catalog, store: ObjectStore, only: ModelRef | None, uses: list[PointerUse],
                         progress: Progress, report: FsckReport) -> None:
    """(a) re-hash what the catalog records, then (c) judge each pointer against links and store."""
    by_oid: dict[str, list[PointerUse]] = {}
    for use in uses:
        by_oid.setdefault(use.oid, []).append(use)
    objects = await list_stored(catalog, only.id if only else None)
    sizes = await stat_all(store, {o.oid for o in objects} | set(by_oid))
    readable = [o for o in objects if sizes.get(o.oid) == o.size]
    hashes = await hash_all(store, readable, progress(sum(o.size for o in readable)))
    report.objects, report.bytes = len(readable), sum(o.size for o in readable)
    problems, notes = object_problems(objects, sizes, hashes, by_oid, store.name, store.location)
    report.problems += problems
    report.notes += notes
    linked = {model_id: await linked_oids(catalog, model_id) for model_id in {u.model.id for u in uses}}
    report.problems += pointer_problems(uses, linked, sizes, {o.oid: o.size for o in objects})


# -- (d) the catalog's mirror of the repositories ---------------------------------------------------

async def settled_drift(models_: Models, only: ModelRef | None) -> list[Drift]:
    """Drift that is still there ``SETTLE`` seconds later, with what it looks like then."""
    first = await find_drift(models_.catalog, models_, only.id if only else None)
    if not first:
        return []
    await asyncio.sleep(SETTLE)
    again = {d.model_id: d for d in await find_drift(models_.catalog, models_, only.id if only else None)}
    return [again[d.model_id] for d in first if d.model_id in again]


async def _check_mirror(models_: Models, only: ModelRef | None, repair: bool, report: FsckReport) -> None:
    drifts = await settled_drift(models_, only)
    if not repair or not drifts:
        report.problems += [d.describe() for d in drifts]
        return
    effects = PushEffects(models_.catalog, models_.path, lambda: None)
    for drift in drifts:  # no events: see ops.converge on why a repair next to a live daemon is quiet
        await converge_catalog(models_.catalog, models_, effects, lambda name: "", announce=False,
                               only=drift.model_id)
    left = {d.model_id for d in await find_drift(models_.catalog, models_, only.id if only else None)}
    for drift in drifts:
        if drift.model_id in left:
            report.problems.append(drift.describe() + " (repair did not converge: is a push looping?)")
        else:
            report.notes.append(f"repaired: {drift.describe()}")


def quarantine_notes(present: list[ModelRef]) -> list[str]:
    """Quarantine directories of pushes a crash interrupted (gc removes them)."""
    cutoff = time.time() - LEFTOVER_MIN_AGE
    notes = []
    for model in present:
        stale = stale_quarantines(model.path, cutoff)
        if stale:
            names = ", ".join(p.name for p in stale[:MAX_LOCATIONS]) + (" ..." if len(stale) > MAX_LOCATIONS else "")
            notes.append(f"note: {model.full_name}: {len(stale)} push quarantine director"
                         f"{'y' if len(stale) == 1 else 'ies'} left by interrupted pushes ({names}); gc removes "
                         f"{'it' if len(stale) == 1 else 'them'}")
    return notes
