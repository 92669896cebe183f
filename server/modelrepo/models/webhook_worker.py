"""The webhook delivery worker: one background task owning one HTTP client session.

It claims due rows from the outbox, POSTs them signed, records every attempt, and schedules
retries with exponential backoff and jitter. A row is marked delivered only after a 2xx, so a
crash at any point means a retry with the same delivery id, never a lost event.

Every process (worker processes, replicas) runs a worker on the one catalog, so a row is claimed
before it is sent: in one transaction the due rows are locked (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so concurrent claimers each take different rows; SQLite's write lock serializes the
claim) and stamped with a claim id and a lease (``claimed_by``, ``lease_until``). Nobody else
takes a row while its lease runs; the lease outlives an attempt (``lease_seconds``), so it only
passes when the claimer died, and then another worker sends it again with the same delivery id.
The outcome is recorded only while the claim still holds: a claimer that outlived its lease
finds its row taken over and records nothing, so the log shows each attempt once.

Every connection goes through the SSRF guard (webhook_targets.py): names through its resolver,
literal addresses checked here before sending, redirects never followed (a 3xx is a failed attempt).
"""

import asyncio
import hashlib
import hmac
import ipaddress
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

import sqlalchemy as sa
import structlog

from modelrepo import __version__
from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import deliveries, delivery_attempts, webhooks
from modelrepo.metrics import Metrics
from modelrepo.models.webhook_targets import AllowList, TargetRefused, allow_list, parse_address, refusal
from modelrepo.settings import WebhookSettings

log = structlog.get_logger("modelrepo.webhooks")
BATCH = 16
LEASE_GRACE = 5.0  # seconds past twice the attempt timeout: the recording after the POST, a busy catalog


