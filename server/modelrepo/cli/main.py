"""Command line: ``modelrepo serve`` and the admin commands.

Admin commands open the same data directory as the daemon (it may be running: the catalog is
SQLite in WAL mode) and call the same service functions the REST API calls, as a local superuser.
"""

import asyncio
import functools
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
import structlog

from modelrepo import sdnotify
from modelrepo.catalog.db import Catalog
from modelrepo.errors import ModelrepoError
from modelrepo.log import configure_logging
from modelrepo.git import repos
from modelrepo.accounts.access import ROLES, SCOPES, VISIBILITIES, Identity
from modelrepo.accounts.service import Accounts
from modelrepo.models.service import Models
from modelrepo.settings import ConfigError, Settings, load_settings, parse_size

LOCAL_ADMIN = Identity(user_id=0, name="local-admin", is_admin=True, scope="admin")


def _settings(config: Path | None, data: Path | None, listen: str | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if data is not None:
        overrides["data_dir"] = str(data)
    if listen is not None:
        overrides["server.listen"] = listen
    config = config or (Path(os.environ["MODELREPO_CONFIG"]) if os.environ.get("MODELREPO_CONFIG") else None)
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def data_options(fn: Callable) -> Callable:
    fn = click.option("--data", "data", type=click.Path(path_type=Path), help="data directory (default ./data)")(fn)
    fn = click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
                      help="YAML config file (or MODELREPO_CONFIG)")(fn)
    return fn


def run_service(fn: Callable[..., Coroutine]) -> Callable:
    """Run an async admin command against the catalog, mapping domain errors to exit code 1."""

    @functools.wraps(fn)
    def wrapper(config: Path | None, data: Path | None, **kwargs: Any) -> None:
        settings = _settings(config, data)
        configure_logging("warning", "console" if sys.stderr.isatty() else "json")

        async def go() -> None:
            catalog = Catalog.open(settings.catalog_path)
            accounts = Accounts(catalog)
            models = Models(catalog, accounts, repos.RepoStore(settings.repos_dir), settings.git.default_branch)
            try:
                await fn(settings, accounts, models, **kwargs)
            finally:
                await catalog.close()

        try:
            asyncio.run(go())
        except ModelrepoError as exc:
            raise click.ClickException(exc.message) from None

    return wrapper


@click.group()
@click.version_option(package_name="modelrepo")
def main() -> None:
    """modelrepo: Git-versioned model repository server."""


