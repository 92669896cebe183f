"""``modelrepo webhook``: list a namespace's or a model's webhooks, their deliveries, redeliver."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from modelrepo.cli.common import ID, LOCAL_ADMIN, admin_command, echo_table, when

if TYPE_CHECKING:
    from modelrepo.services import Services

OWNER = "NS[/NAME]"


async def _scope(services: Services, owner: str) -> dict:
    """NS: the namespace's webhooks; NS/NAME: the model's (as the two REST routes)."""
    ns, _, name = owner.partition("/")
    return await services.models.webhook_scope(LOCAL_ADMIN, ns, name or None)


@click.group()
def webhook() -> None:
    """Manage webhooks: list, deliveries, redeliver."""


@admin_command(webhook, "list")
@click.argument("owner", metavar=OWNER)
async def webhook_list(services: Services, owner: str) -> None:
    """List the webhooks of namespace NS or model NS/NAME."""
    hooks = await services.webhooks.list(**await _scope(services, owner))
    echo_table([[h["id"], h["url"], ",".join(h["events"]), "yes" if h["active"] else "no"] for h in hooks],
               ["ID", "URL", "EVENTS", "ACTIVE"])


@admin_command(webhook, "deliveries")
@click.argument("owner", metavar=OWNER)
@click.argument("webhook_id", metavar="ID", type=ID)
async def webhook_deliveries(services: Services, owner: str, webhook_id: int) -> None:
    """List webhook ID's latest deliveries, newest first.

    The first column is the delivery id `webhook redeliver` takes."""
    rows = await services.webhooks.deliveries(webhook_id, **await _scope(services, owner))
    echo_table([[d["id"], d["event"], d["status"], d["attempts"], d["response_code"], d["error"],
                 when(d["created_at"])] for d in rows],
               ["DELIVERY", "EVENT", "STATUS", "ATTEMPTS", "CODE", "ERROR", "CREATED"])


@admin_command(webhook, "redeliver")
@click.argument("owner", metavar=OWNER)
@click.argument("webhook_id", metavar="ID", type=ID)
@click.argument("delivery_id", metavar="DELIVERY")
async def webhook_redeliver(services: Services, owner: str, webhook_id: int, delivery_id: str) -> None:
    """Send delivery DELIVERY of webhook ID again.

    Same delivery id, same payload; the running daemon's worker sends it within seconds."""
    await services.webhooks.redeliver(webhook_id, delivery_id, **await _scope(services, owner))
    click.echo(f"queued delivery {delivery_id} again; the running daemon sends it within seconds")
