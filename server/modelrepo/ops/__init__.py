"""Operator commands that work on a data directory, usually while the daemon runs.

- ``gc``: delete LFS objects no repository links (after a grace period), crash leftovers and
  stale partial uploads; repack repositories that collected loose objects or many packs.
- ``fsck``: re-hash LFS objects, ``git fsck`` each repository, and check that every LFS pointer
  on every branch and tag has an object its model may read.
- ``backup`` / ``restore``: a consistent copy of catalog, repositories and local LFS objects
  taken while pushes land, and its verified restore into an empty data directory.

The modules return plain reports; ``cli_ops`` turns them into words for people.
"""

from modelrepo.errors import ModelrepoError


class OpsError(ModelrepoError):
    """An operator command cannot go on; the message says what is wrong and what to do."""

    code = "ops_error"
