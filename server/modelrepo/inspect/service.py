"""Inspections as a service: run them (bounded, in a worker thread), store them once per object,
and answer which files of a tree hold what.

An LFS object is inspected in the background as soon as it is verified (``schedule``); whoever
needs the answer later — the push judge, the deploy gate, the API — awaits the same task or finds
the stored row, so an object is read once however many models link it.
"""

import asyncio
import json
import time
from collections.abc import Iterable

import sqlalchemy as sa
import structlog

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.portable import insert
from modelrepo.catalog.schema import inspections
from modelrepo.inspect.formats import VERSION, inspect_file, worth_inspecting
from modelrepo.inspect.reader import RangeReader, bytes_reader, store_fetcher
from modelrepo.inspect.refs import FileRef
from modelrepo.inspect.summary import model_fields
from modelrepo.storage.verified import ObjectStore

log = structlog.get_logger("modelrepo.inspect")
CONCURRENCY = 2  # inspections in flight at once: each is a thread and a few ranged reads


class Inspections:
    def __init__(self, catalog: Catalog, store: ObjectStore) -> None:
        self.catalog = catalog
        self.store = store
        self._inflight: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(CONCURRENCY)

    # -- running -----------------------------------------------------------------------------------
    def schedule(self, oid: str, size: int) -> None:
        """After an LFS object is verified: inspect it in the background (the upload's response
        does not wait). Content decides the format; a name is not known yet."""
        task = asyncio.ensure_future(self._quietly(oid, size))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, oid: str, size: int) -> None:
        try:
            await self.object(oid, size, "")
        except Exception:  # the store failed: whoever needs the answer later inspects again
            log.exception("background_inspection_failed", oid=oid)

    async def object(self, oid: str, size: int, path: str, *, force: bool = False) -> dict | None:
        """The inspection of an LFS object (stored, in flight, or run now); None when the store
        does not hold it."""
        return await self._ensure(oid, path, lambda: self._lfs_reader(oid, size), force)

    async def blob(self, blob_oid: str, data: bytes, path: str, *, force: bool = False) -> dict:
        """The inspection of a plain git blob (small by push rule, so it comes as bytes)."""
        found = await self._ensure(blob_oid, path, lambda: bytes_reader(data), force)
        assert found is not None
        return found

    async def _ensure(self, key: str, path: str, open_reader, force: bool = False) -> dict | None:
        """One lookup-or-inspection per key at a time. The catalog read is part of the task: were
        it outside, a caller could read "no row" just before a running inspection saved its row,
        find nothing in flight once it finished, and read the object a second time."""
        while (task := self._inflight.get(key)) is not None:
            await asyncio.wait([task])  # whatever it ended with; then look again
        task = asyncio.ensure_future(self._lookup_or_run(key, path, open_reader, force))
        self._inflight[key] = task
        task.add_done_callback(lambda t: self._inflight.pop(key) if self._inflight.get(key) is t else None)
        return await asyncio.shield(task)

    async def _lookup_or_run(self, key: str, path: str, open_reader, force: bool) -> dict | None:
        row = None if force else (await self._rows([key])).get(key)
        if row is not None and not stale(*row, path):
            return row[0]
        return await self._run(key, open_reader, path)

    async def _lfs_reader(self, oid: str, size: int) -> RangeReader | None:
        if await self.store.stat(oid) != size:
            return None
        return RangeReader(store_fetcher(self.store, oid, asyncio.get_running_loop()), size)

    async def _run(self, key: str, open_reader, path: str) -> dict | None:
        async with self._slots:
            reader = open_reader()
            if asyncio.iscoroutine(reader):
                reader = await reader
            if reader is None:
                return None
            started = time.perf_counter()
            try:
                result = (await asyncio.to_thread(inspect_file, reader, path)).to_json()
            except Exception as exc:
                # A store error (or a reader bug): flagged for this caller, stored nowhere, so the
                # file stays unscanned and the next push, deploy or backfill tries again.
                log.exception("inspection_failed", oid=key, path=path)
                return {"kind": "unknown", "status": "warning", "error": f"inspection failed: {exc}"}
            await self._save(key, result, reader.fetched)
            log.info("inspected", oid=key, path=path, kind=result["kind"], status=result.get("status"),
                     bytes_read=reader.fetched, duration_ms=round((time.perf_counter() - started) * 1000, 1))
            return result

    async def _save(self, key: str, result: dict, bytes_read: int) -> None:
        values = {"kind": result["kind"], "status": result.get("status"), "result": json.dumps(result),
                  "version": VERSION, "bytes_read": bytes_read, "inspected_at": time.time()}
        async with self.catalog.tx(exclusive=False) as conn:  # one upsert by OID (see Catalog.tx)
            await conn.execute(insert(conn, inspections).values(oid=key, **values)
                               .on_conflict_do_update(index_elements=["oid"], set_=values))

    async def drain(self) -> None:
        """Shut-down: let running inspections finish (their threads wait on this event loop)."""
        while self._inflight or self._background:
            await asyncio.gather(*self._inflight.values(), *self._background, return_exceptions=True)

    # -- reading -----------------------------------------------------------------------------------
    async def _rows(self, keys: Iterable[str]) -> dict[str, tuple[dict, int]]:
        """key -> (stored result, reader version)."""
        keys = sorted(set(keys))
        found: dict[str, tuple[dict, int]] = {}
        if not keys:
            return found
        async with self.catalog.read() as conn:
            for i in range(0, len(keys), 500):  # stay under SQLite's bound-parameter limit
                rows = await conn.execute(sa.select(inspections.c.oid, inspections.c.result, inspections.c.version)
                                          .where(inspections.c.oid.in_(keys[i:i + 500])))
                found.update({r.oid: (json.loads(r.result), r.version) for r in rows})
        return found

    async def get(self, keys: Iterable[str]) -> dict[str, dict]:
        return {key: result for key, (result, _version) in (await self._rows(keys)).items()}

    async def pending(self, files: Iterable[FileRef]) -> list[FileRef]:
        """The files worth inspecting whose inspection is missing or stale (the backfill's work)."""
        wanted = [f for f in files if worth_inspecting(f.path)]
        rows = await self._rows(f.key for f in wanted)
        return [f for f in wanted if f.key not in rows or stale(*rows[f.key], f.path)]

    async def for_files(self, files: Iterable[FileRef]) -> dict[str, dict]:
        """path -> stored inspection, for the files worth inspecting (missing: not yet scanned)."""
        wanted = [f for f in files if worth_inspecting(f.path)]
        rows = await self.get(f.key for f in wanted)
        return {f.path: rows[f.key] for f in wanted if f.key in rows}

    async def model_fields(self, files: list[dict]) -> dict:
        """safetensors, gguf and security of a model's default branch (``Models.files`` rows)."""
        refs = [FileRef(f["path"], f["blob_id"], f.get("lfs_oid"), f["size"]) for f in files]
        return model_fields(refs, await self.for_files(refs))


def stale(row: dict, version: int, path: str) -> bool:
    """Inspected before its name was known (kind other) but the name says it is worth a look —
    a protocol-0 pickle called model.pkl — or by an older reader."""
    return version < VERSION or (
        row.get("kind") == "other" and not row.get("named") and worth_inspecting(path))
