"""systemd notification protocol (sd_notify(3)) in a few lines of stdlib: READY, STOPPING, WATCHDOG.

A no-op outside systemd (no NOTIFY_SOCKET). With Type=notify the unit is 'active' only once we
listen, and with WatchdogSec systemd restarts a daemon whose event loop stopped turning.
"""

import asyncio
import os
import socket


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never wait for the listener (its queue may be full): a lost ping costs less than a
        # blocked event loop, and the watchdog is there to notice a loop that is blocked.
        sock.setblocking(False)
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half the WatchdogSec systemd asked for, or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog_loop(interval: float) -> None:
    """Pings from the event loop itself: if the loop is blocked, the pings stop and systemd acts."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