def lease_seconds(settings: WebhookSettings) -> float:
    """How long a claim keeps other workers off a row: longer than any attempt can take."""
    return 2 * settings.timeout + LEASE_GRACE


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempt: int, settings: WebhookSettings) -> float:
    delay = min(settings.backoff_base * 2 ** (attempt - 1), settings.backoff_max)
    return delay * random.uniform(0.5, 1.5)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that refuses a name when any address it resolves to is refused. aiohttp
    connects to exactly the addresses returned here, so there is no second lookup to rebind."""

    def __init__(self, allowed: Callable[[], AllowList]) -> None:
        self._allowed = allowed  # read per lookup: SIGHUP may change webhooks.allowed_hosts
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await self._inner.resolve(host, port, family)
        allowed = self._allowed()
        for info in infos:
            reason = refusal(host, ipaddress.ip_address(info["host"]), allowed)
            if reason:
                raise TargetRefused(reason)
        return infos

    async def close(self) -> None:
        await self._inner.close()


class WebhookWorker:
    def __init__(self, catalog: Catalog, settings: WebhookSettings, metrics: Metrics | None = None) -> None:
        self.catalog = catalog
        self.settings = settings  # replaced on SIGHUP (reload)
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        # Names this worker's claims (with a fresh suffix per claim) in the catalog and the logs.
        self.name = f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(3)}"

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        # The guard must judge every connection against the allow list of now: no DNS cache and no
        # kept-alive connections (either would outlive a SIGHUP that narrows webhooks.allowed_hosts),
        # and no proxy from the environment (it would hide the real destination).
        resolver = GuardedResolver(lambda: allow_list(self.settings.allowed_hosts))
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True)
        self._session = aiohttp.ClientSession(connector=connector,
                                              timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                                              headers={"User-Agent": f"modelrepo-webhooks/{__version__}"},
                                              trust_env=False)
        self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self) -> None:
        """Finish the deliveries in flight, then stop (pending rows stay for the next start)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while not self._stopping:
            # Clear before looking for work: a wake() that arrives while we work is kept.
            self._wake.clear()
            try:
                sent = await self.run_once()
            except Exception:  # keep the worker alive; the rows stay pending
                log.exception("webhook_worker_error")
                sent = 0
            if sent:
                continue
            timeout = await self._idle_time()
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            except TimeoutError:
                pass

    async def _idle_time(self) -> float:
        # A row another worker holds is due again when its lease ends, not before.
        due_at = sa.case((deliveries.c.lease_until > deliveries.c.next_attempt_at, deliveries.c.lease_until),
                         else_=deliveries.c.next_attempt_at)
        async with self.catalog.read() as conn:
            nxt, depth = (await conn.execute(
                sa.select(sa.func.min(due_at), sa.func.count())
                .where(deliveries.c.status == "pending"))).one()
        if self.metrics:
            self.metrics.queue.set(depth)
        if nxt is None:
            return 5.0
        return min(max(nxt - time.time(), 0.01), 5.0)

    async def run_once(self) -> int:
        rows = await self.claim()
        if not rows:
            return 0
        await asyncio.gather(*(self._attempt(r) for r in rows))
        return len(rows)

    async def claim(self, limit: int = BATCH) -> list[sa.Row]:
        """Take up to ``limit`` due rows nobody holds (or whose holder's lease has passed) and stamp
        them with a new claim: the rows to send, with ``claimed_by``/``lease_until`` as stamped."""
        now = time.time()
        claim = f"{self.name}/{secrets.token_hex(4)}"
        # Row locks decide between claimers (see Catalog.tx): no need to queue behind every writer.
        async with self.catalog.tx(exclusive=False) as conn:
            ids = (await conn.execute(
                sa.select(deliveries.c.id)
                .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now,
                       sa.or_(deliveries.c.lease_until.is_(None), deliveries.c.lease_until <= now))
                .order_by(deliveries.c.next_attempt_at).limit(limit)
                .with_for_update(skip_locked=True))).scalars().all()
            if not ids:
                return []
            await conn.execute(deliveries.update().where(deliveries.c.id.in_(ids)).values(
                claimed_by=claim, lease_until=now + lease_seconds(self.settings)))
            return list((await conn.execute(
                sa.select(deliveries, webhooks.c.url, webhooks.c.secret, webhooks.c.active)
                .join(webhooks, webhooks.c.id == deliveries.c.webhook_id)
                .where(deliveries.c.id.in_(ids)).order_by(deliveries.c.next_attempt_at))).all())

    def _refuse_literal_target(self, url: str) -> None:
        """aiohttp skips the resolver for a literal address, so it is checked here, against the
        allow list of now (the webhook may predate the guard or a reload that narrowed it)."""
        host = urlsplit(url).hostname or ""
        ip = parse_address(host)
        reason = ip and refusal(host, ip, allow_list(self.settings.allowed_hosts))
        if reason:
            raise TargetRefused(reason)

    async def _attempt(self, row: sa.Row) -> None:
        assert self._session is not None
        body = row.payload.encode()
        attempt = row.attempts + 1
        headers = {
            "Content-Type": "application/json",
            "X-Modelrepo-Event": row.event,
            "X-Modelrepo-Delivery": row.id,
            "X-Modelrepo-Attempt": str(attempt),
            "X-Modelrepo-Signature-256": signature(row.secret, body),
        }
        started = time.perf_counter()
        code: int | None = None
        error: str | None = None
        try:
            self._refuse_literal_target(row.url)
            async with self._session.post(row.url, data=body, headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=self.settings.timeout)) as resp:
                code = resp.status
                await resp.content.read(65536)  # the answer is not ours to keep: bounded, then dropped
                if not 200 <= code < 300:
                    error = f"HTTP {code}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
        duration = (time.perf_counter() - started) * 1000
        now = time.time()
        ok = error is None
        values: dict = {"attempts": attempt, "last_response_code": code, "last_error": error,
                        "claimed_by": None, "lease_until": None}
        if ok:
            values.update(status="delivered", delivered_at=now)
        elif attempt >= self.settings.max_attempts:
            values.update(status="failed")
        else:
            values.update(next_attempt_at=now + backoff(attempt, self.settings))
        async with self.catalog.tx(exclusive=False) as conn:  # one row, guarded by the claim
            held = await conn.execute(deliveries.update().where(
                deliveries.c.id == row.id, deliveries.c.claimed_by == row.claimed_by).values(**values))
            if held.rowcount:
                await conn.execute(delivery_attempts.insert().values(
                    delivery_id=row.id, attempt=attempt, at=now, response_code=code, duration_ms=duration,
                    error=error))
        if not held.rowcount:
            # The lease passed and another worker took the row over (or it was deleted): the
            # outcome is theirs to record.
            log.warning("webhook_claim_lost", delivery=row.id, webhook=row.webhook_id, claim=row.claimed_by,
                        attempt=attempt, response_code=code, error=error)
            return
        if self.metrics:
            self.metrics.deliveries.labels(values.get("status", "retry")).inc()
        log.info("webhook_delivery", delivery=row.id, webhook=row.webhook_id, event_name=row.event,
                 attempt=attempt, status=values.get("status", "retry"), response_code=code,
                 duration_ms=round(duration, 1), error=error)
