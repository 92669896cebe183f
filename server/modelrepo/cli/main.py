"""The ``modelrepo`` command: the root group, assembled from one module per command group.

Each module defines its commands and imports only ``cli.common`` (and the services); this one
imports them all and nothing imports it, so the package has no import cycle.
"""

import click

from modelrepo.cli import (
    catalog,
    deployments,
    inspect,
    models,
    namespaces,
    ops,
    serve,
    tokens,
    users,
    webhooks,
)


@click.group()
@click.version_option(package_name="modelrepo")
def main() -> None:
    """modelrepo: Git-versioned model repository server.

    `serve` runs the daemon; the other commands work on its data directory (--data, default
    ./data), also while it runs, as the local administrator."""


for command in (serve.serve, users.user, tokens.token, namespaces.namespace, models.model,
                deployments.deployment, webhooks.webhook, *ops.COMMANDS,
                inspect.inspect_command, catalog.catalog):
    main.add_command(command)
