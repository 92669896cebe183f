"""Start-up, before the daemon listens: heal what a crash of the previous process left behind.

- the catalog's mirror of repositories whose refs moved without the catalog following
  (``ops.converge``; the lost events are announced now);
- partial uploads no live upload owns (``ops.gc.clear_abandoned_uploads``).

Neither may keep the daemon from starting: a failure is logged and the daemon serves (``/readyz``
reports an unreachable store; fsck and gc do the rest by hand). The store sweep is bounded by
``STORE_SWEEP_TIMEOUT`` so an unreachable S3 delays start-up by that much at most.
"""

import asyncio
import time

import structlog

from modelrepo.ops.converge import converge_catalog
from modelrepo.ops.gc import clear_abandoned_uploads
from modelrepo.services import Services

log = structlog.get_logger("modelrepo.recovery")

STORE_SWEEP_TIMEOUT = 30.0


async def recover(services: Services) -> None:
    settings = services.settings
    models = services.models
    base = settings.server.base_url()
    started = time.perf_counter()
    try:
        drift = await converge_catalog(models.catalog, models, services.effects,
                                       lambda name: f"{base}/{name}.git", announce=True)
        if drift:
            log.warning("catalog_drift_repaired", models=[d.full_name for d in drift],
                        details=[d.describe() for d in drift])
    except Exception:  # noqa: BLE001 - logged; the daemon still starts
        log.exception("catalog_converge_failed")
    try:
        removed = await asyncio.wait_for(clear_abandoned_uploads(services.store, settings.lfs.action_expiry,
                                                                 shared=models.catalog.dialect != "sqlite"),
                                         STORE_SWEEP_TIMEOUT)
        if removed:
            log.info("partial_uploads_cleared", count=removed)
    except Exception:  # noqa: BLE001 - logged; the daemon still starts
        log.exception("partial_upload_sweep_failed")
    log.info("recovery_checked", duration_ms=round((time.perf_counter() - started) * 1000, 1))
