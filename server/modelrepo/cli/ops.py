"""Operator commands on the ``modelrepo`` group: gc, fsck, backup, restore.

Like the admin commands they take ``--data``/``--config`` and work while the daemon runs. Reports
go to stdout (they are what the command is for), progress to stderr. Exit status: 0 when all is
well, 1 when something needs a person (a problem fsck found, an error gc met, a refused restore).
"""

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modelrepo.cli.main import _settings, data_options, main, run_service
from modelrepo.errors import ModelrepoError
from modelrepo.log import configure_logging
from modelrepo.ops import OpsError
from modelrepo.ops import backup as backups
from modelrepo.ops.fsck import ModelRef, run_fsck
from modelrepo.ops.gc import collect_garbage
from modelrepo.accounts.service import Accounts
from modelrepo.models.service import Models
from modelrepo.push.rules import human
from modelrepo.settings import Settings, parse_duration
from modelrepo.storage import open_store
from modelrepo.xet.store import xet_view


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _say(message: str) -> None:
    click.echo(message, err=True)


def _run_sync(settings_of: Callable[[], Settings], fn: Callable[..., Any], *args: Any) -> Any:
    """Backup and restore: synchronous, no catalog opened for them (run_service would create one)."""
    settings = settings_of()
    configure_logging("warning", "console" if sys.stderr.isatty() else "json")
    try:
        return fn(settings, *args, say=_say)
    except ModelrepoError as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None


@main.command()
@data_options
@click.option("--dry-run", is_flag=True, help="print what would be freed, change nothing")
@click.option("--grace", default="24h", show_default=True, callback=_duration,
              help="leave anything younger than this alone (e.g. 30m, 24h, 7d)")
@run_service
async def gc(settings: Settings, accounts: Accounts, models: Models, dry_run: bool, grace: float) -> None:
    """Delete LFS objects no repository links, crash leftovers and stale partial uploads; repack
    repositories with many loose objects or packs."""
    store = open_store(settings)
    try:
        report = await collect_garbage(settings, models.catalog, store, models.store, grace=grace, dry_run=dry_run)
    finally:
        await store.close()
    _echo_lines(report.lines())
    if report.errors:
        raise click.exceptions.Exit(1)


async def _model_ref(models: Models, full_name: str) -> ModelRef:
    ns, sep, name = full_name.partition("/")
    model = await models.find(ns, name) if sep else None
    if model is None:
        raise OpsError(f"model {full_name!r} not found (expected NS/NAME of an existing model)")
    return ModelRef(model.id, model.full_name, models.path(model))


@main.command()
@data_options
@click.argument("full_name", metavar="[NS/NAME]", required=False)
@run_service
async def fsck(settings: Settings, accounts: Accounts, models: Models, full_name: str | None) -> None:
    """Re-hash LFS objects, git fsck the repositories, check every LFS pointer on every branch and
    tag; with NS/NAME, only that model. Exits 1 and lists the problems when there are any."""
    only = await _model_ref(models, full_name) if full_name else None
    store = xet_view(open_store(settings), models.catalog)
    with contextlib.ExitStack() as bars:
        def progress(total: int) -> Callable[[int], None]:
            if not total or not sys.stderr.isatty():
                return lambda n: None
            return bars.enter_context(click.progressbar(length=total, label="re-hashing LFS objects",
                                                        file=sys.stderr)).update

        try:
            report = await run_fsck(models.catalog, store, models.store, settings.git.binary, only=only,
                                    progress=progress)
        finally:
            await store.close()
    _echo_lines(report.lines())
    if not report.ok:
        raise click.exceptions.Exit(1)


@main.command("backup")
@data_options
@click.argument("dest", type=click.Path(path_type=Path))
def backup_command(config: Path | None, data: Path | None, dest: Path) -> None:
    """Write a consistent backup of catalog, repositories and local LFS objects to DEST (a new
    directory), while the daemon runs."""
    manifest = _run_sync(lambda: _settings(config, data), backups.backup, dest)
    counts = manifest["counts"]
    lfs = (f"{counts['lfs_objects']} LFS object(s) ({human(counts['lfs_bytes'])})" if manifest["lfs_objects_included"]
           else "LFS objects NOT included (they are in S3)")
    click.echo(f"backup written to {dest}: {counts['models']} model(s), {counts['refs']} ref(s), {lfs}")
    _echo_lines([f"  {w}" for w in manifest["warnings"]])


@main.command("restore")
@data_options
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
def restore_command(config: Path | None, data: Path | None, src: Path) -> None:
    """Restore the backup SRC into the data directory, which must be empty or absent, and verify it."""
    report = _run_sync(lambda: _settings(config, data), backups.restore, src)
    click.echo(f"restored {src} into {report.data_dir}: {report.models} model(s), {report.refs} ref(s), "
               f"{report.lfs_objects} LFS object(s) ({human(report.lfs_bytes)}); start the daemon on it")
    _echo_lines([f"  warning: {w}" for w in report.warnings])
