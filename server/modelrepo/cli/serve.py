"""``modelrepo serve``: the daemon, in the foreground (systemd runs it as Type=notify)."""

import asyncio
from pathlib import Path

import click

from modelrepo.cli.common import data_options, read_settings, settings_or_exit, skip_collection_at_exit


@click.command()
@data_options
@click.option("--listen", help="HOST:PORT to listen on (default 127.0.0.1:8080)")
def serve(config: Path | None, data: Path | None, listen: str | None) -> None:
    """Run the daemon (until SIGTERM or SIGINT).

    SIGHUP reloads what can change without a restart (log level and format, webhook delivery)."""
    settings = settings_or_exit(config, data, listen)  # a bad configuration fails before the imports

    import structlog

    from modelrepo import daemon
    from modelrepo.log import configure_logging

    configure_logging(settings.log.level, settings.log.format)
    skip_collection_at_exit()
    try:
        asyncio.run(daemon.serve(settings, lambda: read_settings(config, data, listen)))
    except OSError as exc:
        structlog.get_logger("modelrepo").error("startup_failed", error=str(exc))
        raise click.ClickException(str(exc)) from None
