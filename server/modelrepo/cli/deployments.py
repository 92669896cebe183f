"""``modelrepo deployment``: list a model's deployments, stop them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from modelrepo.cli.common import (
    ID,
    LOCAL_ADMIN,
    admin_command,
    echo_table,
    full_name,
    when,
)

if TYPE_CHECKING:
    from modelrepo.services import Services


@click.group()
def deployment() -> None:
    """Manage deployments: list, stop."""


@admin_command(deployment, "list")
@click.argument("name", metavar="NS/NAME")
async def deployment_list(services: Services, name: str) -> None:
    """List a model's deployments: id, tag, status."""
    ns, model_name = full_name(name)
    echo_table([[d["id"], d["name"], d["revision"], d["status"], d["endpoint"], when(d["updated_at"])]
                for d in await services.deployments.list(LOCAL_ADMIN, ns, model_name)],
               ["ID", "NAME", "TAG", "STATUS", "ENDPOINT", "UPDATED"])


@admin_command(deployment, "stop")
@click.argument("ids", metavar="ID...", nargs=-1, required=True, type=ID)
async def deployment_stop(services: Services, ids: tuple[int, ...]) -> None:
    """Mark deployments stopped; their tag and model are free.

    The inference platform hears of it through the deployment.updated webhook event."""
    for deployment_id in ids:
        d = await services.deployments.update(LOCAL_ADMIN, deployment_id, {"status": "stopped"})
        click.echo(f"stopped deployment {d['id']} ({d['name']} of {d['model']} at {d['revision']})")
