"""``modelrepo serve``: the daemon, in the foreground (systemd runs it as Type=notify).

With ``--workers N`` (or ``server.workers``) above 1 this process becomes the supervisor of N
worker processes (``supervisor.py``); each worker is this same command with the hidden
``--worker``/``--supervisor`` options.
"""

import asyncio
import os
from pathlib import Path

import click

from modelrepo.cli.common import data_options, read_settings, settings_or_exit, skip_collection_at_exit


@click.command()
@data_options
@click.option("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
@click.option("--workers", help="worker processes: a number, or 'auto' for one per CPU (default 1)")
@click.option("--worker", type=click.IntRange(min=0), hidden=True)
@click.option("--supervisor", type=click.IntRange(min=1), hidden=True)
@click.pass_context
def serve(ctx: click.Context, config: Path | None, data: Path | None, listen: str | None, workers: str | None,
          worker: int | None, supervisor: int | None) -> None:
    """Run the daemon (until SIGTERM or SIGINT).

    SIGHUP reloads what can change without a restart (log level and format, webhook delivery).
    With several workers, this process supervises them and passes the signals on."""
    if worker is not None:
        if supervisor is None:
            raise click.UsageError("--worker is started by the supervisor, with --supervisor")
        from modelrepo.log import set_process_fields
        from modelrepo.supervisor import attach_to_supervisor  # noqa: PLC0415 - workers only

        attach_to_supervisor(supervisor)
        set_process_fields(worker=worker, pid=os.getpid())
    settings = settings_or_exit(config, data, listen, workers)  # a bad configuration fails before the imports

    import structlog

    from modelrepo import daemon
    from modelrepo.log import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    skip_collection_at_exit()
    try:
        if worker is None and settings.server.workers > 1:
            from modelrepo.supervisor import Supervisor  # noqa: PLC0415 - imported only when used

            args = ["serve", *(["--config", str(config)] if config else []), *(["--data", str(data)] if data else [])]
            ctx.exit(asyncio.run(Supervisor(settings, args, lambda: read_settings(config, data, listen)).run()))
        asyncio.run(daemon.serve(settings, lambda: read_settings(config, data, listen), worker=worker))
    except OSError as exc:
        structlog.get_logger("modelrepo").error("startup_failed", error=str(exc))
        raise click.ClickException(str(exc)) from None
