"""Operator commands: gc, fsck, backup, restore.

Like the admin commands they take ``--data``/``--config`` and work while the daemon runs. Reports
go to stdout (they are what the command is for), progress to stderr (live on a TTY only, see
``progress.py``). Exit status: 0 when all is well, 1 when something needs a person (a problem fsck
found, an error gc met, a refused restore).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from modelrepo.cli.common import (
    admin_command,
    data_options,
    duration_option,
    full_name,
    quiet_logging,
    settings_or_exit,
    skip_collection_at_exit,
)
from modelrepo.cli.progress import Status
from modelrepo.errors import ModelrepoError
from modelrepo.ops import OpsError

if TYPE_CHECKING:
    from modelrepo.ops.fsck import ModelRef
    from modelrepo.services import Services
    from modelrepo.settings import Settings


def _echo_lines(lines: list[str]) -> None:
    for line in lines:
        click.echo(line)


def _run_sync(settings: Settings, label: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Backup and restore: synchronous, on the data directory's files (no services: a restore
    target must stay empty until it is complete)."""
    quiet_logging()
    skip_collection_at_exit()
    try:
        with Status(label) as status:
            return fn(settings, *args, say=status.say)
    except ModelrepoError as exc:
        raise click.ClickException(exc.message) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None


@admin_command()
@click.option("--dry-run", is_flag=True, help="print what would be freed, change nothing")
@click.option("--grace", default="24h", show_default=True, callback=duration_option,
              help="leave anything younger than this alone (e.g. 30m, 24h, 7d)")
async def gc(services: Services, dry_run: bool, grace: float) -> None:
    """Free unused LFS objects and leftovers; repack.

    Deletes LFS objects no repository links, crash leftovers and stale partial uploads, each once
    older than --grace; repacks repositories with many loose objects or packs."""
    from modelrepo.ops.gc import collect_garbage

    with Status("gc: sweeping LFS objects, uploads and repositories"):
        report = await collect_garbage(services.settings, services.catalog, services.store, services.models.store,
                                       grace=grace, dry_run=dry_run)
    _echo_lines(report.lines())
    if report.errors:
        raise click.exceptions.Exit(1)


async def _model_ref(services: Services, name: str) -> ModelRef:
    from modelrepo.ops.fsck import ModelRef

    ns, model_name = full_name(name)
    model = await services.models.find(ns, model_name)
    if model is None:
        raise OpsError(f"model {name!r} not found (expected NS/NAME of an existing model)")
    return ModelRef(model.id, model.full_name, services.models.path(model))


@admin_command()
@click.argument("name", metavar="[NS/NAME]", required=False)
@click.option("--repair", is_flag=True, help="rebuild the catalog of models whose refs it does not describe")
async def fsck(services: Services, name: str | None, repair: bool) -> None:
    """Check LFS objects, repositories, pointers and the catalog.

    Re-hashes LFS objects, runs git fsck on the repositories, checks every LFS pointer on every
    branch and tag and that the catalog describes every repository's refs; with NS/NAME, only that
    model. Exits 1 and lists the problems when there are any; --repair rebuilds the catalog rows of
    models whose refs moved behind its back (a crash between a ref update and post-receive)."""
    from modelrepo.ops.fsck import run_fsck

    only = await _model_ref(services, name) if name else None
    with Status("fsck: checking LFS objects and repositories") as status:
        report = await run_fsck(services.catalog, services.store, services.models.store,
                                services.settings.git.binary, only=only,
                                progress=lambda total: status.measure("re-hashed", total),
                                models_=services.models, repair=repair)
    _echo_lines(report.lines())
    if not report.ok:
        raise click.exceptions.Exit(1)


@click.command("backup")
@data_options
@click.argument("dest", type=click.Path(path_type=Path))
def backup_command(config: Path | None, data: Path | None, dest: Path) -> None:
    """Write a consistent backup to DEST while the daemon runs.

    DEST is a new directory; the backup holds the catalog, the repositories and the local LFS
    objects (S3 objects are not copied: back the bucket up on its own)."""
    from modelrepo.ops import backup as backups
    from modelrepo.push.rules import human

    manifest = _run_sync(settings_or_exit(config, data), "backup", backups.backup, dest)
    counts = manifest["counts"]
    lfs = (f"{counts['lfs_objects']} LFS object(s) ({human(counts['lfs_bytes'])})" if manifest["lfs_objects_included"]
           else "LFS objects NOT included (they are in S3)")
    click.echo(f"backup written to {dest}: {counts['models']} model(s), {counts['refs']} ref(s), {lfs}")
    _echo_lines([f"  {w}" for w in manifest["warnings"]])


@click.command("restore")
@data_options
@click.argument("src", type=click.Path(path_type=Path, exists=True, file_okay=False))
def restore_command(config: Path | None, data: Path | None, src: Path) -> None:
    """Restore backup SRC into an empty data directory.

    The data directory must be empty or absent; the result is verified before it is used."""
    from modelrepo.ops import backup as backups
    from modelrepo.push.rules import human

    report = _run_sync(settings_or_exit(config, data), "restore", backups.restore, src)
    click.echo(f"restored {src} into {report.data_dir}: {report.models} model(s), {report.refs} ref(s), "
               f"{report.lfs_objects} LFS object(s) ({human(report.lfs_bytes)}); start the daemon on it")
    _echo_lines([f"  warning: {w}" for w in report.warnings])


COMMANDS = (gc, fsck, backup_command, restore_command)
