"""``modelrepo catalog migrate-to URL``: move the catalog to another database (see ops/catalog_copy.py)."""

import asyncio
from pathlib import Path

import click

from modelrepo.cli.common import data_options, quiet_logging, settings_or_exit


@click.group("catalog")
def catalog() -> None:
    """The catalog database itself."""


@catalog.command("migrate-to")
@data_options
@click.argument("url")
def migrate_to(config: Path | None, data: Path | None, url: str) -> None:
    """Copy the catalog into the empty one at URL.

    Every row of every table of the configured catalog, in one transaction, counted. URL is postgresql://USER:PASSWORD@HOST[:PORT]/DB (or sqlite:///PATH). Stop the daemon first;
    then set catalog.url (MODELREPO_CATALOG__URL) to URL and start it again."""
    settings = settings_or_exit(config, data)
    quiet_logging()
    # Imported here, not at the top: the command tree is declared without the catalog's engines.
    from modelrepo.catalog import urls
    from modelrepo.catalog.db import Catalog, CatalogUnavailable
    from modelrepo.errors import ModelrepoError
    from modelrepo.ops.catalog_copy import copy_catalog

    try:
        target = urls.normalize(url)
    except urls.BadCatalogUrl as exc:
        raise click.UsageError(str(exc).replace("catalog.url: ", "URL: ")) from None
    if target == settings.catalog_url:
        raise click.UsageError("URL is the configured catalog itself: give the catalog to copy into")
    if urls.dialect(settings.catalog_url) == "sqlite" and not settings.catalog_path.is_file():
        raise click.ClickException(f"no catalog at {settings.catalog_path}: nothing to copy")

    async def go() -> dict[str, int]:
        source = Catalog.open(settings.catalog_url)
        try:
            dest = Catalog.open(target)
            try:
                return await copy_catalog(source, dest)
            finally:
                await dest.close()
        finally:
            await source.close()

    try:
        counts = asyncio.run(go())
    except ModelrepoError as exc:
        raise click.ClickException(exc.message) from None
    except CatalogUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    width = max(len(name) for name in counts)
    for name, n in counts.items():
        click.echo(f"{name:<{width}}  {n:>8} rows")
    click.echo(f"copied {sum(counts.values())} rows in {len(counts)} tables from {urls.redacted(settings.catalog_url)} "
               f"to {urls.redacted(target)}; row counts verified")
    click.echo("next: set catalog.url (MODELREPO_CATALOG__URL) to that URL and start the daemon")
