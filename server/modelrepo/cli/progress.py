"""Progress for the long operator commands, on a terminal only.

On a TTY a live line on stderr (spinner, what runs, seconds so far) is redrawn from a thread, so it
keeps turning while the command's own work holds the main thread or the event loop; step messages
print above it. Off a TTY (cron, systemd, a pipe) there is no live line: step messages are plain
stderr lines, exactly what the command printed before, and nothing else is added.
"""

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

FRAMES = "|/-\\"
INTERVAL = 0.1


class Status:
    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._frame = 0
        self._detail: Callable[[], str] = str

    def __enter__(self) -> "Status":
        if self.live:
            self._draw()  # at once: a short job shows its line too
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            with self._lock:
                self._write("\r\x1b[K")

    def say(self, message: str) -> None:
        """A step worth keeping on screen (and in a log when not on a TTY)."""
        with self._lock:
            if self.live:
                self._write("\r\x1b[K")
            self._write(message + "\n")
            if self.live and not self._stop.is_set():
                self._draw_locked()

    def measure(self, what: str, total: int) -> Callable[[int], None]:
        """A callback adding to a byte count shown as "what: done of total (n%)"."""
        from modelrepo.push.rules import human

        done = [0]

        def detail() -> str:
            share = f" ({100 * done[0] // total}%)" if total else ""
            return f"{what}: {human(done[0])} of {human(total)}{share}"

        def add(n: int) -> None:
            done[0] += n

        self._detail = detail
        return add

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            self._draw_locked()

    def _draw_locked(self) -> None:
        self._frame += 1
        elapsed = time.monotonic() - self._started
        detail = self._detail()
        self._write(f"\r\x1b[K{FRAMES[self._frame % len(FRAMES)]} {self.label}{', ' + detail if detail else ''}"
                    f" ({elapsed:.0f}s)")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
