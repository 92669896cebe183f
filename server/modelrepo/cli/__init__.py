"""The ``modelrepo`` command: the daemon (serve) and the admin commands, grouped by what they
manage.

Every command module imports only what declaring its commands needs (click, ``cli.common``, the
constant choices); the services, the daemon and the operators' tools are imported inside the
command that runs them. ``modelrepo --help`` and a mistyped option then answer without importing
SQLAlchemy, aiohttp, pygit2 and the inspectors (about 2.5 s of CPU on a small machine), and
tests/unit/test_cli_commands.py keeps it so."""
