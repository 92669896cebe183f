"""``modelrepo backup DEST`` and ``modelrepo restore SRC``: a consistent copy while pushes land.

**Why the copy is consistent.** Three facts about how the daemon writes:

1. git objects are immutable and a ref only ever names objects that are already stored (git
   migrates a push's quarantine into ``objects/`` before it moves the ref);
2. an LFS object is linked to a model (``lfs_links``) when its upload is verified, which is
   before the push whose pointer names it can pass pre-receive (rule 3 refuses pointers whose
   object the repository never received);
3. ``git gc`` prunes unreachable objects only after two weeks (and reflogs keep replaced tips
   reachable for longer), so an object a recorded ref needs stays in ``objects/`` for the whole
   backup, even if a repack moves it from loose to packed.

So the backup runs in this order:

1. **refs** of every repository are recorded (pygit2) before anything is copied;
2. the **catalog** is copied with SQLite's online backup API, in one step, i.e. one read
   transaction: a snapshot that is at least as new as the refs, so by (2) it holds the link and
   the ``lfs_objects`` row of every pointer those refs reach. A PostgreSQL catalog is dumped with
   ``pg_dump --format=custom`` (``catalog.pgdump``, see ``ops/pg_tools.py``) from a snapshot we
   export and hold, and the models and objects the next steps copy are read in that same
   snapshot: the same argument, the same consistency;
3. each repository's **objects** are copied (loose objects first, then packs, since a repack
   writes its new pack before deleting what it replaces), the recorded refs are written into the
   copy as ``packed-refs``, and ``git fsck --connectivity-only`` proves that every object the
   recorded refs reach is in the copy; when a repack raced the copy, the missing files are
   fetched again (up to ``COPY_ATTEMPTS`` times). HEAD, config and hooks are copied as they are;
   reflogs are not;
4. **LFS objects** named by the copied catalog are copied from the store into a local store in
   the backup (``DEST/lfs``, the layout of ``DATA/lfs``), through ``ObjectStore.put``, so each is
   verified on the way and a corrupt object is reported rather than silently preserved. With
   ``lfs.storage: s3`` they are not copied (the output says so): back the bucket up with S3
   versioning or replication;
5. a ``manifest.json`` records what was captured, and the temp directory beside DEST
   (``.DEST.partial-*``) is renamed to DEST: a half-made backup never has DEST's name.

The catalog is newer than the refs by the seconds between steps 1 and 2: its mirror of refs,
files and cards (``model_refs``, ``model_files``) may describe a push the repositories do not
have, so ``restore`` rebuilds that mirror from the restored repositories. A model created
between steps 1 and 2 is saved with an empty repository (how it was when the refs were recorded);
a model deleted in between is left out. Webhook deliveries still pending in the catalog are sent
again after a restore (receivers deduplicate on ``X-Modelrepo-Delivery``).

**Restore** copies into a temp directory beside the data directory (a PostgreSQL catalog:
``pg_restore`` into the configured database, which must be empty, in one transaction; dropped
again if verification fails), verifies it (the catalog opens and migrates; every model's repository exists, passes ``git fsck --connectivity-only`` and
has the recorded refs; LFS objects are present, by hash for local ones), rebuilds the catalog
mirror, and renames it into place. It refuses a data directory that exists and is not empty:
there is no ``--force``, so a restore can never destroy data; move the old directory aside first.
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pygit2
import sqlalchemy as sa

from modelrepo.catalog.schema import lfs_links, lfs_objects, models, namespaces, xet_files, xet_xorbs
from modelrepo.errors import ModelrepoError
from modelrepo.lfs.service import OID_RE
from modelrepo.push.rules import human
from modelrepo.git.repos import RepoStore, configure
from modelrepo.settings import Settings
from modelrepo.ops import OpsError, pg_tools
from modelrepo.git.ops import git_sync
from modelrepo.storage import open_store
from modelrepo.storage.local import LocalBackend, fsync_dir
from modelrepo.storage.verified import ObjectStore

FORMAT = 1
PG_DUMP = "catalog.pgdump"  # a PostgreSQL catalog, pg_dump --format=custom (SQLite: catalog.db)
KIND = "modelrepo-backup"
MANIFEST = "manifest.json"
COPY_ATTEMPTS = 3
SECRETS = ("secret.key", "admin.token")
REPO_FILES = ("HEAD", "config", "description")
PACK_EXTRAS = (".rev", ".bitmap", ".mtimes")  # copied with their pack; the .idx goes last

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class RepoSnapshot:
    rel: str  # "ns/name.git" under repos/
    refs: dict[str, str]  # ref name -> object id, recorded before anything was copied


@dataclass
class LfsCopy:
    count: int = 0
    bytes: int = 0
    warnings: list[str] = field(default_factory=list)


# -- backup -------------------------------------------------------------------------------------

def backup(settings: Settings, dest: Path, say: Say = _quiet) -> dict:
    """Write a complete backup at ``dest`` (which must not exist); return its manifest."""
    _check_source(settings)
    dest = dest.expanduser().resolve()
    if dest.is_relative_to(settings.data_dir):
        raise OpsError(f"{dest} is inside the data directory {settings.data_dir}: put backups on another disk")
    if dest.exists():
        raise OpsError(f"{dest} already exists: give a new path for the backup")
    if not dest.parent.is_dir():
        raise OpsError(f"{dest.parent} does not exist or is not a directory: create it first")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        manifest = _backup_into(settings, tmp, say)
        _write_json(tmp / MANIFEST, manifest)
        os.sync()  # every file on disk before the name says "complete"
        os.rename(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _is_pg(settings: Settings) -> bool:
    return settings.catalog_url.startswith("postgresql")


def _check_source(settings: Settings) -> None:
    if not _is_pg(settings) and not settings.catalog_path.is_file():
        raise OpsError(f"no catalog at {settings.catalog_path}: is {settings.data_dir} a modelrepo data directory?")


def _backup_into(settings: Settings, tmp: Path, say: Say) -> dict:
    """Steps 1 to 4, in the order the module docstring argues for."""
    started = time.time()
    snapshots = record_refs(settings.repos_dir)
    say(f"recorded the refs of {len(snapshots)} repositories")
    if _is_pg(settings):
        in_catalog, objects = pg_tools.dump_catalog(settings.catalog_url, tmp / PG_DUMP,
                                                   lambda conn: (catalog_repositories(conn), recorded_objects(conn)))
        say("copied the catalog (pg_dump, custom format)")
    else:
        backup_catalog(settings.catalog_path, tmp / "catalog.db")
        say("copied the catalog (SQLite online backup)")
        in_catalog, objects = _read_sqlite(tmp / "catalog.db", catalog_repositories), \
            _read_sqlite(tmp / "catalog.db", recorded_objects)
    warnings: list[str] = []
    kept = reconcile(snapshots, in_catalog, warnings)
    _copy_repositories(settings, tmp / "repos", kept, in_catalog, warnings)
    say(f"copied {len(in_catalog)} repositories")
    lfs = _copy_lfs(settings, tmp, objects, say)
    warnings += lfs.warnings
    _copy_secrets(settings.data_dir, tmp)
    return _manifest(settings, started, kept, in_catalog, lfs, warnings)


def _copy_repositories(settings: Settings, dst_root: Path, kept: list[RepoSnapshot], in_catalog: dict[str, str],
                       warnings: list[str]) -> None:
    """Every model of the catalog copy gets a repository: its snapshot, or an empty one."""
    for snap in kept:
        copy_repository(settings.repos_dir / snap.rel, dst_root / snap.rel, snap, in_catalog[snap.rel],
                        settings.git.binary, warnings)
    saved = {s.rel for s in kept}
    for rel, branch in sorted(in_catalog.items()):
        if rel not in saved:
            _empty_repository(dst_root / rel, branch)
            warnings.append(_missing_repo_note(settings.repos_dir / rel, rel))


def _copy_lfs(settings: Settings, tmp: Path, objects: list[sa.Row], say: Say) -> LfsCopy:
    if settings.lfs.storage != "local":
        say(f"LFS objects are in S3 (s3://{settings.lfs.s3.bucket}/{settings.lfs.s3.prefix}) and are NOT in "
            f"this backup: back the bucket up with S3 versioning or replication")
        return LfsCopy()
    lfs = asyncio.run(_copy_lfs_objects(settings, tmp / "lfs", objects))
    say(f"copied {lfs.count} LFS objects ({human(lfs.bytes)})")
    return lfs


async def _copy_lfs_objects(settings: Settings, dst_root: Path, objects: list[sa.Row]) -> LfsCopy:
    src, dst = open_store(settings), ObjectStore(LocalBackend(dst_root))
    try:
        return await copy_lfs_objects(src, dst, objects)
    finally:
        await src.close()
        with contextlib.suppress(OSError):
            (dst_root / "tmp").rmdir()  # a backup holds objects, not an upload area


def record_refs(repos_root: Path) -> list[RepoSnapshot]:
    """Step 1: the direct refs of every repository (HEAD is symbolic and copied as a file)."""
    out = []
    for path in RepoStore(repos_root).all_repositories():
        try:
            repo = pygit2.Repository(str(path))
            refs = {name: str(ref.target) for name in repo.references
                    if (ref := repo.references.get(name)) is not None
                    and ref.type == pygit2.enums.ReferenceType.DIRECT}
        except (pygit2.GitError, KeyError, OSError):
            continue  # deleted while we looked: reconcile() decides with the catalog
        out.append(RepoSnapshot(f"{path.parent.name}/{path.name}", refs))
    return out


def backup_catalog(src: Path, dst: Path) -> None:
    """Step 2: ``Connection.backup`` with pages=-1 copies the database in one step, i.e. under one
    read transaction: a consistent snapshot. In WAL mode the daemon's writers are not blocked.
    Plain sqlite3 (not Catalog.open) so the live catalog is never migrated or written."""
    source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            check = target.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise OpsError(f"the copied catalog fails SQLite's quick_check: {check}")
        finally:
            target.close()
    finally:
        source.close()


def catalog_repositories(conn: sa.Connection) -> dict[str, str]:
    """rel path ("ns/name.git", lower-cased like RepoStore.path) -> default branch, per model."""
    query = (sa.select(namespaces.c.name_key.label("ns"), models.c.name_key.label("name"), models.c.default_branch)
             .join(namespaces, namespaces.c.id == models.c.namespace_id))
    return {f"{r.ns}/{r.name}.git": r.default_branch for r in conn.execute(query)}


def reconcile(snapshots: list[RepoSnapshot], in_catalog: dict[str, str], warnings: list[str]) -> list[RepoSnapshot]:
    """Keep the repositories whose model the catalog copy has; a model deleted between steps 1
    and 2 is left out (its repository would belong to nothing after a restore)."""
    kept = []
    for snap in snapshots:
        if snap.rel in in_catalog:
            kept.append(snap)
        else:
            warnings.append(f"{snap.rel}: no model in the catalog (deleted during the backup?): not saved")
    return kept


def _missing_repo_note(src: Path, rel: str) -> str:
    if src.is_dir():
        return f"{rel}: created during the backup: saved as the empty repository it was when refs were recorded"
    return f"WARNING {rel}: the model has no repository in the data directory: saved as an empty one"


# -- step 3: repositories --------------------------------------------------------------------------

def copy_repository(src: Path, dst: Path, snap: RepoSnapshot, default_branch: str, git_binary: str,
                    warnings: list[str]) -> None:
    """Objects, then the recorded refs, then proof that the refs' objects are all there."""
    output = ""
    for _ in range(COPY_ATTEMPTS):
        if not src.is_dir():  # deleted after the catalog was copied
            shutil.rmtree(dst, ignore_errors=True)
            _empty_repository(dst, default_branch)
            warnings.append(f"{snap.rel}: deleted while the backup ran: saved as an empty repository")
            return
        _copy_repository_files(src, dst)
        copy_objects(src / "objects", dst / "objects")
        write_refs(dst, snap.refs)
        result = git_sync(git_binary, dst, "fsck", "--connectivity-only", "--no-dangling", "--no-progress")
        if result.ok:
            return
        output = result.output.strip()
    raise OpsError(f"repository {snap.rel}: objects its refs need are still missing from the copy after "
                   f"{COPY_ATTEMPTS} attempts (is the source damaged? run modelrepo fsck):\n{output[:2000]}")


