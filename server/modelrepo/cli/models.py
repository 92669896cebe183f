"""``modelrepo model``: create, list, show and delete models."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from modelrepo.accounts.access import VISIBILITIES
from modelrepo.cli.common import LOCAL_ADMIN, admin_command, full_name, when

if TYPE_CHECKING:
    from modelrepo.services import Services


@click.group()
def model() -> None:
    """Manage models: create, list, show, delete."""


@admin_command(model, "create")
@click.argument("name", metavar="NS/NAME")
@click.option("--visibility", type=click.Choice(VISIBILITIES), default="private", show_default=True)
@click.option("--description", default="", help="one line shown in listings")
async def model_create(services: Services, name: str, visibility: str, description: str) -> None:
    """Create a model and its empty repository; prints its clone URL."""
    ns, model_name = full_name(name)
    m = await services.models.create(LOCAL_ADMIN, ns, model_name, description=description, visibility=visibility,
                                     check_access=False)
    click.echo(f"created {m.full_name} ({m.visibility}): {m.to_json(services.settings.server.base_url())['clone_url']}")


@admin_command(model, "list")
async def model_list(services: Services) -> None:
    """List every model: name, visibility, description."""
    for m in await services.models.list(LOCAL_ADMIN, limit=100000):
        click.echo(f"{m.full_name}\t{m.visibility}\t{m.description}")


@admin_command(model, "show")
@click.argument("name", metavar="NS/NAME")
async def model_show(services: Services, name: str) -> None:
    """Show a model: card, refs, deployments, files."""
    from modelrepo.push.rules import human

    ns, model_name = full_name(name)
    models = services.models
    m = await models.for_read(LOCAL_ADMIN, ns, model_name)
    refs = await models.refs(LOCAL_ADMIN, m.namespace, m.name)
    deployments = await services.deployments.list(LOCAL_ADMIN, m.namespace, m.name)
    files = await models.files(m)
    info = m.to_json(services.settings.server.base_url())
    for key in ("id", "visibility", "description", "default_branch", "head_commit", "clone_url", "library_name",
                "pipeline_tag", "summary"):
        click.echo(f"{key + ':':16}{info[key] if info[key] not in (None, '') else '-'}")
    click.echo(f"{'tags:':16}{', '.join(info['tags']) or '-'}")
    click.echo(f"{'total size:':16}{human(m.total_size)}")
    click.echo(f"{'force push:':16}{'allowed' if m.allow_force_push else 'refused'}")
    click.echo(f"{'created:':16}{when(m.created_at)}")
    click.echo("\nbranches:")
    for b in refs["branches"]:
        click.echo(f"  {b['name']}\t{b['commit']}")
    click.echo("releases (tags):")
    for t in refs["tags"]:
        click.echo(f"  {t['name']}\t{t['commit']}")
    click.echo("deployments:")
    for d in deployments:
        click.echo(f"  {d['id']}\t{d['name']}\t{d['revision']}\t{d['status']}")
    click.echo(f"files ({info['default_branch']}):")
    for f in files:
        click.echo(f"  {f['path']}\t{human(f['size'])}" + ("\tLFS" if "lfs_oid" in f else ""))


@admin_command(model, "delete")
@click.argument("name", metavar="NS/NAME")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
async def model_delete(services: Services, name: str, yes: bool) -> None:
    """Delete a model; refused while a deployment is live.

    The repository and the model's LFS links go with it (objects nothing else links are freed by
    `gc`). A requested or active deployment must be stopped first (`deployment stop ID`)."""
    ns, model_name = full_name(name)
    m = await services.models.for_admin(LOCAL_ADMIN, ns, model_name)
    if not yes:
        click.confirm(f"delete {m.full_name} and its repository for good?", abort=True)
    await services.models.delete(LOCAL_ADMIN, m.namespace, m.name)
    click.echo(f"deleted {m.full_name}")
