"""``modelrepo namespace``: namespaces (tenants), their members and quotas."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from modelrepo.accounts.access import ROLES
from modelrepo.cli.common import LOCAL_ADMIN, admin_command, echo_table

if TYPE_CHECKING:
    from modelrepo.services import Services


@click.group()
def namespace() -> None:
    """Manage namespaces (tenants): create, list, members, quotas."""


@admin_command(namespace, "create")
@click.argument("name")
@click.option("--description", default="", help="what the namespace is for")
async def namespace_create(services: Services, name: str, description: str) -> None:
    """Create a namespace (a tenant).

    Models live in a namespace; its members get a role there (reader, writer, admin)."""
    ns = await services.accounts.create_namespace_as(LOCAL_ADMIN, name, description)
    click.echo(f"created namespace {ns.name}")


@admin_command(namespace, "list")
async def namespace_list(services: Services) -> None:
    """List every namespace with its description."""
    echo_table([[n["name"], n["description"]] for n in await services.accounts.list_namespaces(LOCAL_ADMIN)],
               ["NAMESPACE", "DESCRIPTION"])


@admin_command(namespace, "members")
@click.argument("ns")
async def namespace_members(services: Services, ns: str) -> None:
    """List the members of namespace NS and their roles."""
    echo_table([[m["user"], m["role"]] for m in await services.accounts.list_members(LOCAL_ADMIN, ns)],
               ["USER", "ROLE"])


@admin_command(namespace, "add-member")
@click.argument("ns")
@click.argument("user_name", metavar="USER")
@click.option("--role", type=click.Choice(ROLES), required=True)
async def namespace_add_member(services: Services, ns: str, user_name: str, role: str) -> None:
    """Make USER a member of NS, or change its role."""
    m = await services.accounts.set_member_as(LOCAL_ADMIN, ns, user_name, role)
    click.echo(f"{m['user']} is {m['role']} of {m['namespace']}")


@admin_command(namespace, "remove-member")
@click.argument("ns")
@click.argument("user_name", metavar="USER")
async def namespace_remove_member(services: Services, ns: str, user_name: str) -> None:
    """Remove USER from NS; its access ends at once."""
    await services.accounts.remove_member_as(LOCAL_ADMIN, ns, user_name)
    click.echo(f"removed {user_name} from {ns}")


@admin_command(namespace, "set-quota")
@click.argument("ns")
@click.option("--bytes", "bytes_", help="LFS storage quota, e.g. 500G or 1TiB; 'none' for unlimited")
@click.option("--models", "models_", help="number of models; 'none' for unlimited")
async def namespace_set_quota(services: Services, ns: str, bytes_: str | None, models_: str | None) -> None:
    """Set NS's quotas: LFS bytes and number of models.

    An option left out keeps its current value; 'none' lifts the limit."""
    from modelrepo.settings import parse_size

    accounts = services.accounts
    current = await accounts.quota((await accounts.get_namespace(ns)).id)

    def value(raw: str | None, old: int | None, parse) -> int | None:
        if raw is None:
            return old
        if raw.lower() in ("none", "unlimited", ""):
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    result = await accounts.set_quota_as(LOCAL_ADMIN, ns, bytes_=value(bytes_, current["bytes"], parse_size),
                                         models_=value(models_, current["models"], int))
    click.echo(f"{result['namespace']}: quota {result['quota']}, usage {result['usage']}")