def _copy_repository_files(src: Path, dst: Path) -> None:
    # A repository nobody pushed to has no object files: objects/ must exist all the same, or git
    # does not take the copy for a repository at all.
    (dst / "objects").mkdir(parents=True, exist_ok=True)
    (dst / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    (dst / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    if (src / "hooks").is_dir():
        shutil.copytree(src / "hooks", dst / "hooks", dirs_exist_ok=True)


def copy_objects(src: Path, dst: Path) -> None:
    """Loose objects, then packs. Files that vanish (moved into a pack by a repack) are skipped;
    files already copied are not copied again (objects never change). Commit-graphs and
    multi-pack indexes are caches git rebuilds: left out, so they cannot disagree with the copy."""
    for fan in sorted(src.glob("[0-9a-f][0-9a-f]")):
        for obj in _entries(fan):
            _copy_if_absent(obj, dst / fan.name / obj.name)
    for idx in sorted(_entries(src / "pack")):
        if idx.name.startswith("pack-") and idx.suffix == ".idx":
            _copy_pack(idx, dst / "pack")


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except FileNotFoundError:
        return []


def _copy_if_absent(src: Path, dst: Path) -> bool:
    if dst.exists():
        return True
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, dst)
    except FileNotFoundError:
        dst.unlink(missing_ok=True)
        return False
    return True


def _copy_pack(idx: Path, dst_dir: Path) -> None:
    """The .pack first and the .idx last: git uses a pack only once its index is there."""
    if (dst_dir / idx.name).exists():
        return
    base = idx.with_suffix("")
    parts = [base.with_suffix(".pack")] + [base.with_suffix(s) for s in PACK_EXTRAS if base.with_suffix(s).exists()]
    copied = []
    for part in [*parts, idx]:
        if not _copy_if_absent(part, dst_dir / part.name):
            for done in copied:  # the pack went away mid-copy (a repack replaced it)
                (dst_dir / done.name).unlink(missing_ok=True)
            return
        copied.append(part)


def write_refs(dst: Path, refs: dict[str, str]) -> None:
    """The recorded refs as the copy's only refs (``packed-refs``; no header, so git sorts)."""
    text = "".join(f"{oid} {name}\n" for name, oid in sorted(refs.items()))
    (dst / "packed-refs").write_text(text, encoding="utf-8")


def _empty_repository(dst: Path, default_branch: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    pygit2.init_repository(str(dst), bare=True, initial_head=f"refs/heads/{default_branch}")


# -- step 4: LFS objects ------------------------------------------------------------------------------

def recorded_objects(conn: sa.Connection) -> list[sa.Row]:
    """(oid, size, linked) of every object the catalog records: LFS objects and xorbs (stored
    under the sha256 of their bytes). An LFS object uploaded through Xet has no bytes of its own
    (it is rebuilt from its xorbs), so it counts as unlinked: copied if present, else skipped."""
    xet_backed = sa.exists().where(xet_files.c.sha256 == lfs_objects.c.oid)
    linked = sa.and_(sa.exists().where(lfs_links.c.oid == lfs_objects.c.oid), ~xet_backed)
    query = sa.union(sa.select(lfs_objects.c.oid, lfs_objects.c.size, linked.label("linked")),
                     sa.select(xet_xorbs.c.object_oid.label("oid"), xet_xorbs.c.size, sa.true().label("linked")))
    return list(conn.execute(query.order_by("oid")))


async def copy_verified(src: ObjectStore, dst: ObjectStore, oid: str, size: int) -> str | None:
    """Copy one object between stores, verified by ``dst.put`` on the way: None when the bytes
    are the OID, else what is wrong (nothing is left in ``dst``)."""
    stored = await src.stat(oid)
    if stored is None:
        return "is missing from the store"
    if stored != size:
        return f"has {stored} bytes, not {size}"
    try:
        await dst.put(oid, size, src.read(oid))
    except FileNotFoundError:  # gc removed it since the stat
        return "is missing from the store"
    except ModelrepoError as exc:
        return f"is corrupt ({exc.message})"
    return None


async def copy_lfs_objects(src: ObjectStore, dst: ObjectStore, objects: list[sa.Row]) -> LfsCopy:
    """Every object the catalog copy records. Unlinked ones that gc removed meanwhile are skipped
    silently; a linked one missing or corrupt is a warning (and is not copied)."""
    out = LfsCopy()
    for row in objects:
        problem = await copy_verified(src, dst, row.oid, row.size)
        if problem is None:
            out.count += 1
            out.bytes += row.size
        elif row.linked:
            out.warnings.append(f"WARNING LFS object {row.oid} {problem}: not saved (run modelrepo fsck)")
    return out


def _copy_secrets(src: Path, dst: Path) -> None:
    for name in SECRETS:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            os.chmod(dst / name, 0o600)


# -- manifest ----------------------------------------------------------------------------------------

def _version() -> str:
    try:
        return version("modelrepo")
    except PackageNotFoundError:
        return "unknown"


def _store_json(settings: Settings) -> dict:
    if settings.lfs.storage == "s3":
        s3 = settings.lfs.s3
        return {"kind": "s3", "bucket": s3.bucket, "prefix": s3.prefix, "endpoint_url": s3.endpoint_url}
    return {"kind": "local"}


def _manifest(settings: Settings, started: float, kept: list[RepoSnapshot], in_catalog: dict[str, str],
              lfs: LfsCopy, warnings: list[str]) -> dict:
    return {
        "kind": KIND, "format": FORMAT, "modelrepo_version": _version(),
        "created_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 3),
        "source": str(settings.data_dir),
        "store": _store_json(settings),
        "lfs_objects_included": settings.lfs.storage == "local",
        "catalog": "postgresql" if _is_pg(settings) else "sqlite",
        "counts": {"models": len(in_catalog), "repositories": len(in_catalog),
                   "refs": sum(len(s.refs) for s in kept), "lfs_objects": lfs.count, "lfs_bytes": lfs.bytes},
        "repositories": {s.rel: {"refs": s.refs} for s in sorted(kept, key=lambda s: s.rel)},
        "warnings": warnings,
    }


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_manifest(src: Path) -> dict:
    path = src / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OpsError(f"{src} has no {MANIFEST}: not a complete modelrepo backup") from None
    except (OSError, ValueError) as exc:
        raise OpsError(f"{path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise OpsError(f"{path} is not a modelrepo backup manifest")
    if manifest.get("format") != FORMAT:
        raise OpsError(f"{path}: backup format {manifest.get('format')!r}, this modelrepo reads format {FORMAT}")
    return manifest


def _read_sqlite(db: Path, fn: Callable[[sa.Connection], Any]) -> Any:
    """``fn(connection)`` on an SQLite catalog file (a backup's copy, a restored one)."""
    engine = sa.create_engine(f"sqlite:///{db}", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return fn(conn)
    finally:
        engine.dispose()


# -- restore --------------------------------------------------------------------------------------------

@dataclass
class RestoreReport:
    data_dir: Path
    models: int = 0
    refs: int = 0
    lfs_objects: int = 0
    lfs_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def restore(settings: Settings, src: Path, say: Say = _quiet) -> RestoreReport:
    """Copy, verify, rebuild the catalog mirror, then rename into the (empty) data directory."""
    src = src.expanduser().resolve()
    manifest = read_manifest(src)
    _check_store(manifest, settings)
    _check_catalog_kind(manifest, settings)
    data = settings.data_dir
    _check_empty(data)
    if _is_pg(settings):
        pg_tools.check_empty(settings.catalog_url)
    data.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{data.name}.restore-", dir=data.parent))
    restored_pg = False
    try:
        if _is_pg(settings):
            restored_pg = True
            pg_tools.restore_catalog(settings.catalog_url, src / PG_DUMP)
            say("restored the catalog (pg_restore, one transaction)")
        report = _restore_into(settings, src, manifest, tmp, say)
        os.sync()
        if data.exists():
            data.rmdir()  # empty, checked above
        os.rename(tmp, data)
        fsync_dir(data.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if restored_pg:  # it was empty before (checked): empty again, so the restore can be retried
            pg_tools.drop_catalog(settings.catalog_url)
        raise
    report.data_dir = data
    return report


def _check_empty(data: Path) -> None:
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        raise OpsError(f"data directory {data} is not empty: restore never overwrites anything. Stop the daemon, "
                       f"move it aside (mv {data} {data}.old) and run restore again")


def _check_store(manifest: dict, settings: Settings) -> None:
    """A backup restores into the kind of store it was taken from (it cannot move objects between them)."""
    kind = manifest.get("store", {}).get("kind")
    if kind == "local" and settings.lfs.storage != "local":
        raise OpsError("this backup holds its LFS objects on local disk but lfs.storage is s3: "
                       "restore with lfs.storage: local")
    if kind == "s3" and settings.lfs.storage != "s3":
        store = manifest["store"]
        raise OpsError(f"this backup's LFS objects are in s3://{store.get('bucket')}/{store.get('prefix')}, not in "
                       f"the backup: configure lfs.storage: s3 with that bucket and prefix to restore it")


def _check_catalog_kind(manifest: dict, settings: Settings) -> None:
    """A backup restores into the kind of catalog it was taken from (``catalog migrate-to`` moves
    one afterwards); an SQLite catalog only at its default place in the data directory."""
    kind = manifest.get("catalog", "sqlite")
    if kind == "postgresql" and not _is_pg(settings):
        raise OpsError("this backup's catalog is a PostgreSQL dump: set catalog.url to an empty PostgreSQL "
                       "database to restore it")
    if kind == "sqlite" and _is_pg(settings):
        raise OpsError("this backup's catalog is an SQLite file but catalog.url is PostgreSQL: restore with the "
                       "default catalog, then move it with modelrepo catalog migrate-to")
    if kind == "sqlite" and settings.catalog.url and settings.catalog_path != settings.data_dir / "catalog.db":
        raise OpsError("restore puts the SQLite catalog at DATA/catalog.db: unset catalog.url to restore")


def _restore_into(settings: Settings, src: Path, manifest: dict, tmp: Path, say: Say) -> RestoreReport:
    if not _is_pg(settings):
        shutil.copyfile(src / "catalog.db", tmp / "catalog.db")
    _copy_secrets(src, tmp)
    if (src / "repos").is_dir():
        shutil.copytree(src / "repos", tmp / "repos", symlinks=False)
    (tmp / "repos").mkdir(exist_ok=True)
    say("copied the catalog and repositories")
    report = RestoreReport(data_dir=settings.data_dir)
    if manifest.get("lfs_objects_included"):
        copied = asyncio.run(restore_lfs_objects(ObjectStore(LocalBackend(src / "lfs", create=False)),
                                                 ObjectStore(LocalBackend(tmp / "lfs")), report))
        say(f"copied {copied} LFS objects")
    staged = dataclasses.replace(settings, data_dir=tmp)
    verify_restored(staged, manifest, report)
    say(f"verified {report.models} models and {report.refs} refs")
    return report


async def restore_lfs_objects(src: ObjectStore, dst: ObjectStore, report: RestoreReport) -> int:
    """Re-hashed on the way in (``dst.put``): a restore never installs bytes that are not their OID."""
    async for oid, size, _ in src.list_objects():
        problem = (await copy_verified(src, dst, oid, size) if OID_RE.match(oid)
                   else "is not named by a sha256")
        if problem:
            report.warnings.append(f"LFS object {oid} in the backup {problem}: not restored")
        else:
            report.lfs_objects += 1
            report.lfs_bytes += size
    return report.lfs_objects


# -- restore verification ------------------------------------------------------------------------------

def verify_restored(settings: Settings, manifest: dict, report: RestoreReport) -> None:
    """Fatal: a catalog that does not open, a model whose repository is missing, broken or lacks
    a recorded ref. Warnings: LFS objects the catalog records but the store lacks."""
    from modelrepo.catalog.db import migrate  # noqa: PLC0415 - alembic only when restoring

    try:
        migrate(settings.catalog_url)
    except Exception as exc:
        raise OpsError(f"the restored catalog does not open and migrate: {exc}") from exc
    problems: list[str] = []
    in_catalog = (pg_tools.read(settings.catalog_url, catalog_repositories) if _is_pg(settings)
                  else _read_sqlite(settings.catalog_path, catalog_repositories))
    for rel in sorted(in_catalog):
        problems += _verify_repository(settings, rel, manifest.get("repositories", {}).get(rel, {}).get("refs", {}),
                                       report)
    if problems:
        raise OpsError("the restored data does not verify:\n  " + "\n  ".join(problems))
    report.models = len(in_catalog)
    report.warnings += asyncio.run(_verify_and_rebuild(settings))


def _verify_repository(settings: Settings, rel: str, refs: dict[str, str], report: RestoreReport) -> list[str]:
    path = settings.repos_dir / rel
    if not path.is_dir():
        return [f"{rel}: the catalog has this model but the backup has no repository for it"]
    configure(path)  # our config and hooks, pointing at this installation's interpreter
    result = git_sync(settings.git.binary, path, "fsck", "--connectivity-only", "--no-dangling", "--no-progress")
    if not result.ok:
        return [f"{rel}: git fsck --connectivity-only failed: {result.output.strip()[:1000]}"]
    repo = pygit2.Repository(str(path))
    problems = []
    for name, oid in refs.items():
        ref = repo.references.get(name)
        if ref is None or str(ref.target) != oid:
            problems.append(f"{rel}: {name} should be {oid}, is {ref.target if ref else 'missing'}")
    report.refs += len(refs)
    return problems


async def _verify_and_rebuild(settings: Settings) -> list[str]:
    """Async part: LFS objects through the configured store, and the catalog mirror rebuilt from
    the repositories (it may be a few seconds newer than the refs the backup recorded)."""
    from modelrepo.catalog.db import Catalog  # noqa: PLC0415
    from modelrepo.xet.store import xet_view  # noqa: PLC0415

    catalog = Catalog.open(settings.catalog_url)
    store = xet_view(open_store(settings), catalog)  # objects uploaded through Xet are rebuilt
    try:
        warnings = await _missing_objects(catalog, store)
        await _rebuild_mirror(settings, catalog)
        return warnings
    finally:
        await store.close()
        await catalog.close()


async def _missing_objects(catalog, store) -> list[str]:
    from modelrepo.ops.fsck import list_stored, stat_all  # noqa: PLC0415

    objects = [o for o in await list_stored(catalog) if o.linked_by]
    sizes = await stat_all(store, {o.oid for o in objects})
    return [f"LFS object {o.oid} ({human(o.size)}, linked by {', '.join(o.linked_by)}) is not in the "
            f"{store.name} store" for o in objects if sizes.get(o.oid) != o.size]


async def _rebuild_mirror(settings: Settings, catalog) -> None:
    """The mirror of every model whose refs the restored catalog does not describe, rebuilt from
    its restored repository, without events (nothing happened: this is the past, restored)."""
    from modelrepo.accounts.service import Accounts  # noqa: PLC0415
    from modelrepo.models.service import Models  # noqa: PLC0415
    from modelrepo.ops.converge import converge_catalog  # noqa: PLC0415
    from modelrepo.push.effects import PushEffects  # noqa: PLC0415

    models_ = Models(catalog, Accounts(catalog), RepoStore(settings.repos_dir), settings.git.default_branch)
    effects = PushEffects(catalog, models_.path, lambda: None)
    base = settings.server.base_url()
    await converge_catalog(catalog, models_, effects, lambda name: f"{base}/{name}.git", announce=False)
