"""/readyz: can this process serve traffic right now? Catalog, data directory, object store."""

import asyncio
import os
import secrets
import shutil
import time

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.settings import Settings
from modelrepo.storage.verified import ObjectStore

CHECK_TIMEOUT = 3.0


async def _timed(coro) -> str | None:
    try:
        await asyncio.wait_for(coro, CHECK_TIMEOUT)
    except TimeoutError:
        return f"timed out after {CHECK_TIMEOUT:.0f} s"
    except Exception as exc:  # the point is to report, not to raise
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


async def _catalog(catalog: Catalog) -> None:
    async with catalog.read() as conn:
        await conn.execute(sa.text("SELECT 1"))


def _data_dir(settings: Settings) -> None:
    probe = settings.run_dir / f".readyz.{secrets.token_hex(4)}"
    with open(probe, "wb") as f:
        f.write(b"ok")
        os.fsync(f.fileno())
    probe.unlink()
    free = shutil.disk_usage(settings.data_dir).free
    if free < settings.server.min_free_space:
        raise RuntimeError(f"{free} bytes free, below server.min_free_space ({settings.server.min_free_space})")


async def check(settings: Settings, catalog: Catalog, store: ObjectStore) -> tuple[bool, dict]:
    started = time.perf_counter()
    results = {
        "catalog": await _timed(_catalog(catalog)),
        "data_dir": await _timed(asyncio.to_thread(_data_dir, settings)),
        # Any OID: absent is a fine answer, an error or a hang is not.
        "object_store": await _timed(store.stat("0" * 64)),
    }
    ok = all(v is None for v in results.values())
    return ok, {"status": "ready" if ok else "not ready",
                "checks": {k: "ok" if v is None else v for k, v in results.items()},
                "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
