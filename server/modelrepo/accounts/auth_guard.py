"""Brute-force guard: too many failed authentications from one address get 429 for a while.

In memory, per daemon process: a token has 256 random bits, so the guard is about noise and
credential-stuffing, not about making guessing feasible; it must never cost a database write.
"""

import time
from collections import deque

MAX_TRACKED = 100_000


class FailureLimiter:
    def __init__(self, max_failures: int, window: float) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, addr: str, now: float) -> deque[float] | None:
        q = self._failures.get(addr)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._failures[addr]
            return None
        return q

    def retry_after(self, addr: str) -> float | None:
        """Seconds until ``addr`` may try again, or None if it is not blocked."""
        now = time.monotonic()
        q = self._recent(addr, now)
        if q is None or len(q) < self.max_failures:
            return None
        return max(q[0] + self.window - now, 1.0)

    def record(self, addr: str) -> None:
        now = time.monotonic()
        if len(self._failures) >= MAX_TRACKED:
            # Shed the stalest addresses rather than grow without bound under a spray.
            for key in list(self._failures)[: MAX_TRACKED // 10]:
                del self._failures[key]
        q = self._recent(addr, now) or self._failures.setdefault(addr, deque())
        q.append(now)
