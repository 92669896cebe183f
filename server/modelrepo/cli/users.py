"""``modelrepo user``: create, list, disable and enable users."""

from __future__ import annotations

import sys

from typing import TYPE_CHECKING

import click

from modelrepo.cli.common import LOCAL_ADMIN, admin_command, echo_table, when

if TYPE_CHECKING:
    from modelrepo.services import Services


@click.group()
def user() -> None:
    """Manage users: create, list, disable, enable, set-password."""


@admin_command(user, "create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="make the user a site administrator")
async def user_create(services: Services, name: str, admin: bool) -> None:
    """Create a user.

    Then give it a token with `modelrepo token create`, and a role with `namespace add-member`."""
    u = await services.accounts.create_user_as(LOCAL_ADMIN, name, admin)
    click.echo(f"created user {u.name}{' (site admin)' if u.is_admin else ''}")


@admin_command(user, "list")
async def user_list(services: Services) -> None:
    """List every user: admin, disabled, created."""
    echo_table([[u.name, "yes" if u.is_admin else "no", when(u.disabled_at) or "no", when(u.created_at)]
                for u in await services.accounts.list_users(LOCAL_ADMIN)],
               ["USER", "ADMIN", "DISABLED", "CREATED"])


@admin_command(user, "disable")
@click.argument("name")
async def user_disable(services: Services, name: str) -> None:
    """Disable a user: its tokens stop working at once.

    The tokens are kept: `user enable` makes them work again."""
    u = await services.accounts.set_disabled(LOCAL_ADMIN, name, True)
    click.echo(f"disabled user {u.name}: its tokens no longer authenticate")


@admin_command(user, "enable")
@click.argument("name")
async def user_enable(services: Services, name: str) -> None:
    """Enable a disabled user again: its tokens work again."""
    u = await services.accounts.set_disabled(LOCAL_ADMIN, name, False)
    click.echo(f"enabled user {u.name}")


@admin_command(user, "set-password")
@click.argument("name")
async def user_set_password(services: Services, name: str) -> None:
    """Set a web UI password (prompted, or read from stdin).

    Ends NAME's web UI sessions; tokens keep working."""
    from modelrepo.accounts import passwords

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    await passwords.set_password(services.accounts, LOCAL_ADMIN, name, password)
    click.echo(f"password set for {name}; their web UI sessions were ended")
