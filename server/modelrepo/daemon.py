"""The daemon's life: start (services, bootstrap admin, listen, tell systemd), reload on SIGHUP,
and stop on SIGTERM/SIGINT without cutting a request short (stop listening, drain, clean up).

``cli/serve.py`` is its only caller; it knows nothing of click, so a bad configuration on reload is
a ``ConfigError`` logged and ignored, not a command-line error.
"""

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import structlog
from aiohttp import web

from modelrepo import sdnotify
from modelrepo.accounts.service import Accounts
from modelrepo.app import create_app, make_runner
from modelrepo.keys import INFLIGHT, SERVICES
from modelrepo.log import configure_logging
from modelrepo.services import build_services
from modelrepo.settings import ConfigError, Settings

log = structlog.get_logger("modelrepo")


async def bootstrap(settings: Settings, accounts: Accounts) -> Path | None:
    """First start: an 'admin' user and its admin-scoped token, written 0600 to DATA/admin.token.
    Created once whichever replica starts first; only the creator writes the file (atomically)."""
    token = await accounts.bootstrap_admin("admin")
    if token is None:
        return None
    path = settings.admin_token_path
    fd, tmp = tempfile.mkstemp(dir=settings.data_dir, prefix=".admin.token.")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def reload(app: web.Application, load_settings: Callable[[], Settings]) -> None:
    """SIGHUP: log level and format, webhook delivery settings (quotas live in the catalog and are
    always current). Anything else needs a restart; a bad config is logged and ignored."""
    try:
        new = load_settings()
    except ConfigError as exc:
        log.error("reload_failed", error=str(exc))
        return
    configure_logging(new.log.level, new.log.format)
    services = app[SERVICES]
    services.worker.settings = new.webhooks
    services.webhooks.settings = new.webhooks
    log.warning("reloaded", log_level=new.log.level, webhooks=str(new.webhooks))


async def first_start(settings: Settings, accounts: Accounts) -> None:
    """The bootstrap admin, announced in the log and on stderr (where an operator sees it)."""
    token_path = await bootstrap(settings, accounts)
    if token_path:
        log.warning("bootstrap", admin_user="admin", admin_token_file=str(token_path.resolve()))
        print(f"modelrepo: created user 'admin'; its token is in {token_path.resolve()} (mode 0600)",
              file=sys.stderr, flush=True)


async def serve(settings: Settings, load_settings: Callable[[], Settings] | None = None, *,
                worker: int | None = None) -> None:
    """Run until SIGTERM or SIGINT. ``load_settings`` re-reads the configuration for SIGHUP.

    ``worker``: run as worker number ``worker`` of a supervisor (``supervisor.py``), which did the
    start-up work once for all workers and reserved the port: share it (SO_REUSEPORT), and tell
    the supervisor, through the NOTIFY_SOCKET it gave us, when we serve and that we are alive."""
    app = create_app(settings, build_services(settings), worker=worker)
    if worker is None:
        await first_start(settings, app[SERVICES].accounts)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_port=worker is not None)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else settings.server.listen
    port = bound[1] if isinstance(bound, tuple) else settings.server.port
    log.info("listening", url=f"http://{settings.server.host}:{port}", data_dir=str(settings.data_dir.resolve()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if load_settings is not None:
        loop.add_signal_handler(signal.SIGHUP, reload, app, load_settings)
    sdnotify.notify(f"READY=1\nSTATUS=listening on {settings.server.host}:{port}\nMAINPID={os.getpid()}")
    interval = sdnotify.watchdog_interval()
    watchdog = asyncio.create_task(sdnotify.watchdog_loop(interval)) if interval else None
    await stop.wait()
    sdnotify.notify("STOPPING=1\nSTATUS=draining")
    inflight = app[INFLIGHT]
    log.info("stopping", in_flight=inflight.count, drain_timeout=settings.server.shutdown_timeout)
    await site.stop()  # no new connections from here on
    if not await inflight.wait_idle(settings.server.shutdown_timeout):
        log.warning("drain_timeout", in_flight=inflight.count)
    await runner.cleanup()
    if watchdog is not None:
        watchdog.cancel()
    log.info("stopped")
