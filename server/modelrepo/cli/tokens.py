"""``modelrepo token``: create, list and revoke a user's tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from modelrepo.accounts.access import SCOPES
from modelrepo.cli.common import ID, LOCAL_ADMIN, admin_command, echo_table, when

if TYPE_CHECKING:
    from modelrepo.services import Services


@click.group()
def token() -> None:
    """Manage tokens: create, list, revoke."""


@admin_command(token, "create")
@click.argument("user_name", metavar="USER")
@click.option("--scope", type=click.Choice(SCOPES), default="write", show_default=True)
@click.option("--name", "label", default="", help="a label to recognise the token by")
async def token_create(services: Services, user_name: str, scope: str, label: str) -> None:
    """Create a token for USER and print it (shown once).

    The catalog keeps only its hash: it cannot be shown again; revoke it and make another."""
    secret, _ = await services.accounts.create_token_as(LOCAL_ADMIN, user_name, scope=scope, name=label)
    click.echo(secret)


@admin_command(token, "list")
@click.argument("user_name", metavar="USER")
async def token_list(services: Services, user_name: str) -> None:
    """List USER's tokens: id, label, scope, last use."""
    echo_table([[t["id"], t["name"], t["scopes"][-1], when(t["created_at"]), when(t["last_used_at"])]
                for t in await services.accounts.list_tokens(LOCAL_ADMIN, user_name)],
               ["ID", "NAME", "SCOPE", "CREATED", "LAST USED"])


@admin_command(token, "revoke")
@click.argument("user_name", metavar="USER")
@click.argument("token_id", metavar="ID", type=ID)
async def token_revoke(services: Services, user_name: str, token_id: int) -> None:
    """Revoke USER's token ID; it stops working at once.

    The ID is the first column of `token list USER`."""
    await services.accounts.revoke_token(LOCAL_ADMIN, user_name, token_id)
    click.echo(f"revoked token {token_id} of {user_name}")
