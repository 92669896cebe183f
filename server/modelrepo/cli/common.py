"""What every command shares: loading the settings, the --data/--config options, running an async
command against the services (built by the composition root, as the daemon builds them), and the
local superuser the admin commands act as.

Admin commands open the same data directory as the daemon (it may be running: the catalog is
SQLite in WAL mode) and call the same service functions the REST API calls. Domain errors become
exit status 1 with their message; usage errors are click's (exit status 2).

The settings, logging and services are imported when a command runs, not when the command tree is
declared (see the package docstring).
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelrepo.accounts.access import Identity
from modelrepo.catalog.ranges import MAX_INTEGER
from modelrepo.errors import ModelrepoError

if TYPE_CHECKING:
    from modelrepo.settings import Settings

# A catalog row id: an INTEGER (32-bit on PostgreSQL), so anything larger is a usage error here.
ID = click.IntRange(min=1, max=MAX_INTEGER)

# The shell user owns the data directory: a site admin with an admin scope, and no user row.
LOCAL_ADMIN = Identity(user_id=0, name="local-admin", is_admin=True, scope="admin")


def read_settings(config: Path | None, data: Path | None, listen: str | None = None,
                  workers: str | None = None) -> Settings:
    """Defaults < YAML (--config or MODELREPO_CONFIG) < MODELREPO_* env < flags. Raises ConfigError."""
    from modelrepo.settings import load_settings

    overrides: dict[str, Any] = {}
    if data is not None:
        overrides["data_dir"] = str(data)
    if listen is not None:
        overrides["server.listen"] = listen
    if workers is not None:
        overrides["server.workers"] = workers
    config = config or (Path(os.environ["MODELREPO_CONFIG"]) if os.environ.get("MODELREPO_CONFIG") else None)
    return load_settings(config, overrides=overrides)


def settings_or_exit(config: Path | None, data: Path | None, listen: str | None = None,
                     workers: str | None = None) -> Settings:
    from modelrepo.settings import ConfigError

    try:
        return read_settings(config, data, listen, workers)
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def data_options(fn: Callable) -> Callable:
    fn = click.option("--data", "data", type=click.Path(path_type=Path), help="data directory (default ./data)")(fn)
    fn = click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
                      help="YAML config file (or MODELREPO_CONFIG)")(fn)
    return fn


def quiet_logging() -> None:
    """Commands report on stdout; only warnings and errors are logged (to stderr)."""
    from modelrepo.log import configure_logging

    configure_logging("warning", "console" if sys.stderr.isatty() else "json")


@functools.cache  # once per process
def skip_collection_at_exit() -> None:
    """Freeze the heap when the process exits (atexit runs before the interpreter's last garbage
    collections): everything alive then goes with the process, yet those collections would walk it
    all, ~0.6 s of CPU once the services are imported, paid by every command and every daemon stop.
    The catalog and the store are closed explicitly before; a caller that runs a command in-process
    keeps collecting as usual until its own exit."""
    atexit.register(gc.freeze)


def run_service(fn: Callable[..., Coroutine]) -> Callable:
    """Run ``fn(services, **options)`` with the services built from the settings, closing them
    afterwards; a domain error becomes exit status 1 with its message."""

    @functools.wraps(fn)
    def wrapper(config: Path | None, data: Path | None, **kwargs: Any) -> None:
        import asyncio

        skip_collection_at_exit()
        settings = settings_or_exit(config, data)
        quiet_logging()

        async def go() -> None:
            from modelrepo.services import build_services

            services = build_services(settings)
            try:
                await fn(services, **kwargs)
            finally:
                await services.close()

        from modelrepo.catalog.db import CatalogUnavailable

        try:
            asyncio.run(go())
        except ModelrepoError as exc:
            raise click.ClickException(exc.message) from None
        except CatalogUnavailable as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def admin_command(group: click.Group | None = None, name: str | None = None) -> Callable:
    """Declare an admin command (of ``group``, or a top-level one): ``--data``/``--config``, and
    the async function run by ``run_service``. Its own options go below this decorator."""

    def declare(fn: Callable[..., Coroutine]) -> click.Command:
        command = group.command(name) if group is not None else click.command(name)
        return command(data_options(run_service(fn)))

    return declare


def full_name(value: str) -> tuple[str, str]:
    """NS/NAME → (ns, name); the service functions judge the names themselves."""
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name:
        raise click.BadParameter(f"expected NS/NAME, got {value!r}", param_hint="NS/NAME")
    return ns, name


def duration_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from modelrepo.settings import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def echo_table(rows: list[list[Any]], header: list[str]) -> None:
    """Tab-separated columns under a header (easy to read, easy to `cut -f`); "-" for nothing."""
    click.echo("\t".join(header))
    for row in rows:
        click.echo("\t".join("-" if v is None or v == "" else str(v) for v in row))



def when(timestamp: float | None) -> str | None:
    """A catalog timestamp as UTC, to the second."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
