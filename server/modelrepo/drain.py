"""Graceful shutdown that really lets in-flight requests finish.

aiohttp's own runner shutdown marks every connection closing, and from then on its protocol drops
incoming bytes, including the rest of a request body still being uploaded: a push in flight at
SIGTERM would be cut short. So we stop listening first, wait for our in-flight counter to reach
zero (bounded), and only then hand over to ``runner.cleanup()``.
"""

import asyncio
import time


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True if everything finished within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._idle.wait(), remaining)
            except TimeoutError:
                return False
        return True
