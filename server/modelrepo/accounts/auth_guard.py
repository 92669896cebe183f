"""Brute-force guard: too many failed authentications from one address get 429 for a while.

The failures are rows in the catalog, so every process and replica on one catalog spends one
budget per address: an attacker spreading guesses over N workers or N replicas behind a load
balancer gets the same ``max_failures`` per window as against one. A token has 256 random bits,
so the guard is about noise and credential stuffing, not about making guessing feasible; it costs
one indexed read per request that presents credentials and one write per failure, never a write
on success. Rows older than the window are pruned by each write, so the table holds at most one
window of failures (and at most ``max_failures`` per address: a blocked address is not counted).
"""

import time

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import auth_failures

MAX_ADDRESS = 64


class FailureLimiter:
    def __init__(self, catalog: Catalog, max_failures: int, window: float) -> None:
        self.catalog = catalog
        self.max_failures = max_failures
        self.window = window

    @staticmethod
    def _key(addr: str) -> str:
        return addr[:MAX_ADDRESS]

    async def retry_after(self, addr: str) -> float | None:
        """Seconds until ``addr`` may try again, or None if it is not blocked."""
        now = time.time()
        async with self.catalog.read() as conn:
            count, first = (await conn.execute(self._recent(addr, now))).one()
        if count < self.max_failures:
            return None
        return max(first + self.window - now, 1.0)

    async def record(self, addr: str) -> None:
        now = time.time()
        async with self.catalog.tx() as conn:
            await conn.execute(auth_failures.delete().where(auth_failures.c.at <= now - self.window))
            count, _ = (await conn.execute(self._recent(addr, now))).one()
            if count < self.max_failures:  # beyond the budget another row changes nothing
                await conn.execute(auth_failures.insert().values(address=self._key(addr), at=now))

    def _recent(self, addr: str, now: float) -> sa.Select:
        return (sa.select(sa.func.count(), sa.func.min(auth_failures.c.at))
                .where(auth_failures.c.address == self._key(addr), auth_failures.c.at > now - self.window))
