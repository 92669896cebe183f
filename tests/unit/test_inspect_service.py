"""Inspections over a real local store and a real catalog: once per object, in flight or stored."""

import asyncio
import hashlib
import pickle

import numpy as np
from safetensors.numpy import save

from modelrepo.catalog.db import Catalog
from modelrepo.inspect.refs import FileRef
from modelrepo.inspect.service import Inspections
from modelrepo.storage.local import LocalBackend
from modelrepo.storage.verified import ObjectStore


class CountingStore:
    def __init__(self, inner: ObjectStore) -> None:
        self.inner, self.reads = inner, 0

    async def stat(self, oid):
        return await self.inner.stat(oid)

    async def read(self, oid, start=0, end=None):
        self.reads += 1
        async for chunk in self.inner.read(oid, start, end):
            yield chunk


async def put(store: ObjectStore, data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()

    async def chunks():
        yield data

    await store.put(oid, len(data), chunks())
    return oid


async def test_one_inspection_per_object(tmp_path):
    local = ObjectStore(LocalBackend(tmp_path / "lfs"))
    store = CountingStore(local)
    catalog = Catalog.open(tmp_path / "catalog.db")
    inspections = Inspections(catalog, store)  # type: ignore[arg-type]
    try:
        weights = save({"w": np.zeros((8, 8), np.float32)})
        oid = await put(local, weights)
        inspections.schedule(oid, len(weights))  # as after an LFS verify
        first, second = await asyncio.gather(inspections.object(oid, len(weights), "a/model.safetensors"),
                                             inspections.object(oid, len(weights), "b/model.safetensors"))
        assert first == second and first["parameters"] == {"F32": 64}
        await inspections.drain()
        assert store.reads == 1  # one ranged read, for all three callers
        assert await inspections.object(oid, len(weights), "c.safetensors") == first and store.reads == 1
        assert await inspections.object(oid, len(weights), "c.safetensors", force=True) == first
        assert store.reads == 2

        # Protocol 0 has no magic: content alone says "other"; the name makes it a pickle.
        legacy = pickle.dumps({"lr": 0.1}, protocol=0)
        oid0 = await put(local, legacy)
        inspections.schedule(oid0, len(legacy))
        await inspections.drain()
        assert (await inspections.get([oid0]))[oid0]["kind"] == "other"
        assert await inspections.pending([FileRef("args.pkl", "0" * 40, oid0, len(legacy))]) != []
        assert (await inspections.object(oid0, len(legacy), "args.pkl"))["status"] == "safe"
        assert await inspections.pending([FileRef("args.pkl", "0" * 40, oid0, len(legacy))]) == []

        assert await inspections.object("f" * 64, 10, "missing.safetensors") is None
    finally:
        await inspections.drain()
        await catalog.close()


async def test_a_slow_catalog_read_never_reads_the_object_twice(tmp_path):
    """The CI flake: a caller's "no row yet" read outlived a whole inspection, found nothing in
    flight and read the object again. The catalog read is now inside the per-object task."""
    local = ObjectStore(LocalBackend(tmp_path / "lfs"))
    store = CountingStore(local)
    catalog = Catalog.open(tmp_path / "catalog.db")
    inspections = Inspections(catalog, store)  # type: ignore[arg-type]
    reads_of_rows, saved = 0, asyncio.Event()
    rows, save_row = inspections._rows, inspections._save

    async def saving(*args):
        await save_row(*args)
        saved.set()

    async def late_second_read(keys):
        """The second lookup reads before the inspection is saved and answers after it is."""
        nonlocal reads_of_rows
        reads_of_rows += 1
        mine = reads_of_rows
        found = await rows(keys)
        if mine == 2 and not found and not saved.is_set():
            await saved.wait()
            await asyncio.sleep(0.05)  # and after the in-flight task is gone
        return found

    inspections._rows, inspections._save = late_second_read, saving  # type: ignore[method-assign]
    try:
        weights = save({"w": np.ones((4, 4), np.float32)})
        oid = await put(local, weights)
        results = await asyncio.gather(*(inspections.object(oid, len(weights), f"{i}/model.safetensors")
                                         for i in range(3)))
        assert results[0] == results[1] == results[2] and results[0]["parameters"] == {"F32": 16}
        assert store.reads == 1
    finally:
        await inspections.drain()
        await catalog.close()
