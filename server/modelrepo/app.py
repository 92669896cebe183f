"""Application factory: one public app (HTTP) and its internal hook API (unix socket)."""

import asyncio
import os
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from modelrepo.catalog.db import Catalog
from modelrepo.drain import InFlight
from modelrepo.metrics import Metrics
from modelrepo.accounts.auth_guard import FailureLimiter
from modelrepo.keys import (
    ACCOUNTS,
    CATALOG,
    DEPLOYMENTS,
    GIT,
    HUB,
    HUB_COMMITS,
    INFLIGHT,
    LFS,
    LIMITER,
    METRICS,
    LOCKS,
    MODELS,
    PUSHES,
    RECEIVE,
    REFS,
    SETTINGS,
    WEBHOOKS,
    WORKER,
)
from modelrepo.git import repos
from modelrepo.accounts.service import Accounts
from modelrepo.lfs.action_tokens import ActionSigner, load_or_create_key
from modelrepo.models.deployments import Deployments
from modelrepo.git.runner import GitRunner
from modelrepo.hub.service import Hub
from modelrepo.hub.commits import HubCommits
from modelrepo.lfs.service import Lfs
from modelrepo.lfs.locks import Locks
from modelrepo.models.service import Models
from modelrepo.push.effects import PushEffects
from modelrepo.push.sessions import PushSessions
from modelrepo.push.receive import Receive
from modelrepo.push.ref_changes import RefChanges
from modelrepo.models.webhook_worker import WebhookWorker
from modelrepo.models.webhooks import Webhooks
from modelrepo.settings import Settings
from modelrepo.storage import open_store
from modelrepo.web import api, git_http, hub_http, lfs_http, ops_http
from modelrepo.web.internal import create_internal_app
from modelrepo.xet import http as xet_http
from modelrepo.web.middlewares import AccessLogger, authenticate, request_context

log = structlog.get_logger("modelrepo.app")


def create_app(settings: Settings) -> web.Application:
    """Build the public application. Opening the catalog runs pending migrations (synchronously,
    before any request can be served)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(settings.catalog_path)
    accounts = Accounts(catalog)
    app = web.Application(middlewares=[request_context, authenticate],
                          client_max_size=settings.limits.max_json_body)
    app[SETTINGS] = settings
    app[METRICS] = metrics = Metrics()
    app[LIMITER] = FailureLimiter(settings.auth.max_failures, settings.auth.failure_window)
    app[CATALOG] = catalog
    app[ACCOUNTS] = accounts
    worker = WebhookWorker(catalog, settings.webhooks, metrics)
    app[WORKER] = worker
    app[WEBHOOKS] = Webhooks(catalog, settings.webhooks, worker.wake)
    models = Models(catalog, accounts, repos.RepoStore(settings.repos_dir), settings.git.default_branch, worker.wake)
    app[MODELS] = models
    app[GIT] = GitRunner(settings.git.binary)
    effects = PushEffects(catalog, models.path, worker.wake)
    app[DEPLOYMENTS] = Deployments(catalog, models, tuple(settings.deploy.required_fields), worker.wake,
                                   lambda m: f"{settings.server.base_url()}/{m.full_name}.git")
    app[REFS] = RefChanges(models, effects, app[DEPLOYMENTS])
    app[PUSHES] = PushSessions()
    app[INFLIGHT] = InFlight()
    signer = ActionSigner(load_or_create_key(settings.secret_key_path))
    app[LFS] = Lfs(catalog, app[MODELS], open_store(settings), signer, settings.lfs)
    app[LOCKS] = Locks(catalog)
    app[RECEIVE] = Receive(settings, models, app[LFS], app[DEPLOYMENTS], effects, app[GIT], metrics)
    app[HUB] = Hub(models, accounts, app[REFS])
    app[HUB_COMMITS] = HubCommits(models, app[LFS], app[DEPLOYMENTS], effects, app[GIT], settings.push.max_plain_blob,
                                  tuple(settings.push.weight_patterns), settings.limits.max_commit_body)

    api.add_routes(app)
    ops_http.add_routes(app)
    # {name} may carry the ".git" suffix or not; the handlers strip it.
    app.router.add_get("/{ns}/{name}/info/refs", git_http.info_refs)
    app.router.add_post("/{ns}/{name}/git-upload-pack", git_http.upload_pack)
    app.router.add_post("/{ns}/{name}/git-receive-pack", git_http.receive_pack)
    lfs_http.add_routes(app)
    hub_http.add_routes(app)
    xet_http.setup(app)

    app.cleanup_ctx.append(_reinstall_hooks)
    app.cleanup_ctx.append(_internal_socket)
    app.cleanup_ctx.append(_webhook_worker)
    app.on_cleanup.append(_close_catalog)
    return app


async def _close_catalog(app: web.Application) -> None:
    await app[LFS].store.close()
    await app[CATALOG].close()


async def _reinstall_hooks(app: web.Application) -> AsyncIterator[None]:
    """Hooks change with the package: bring every repository's copy up to date on start-up."""
    store = app[MODELS].store
    paths = await asyncio.to_thread(store.all_repositories)
    for path in paths:
        await asyncio.to_thread(repos.configure, path)
    if paths:
        log.info("hooks_checked", repositories=len(paths))
    yield


async def _internal_socket(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.run_dir, 0o700)
    path = settings.run_dir / "hooks.sock"
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
    return web.AppRunner(app, access_log_class=AccessLogger, read_bufsize=1024 * 1024,
                         shutdown_timeout=app[SETTINGS].server.shutdown_timeout)