@main.command()
@data_options
@click.option("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
def serve(config: Path | None, data: Path | None, listen: str | None) -> None:
    """Run the daemon until SIGTERM or SIGINT; SIGHUP reloads what can change without a restart."""
    settings = _settings(config, data, listen)
    configure_logging(settings.log.level, settings.log.format)
    try:
        asyncio.run(_serve(settings, lambda: _settings(config, data, listen)))
    except OSError as exc:
        structlog.get_logger("modelrepo").error("startup_failed", error=str(exc))
        raise click.ClickException(str(exc)) from None


async def bootstrap(settings: Settings, accounts: Accounts) -> Path | None:
    """First start: an 'admin' user and its admin-scoped token, written 0600 to DATA/admin.token."""
    if await accounts.count_users() > 0:
        return None
    await accounts.create_user("admin", admin=True)
    token, _ = await accounts.create_token("admin", scope="admin", name="bootstrap")
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


def _reload(app, reload_settings) -> None:
    """SIGHUP: log level and format, webhook delivery settings (quotas live in the catalog and are
    always current). Anything else needs a restart; a bad config is logged and ignored."""
    from modelrepo.keys import WEBHOOKS, WORKER  # noqa: PLC0415

    log = structlog.get_logger("modelrepo")
    try:
        new = reload_settings()
    except click.ClickException as exc:
        log.error("reload_failed", error=exc.message)
        return
    configure_logging(new.log.level, new.log.format)
    app[WORKER].settings = new.webhooks
    app[WEBHOOKS].settings = new.webhooks
    log.warning("reloaded", log_level=new.log.level, webhooks=str(new.webhooks))


async def _serve(settings: Settings, reload_settings=None) -> None:
    from aiohttp import web  # noqa: PLC0415 - keep admin commands light

    from modelrepo.app import create_app, make_runner  # noqa: PLC0415
    from modelrepo.keys import ACCOUNTS, INFLIGHT  # noqa: PLC0415

    log = structlog.get_logger("modelrepo")
    app = create_app(settings)
    token_path = await bootstrap(settings, app[ACCOUNTS])
    if token_path:
        log.warning("bootstrap", admin_user="admin", admin_token_file=str(token_path.resolve()))
        print(f"modelrepo: created user 'admin'; its token is in {token_path.resolve()} (mode 0600)",
              file=sys.stderr, flush=True)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else settings.server.listen
    port = bound[1] if isinstance(bound, tuple) else settings.server.port
    log.info("listening", url=f"http://{settings.server.host}:{port}", data_dir=str(settings.data_dir.resolve()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reload_settings is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, app, reload_settings)
    sdnotify.notify(f"READY=1\nSTATUS=listening on {settings.server.host}:{port}\nMAINPID={os.getpid()}")
    interval = sdnotify.watchdog_interval()
    watchdog = asyncio.create_task(sdnotify.watchdog_loop(interval)) if interval else None
    await stop.wait()
    sdnotify.notify("STOPPING=1\nSTATUS=draining")
    log.info("stopping", in_flight=app[INFLIGHT].count, drain_timeout=settings.server.shutdown_timeout)
    await site.stop()  # no new connections from here on
    drained = await app[INFLIGHT].wait_idle(settings.server.shutdown_timeout)
    if not drained:
        log.warning("drain_timeout", in_flight=app[INFLIGHT].count)
    await runner.cleanup()
    if watchdog is not None:
        watchdog.cancel()
    log.info("stopped")


# -- admin commands ---------------------------------------------------------------------------

@main.group()
def user() -> None:
    """Manage users."""


@user.command("create")
@data_options
@click.argument("name")
@click.option("--admin", is_flag=True, help="make the user a site administrator")
@run_service
async def user_create(settings: Settings, accounts: Accounts, models: Models, name: str, admin: bool) -> None:
    u = await accounts.create_user(name, admin=admin)
    click.echo(f"created user {u.name}{' (site admin)' if u.is_admin else ''}")


@main.group()
def token() -> None:
    """Manage tokens."""


@token.command("create")
@data_options
@click.argument("user_name", metavar="USER")
@click.option("--scope", type=click.Choice(SCOPES), default="write", show_default=True)
@click.option("--name", "label", default="", help="a label to recognise the token by")
@run_service
async def token_create(settings: Settings, accounts: Accounts, models: Models, user_name: str, scope: str,
                       label: str) -> None:
    secret, _ = await accounts.create_token(user_name, scope=scope, name=label)
    click.echo(secret)


@main.group()
def namespace() -> None:
    """Manage namespaces (tenants)."""


@namespace.command("create")
@data_options
@click.argument("name")
@click.option("--description", default="")
@run_service
async def namespace_create(settings: Settings, accounts: Accounts, models: Models, name: str, description: str) -> None:
    ns = await accounts.create_namespace(name, description)
    click.echo(f"created namespace {ns.name}")


@namespace.command("add-member")
@data_options
@click.argument("ns")
@click.argument("user_name", metavar="USER")
@click.option("--role", type=click.Choice(ROLES), required=True)
@run_service
async def namespace_add_member(settings: Settings, accounts: Accounts, models: Models, ns: str, user_name: str,
                               role: str) -> None:
    m = await accounts.set_member(ns, user_name, role)
    click.echo(f"{m['user']} is {m['role']} of {m['namespace']}")


@namespace.command("set-quota")
@data_options
@click.argument("ns")
@click.option("--bytes", "bytes_", help="LFS storage quota, e.g. 500G or 1TiB; 'none' for unlimited")
@click.option("--models", "models_", help="number of models; 'none' for unlimited")
@run_service
async def namespace_set_quota(settings: Settings, accounts: Accounts, models: Models, ns: str, bytes_: str | None,
                              models_: str | None) -> None:
    current = await accounts.quota((await accounts.get_namespace(ns)).id)

    def value(raw: str | None, old: int | None, parse) -> int | None:
        if raw is None:
            return old
        if raw.lower() in ("none", "unlimited", ""):
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    result = await accounts.set_quota(ns, bytes_=value(bytes_, current["bytes"], parse_size),
                                      models_=value(models_, current["models"], int))
    click.echo(f"{result['namespace']}: quota {result['quota']}, usage {result['usage']}")


@main.group()
def model() -> None:
    """Manage models."""


@model.command("create")
@data_options
@click.argument("full_name", metavar="NS/NAME")
@click.option("--visibility", type=click.Choice(VISIBILITIES), default="private", show_default=True)
@click.option("--description", default="")
@run_service
async def model_create(settings: Settings, accounts: Accounts, models: Models, full_name: str, visibility: str,
                       description: str) -> None:
    ns, sep, name = full_name.partition("/")
    if not sep:
        raise click.BadParameter("expected NS/NAME", param_hint="NS/NAME")
    m = await models.create(LOCAL_ADMIN, ns, name, description=description, visibility=visibility,
                            check_access=False)
    click.echo(f"created {m.full_name} ({m.visibility}): {m.to_json(settings.server.base_url())['clone_url']}")


@model.command("list")
@data_options
@run_service
async def model_list(settings: Settings, accounts: Accounts, models: Models) -> None:
    for m in await models.list(LOCAL_ADMIN, limit=100000):
        click.echo(f"{m.full_name}\t{m.visibility}\t{m.description}")


from modelrepo.cli import ops as cli_ops  # noqa: F401,E402
from modelrepo.cli import inspect as cli_inspect  # noqa: F401,E402
