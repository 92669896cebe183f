"""The HTTP application: the services (built by ``services.build_services``) wired into routes,
middlewares and start-up/clean-up hooks, plus the internal hook API on a unix socket.

Nothing here builds a service. To add routes, call your module's ``add_routes(app)`` next to the
others in ``create_app``; to run something at start-up, append to ``app.cleanup_ctx`` there.
"""

import asyncio
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from aiohttp import web

from modelrepo.drain import InFlight
from modelrepo.git import repos
from modelrepo.keys import (
    ACCOUNTS,
    CATALOG,
    DEPLOYMENTS,
    GIT,
    HUB,
    HOOK_SOCKET,
    HUB_COMMITS,
    INFLIGHT,
    INSPECTIONS,
    LFS,
    LIMITER,
    LOCKS,
    METRICS,
    MODELS,
    PUSHES,
    RECEIVE,
    REFS,
    SERVICES,
    SETTINGS,
    WEBHOOKS,
    WORKER,
    XET,
)
from modelrepo.ops import recovery
from modelrepo.services import Services, build_services
from modelrepo.settings import Settings
from modelrepo import ui
from modelrepo.web import api, git_http, hub_http, lfs_http, ops_http
from modelrepo.web.internal import create_internal_app
from modelrepo.web.middlewares import AccessLogger, ProtocolLog, authenticate, request_context
from modelrepo.xet import http as xet_http

log = structlog.get_logger("modelrepo.app")


def hook_socket(settings: Settings, worker: int | None = None, pid: int | None = None) -> Path:
    """Where a process serves the hook API: DATA/run/hooks.sock for the single daemon; one socket
    per worker process (named for its index and pid), so the hooks of a git spawned by a worker
    reach that worker, which holds the push's session."""
    if worker is None:
        return settings.run_dir / "hooks.sock"
    return settings.run_dir / f"hooks-{worker}-{pid or os.getpid()}.sock"


def create_app(settings: Settings, services: Services | None = None, *, worker: int | None = None) -> web.Application:
    """Build the public application over ``services`` (built from ``settings`` when not given;
    the daemon builds them itself). The app owns them from here: its clean-up closes them.

    ``worker``: this process is worker number ``worker`` of a supervisor (``supervisor.py``), which
    did the one-time start-up work (hooks, recovery) before starting it; None: the single daemon,
    which does that work itself."""
    services = services or build_services(settings)
    app = web.Application(middlewares=[request_context, authenticate],
                          client_max_size=settings.limits.max_json_body)
    app[SERVICES] = services
    app[SETTINGS] = settings
    app[METRICS] = services.metrics
    app[LIMITER] = services.limiter
    app[CATALOG] = services.catalog
    app[ACCOUNTS] = services.accounts
    app[WORKER] = services.worker
    app[WEBHOOKS] = services.webhooks
    app[MODELS] = services.models
    app[GIT] = services.git
    app[DEPLOYMENTS] = services.deployments
    app[REFS] = services.refs
    app[PUSHES] = services.pushes
    app[INFLIGHT] = InFlight()
    app[LFS] = services.lfs
    app[LOCKS] = services.locks
    app[RECEIVE] = services.receive
    app[HUB] = services.hub
    app[HUB_COMMITS] = services.hub_commits
    app[INSPECTIONS] = services.inspections
    app[XET] = services.xet
    app[HOOK_SOCKET] = hook_socket(settings, worker)

    api.add_routes(app)
    ops_http.add_routes(app)
    git_http.add_routes(app)
    lfs_http.add_routes(app)
    hub_http.add_routes(app)
    xet_http.add_routes(app)
    ui.add_routes(app)

    if worker is None:
        app.cleanup_ctx.append(_reinstall_hooks)
    app.cleanup_ctx.append(functools.partial(_internal_socket, remove=worker is not None))
    app.cleanup_ctx.append(_webhook_worker)
    if worker is None:
        app.on_startup.append(_recover)  # after the worker: the events it announces go out
    app.on_cleanup.append(_close_services)
    return app


async def _close_services(app: web.Application) -> None:
    await app[SERVICES].close()


async def _recover(app: web.Application) -> None:
    await recovery.recover(app[SERVICES])


async def reinstall_hooks(store: repos.RepoStore) -> None:
    """Hooks change with the package: bring every repository's copy up to date on start-up."""
    paths = await asyncio.to_thread(store.all_repositories)
    for path in paths:
        await asyncio.to_thread(repos.configure, path)
    if paths:
        log.info("hooks_checked", repositories=len(paths))


async def _reinstall_hooks(app: web.Application) -> AsyncIterator[None]:
    await reinstall_hooks(app[MODELS].store)
    yield


async def _internal_socket(app: web.Application, remove: bool = False) -> AsyncIterator[None]:
    """The hook API on its unix socket. ``remove``: unlink it on the way out (a worker's socket is
    named for its pid; the single daemon's fixed name may already belong to its successor)."""
    settings = app[SETTINGS]
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.run_dir, 0o700)
    path = app[HOOK_SOCKET]
    if path.exists() or path.is_symlink():
        path.unlink()
    runner = web.AppRunner(create_internal_app(app), access_log=None)
    await runner.setup()
    site = web.UnixSite(runner, str(path))
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()
        if remove:
            path.unlink(missing_ok=True)


async def _webhook_worker(app: web.Application) -> AsyncIterator[None]:
    """Deliveries pending from before a restart (or a crash) go out as soon as we start."""
    worker = app[WORKER]
    await worker.start()
    try:
        yield
    finally:
        await worker.stop()


def make_runner(app: web.Application) -> web.AppRunner:
    # A 1 MiB read buffer lets large bodies (pushes, LFS uploads) arrive in big reads instead of
    # 64 KiB ones, while still pausing the socket (back-pressure) when we fall behind.
    # aiohttp's keep-alive timer also closes a connection whose request head is still incomplete,
    # so it is the header-read timeout too (limits.header_timeout).
    limits = app[SETTINGS].limits
    return web.AppRunner(app, access_log_class=AccessLogger.for_app(app), logger=ProtocolLog(), read_bufsize=1024 * 1024,
                         shutdown_timeout=app[SETTINGS].server.shutdown_timeout,
                         keepalive_timeout=limits.header_timeout, max_headers=limits.max_headers,
                         max_line_size=limits.max_header_size, max_field_size=limits.max_header_size)
