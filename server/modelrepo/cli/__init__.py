"""The ``modelrepo`` command: the daemon (serve) and the admin commands, grouped by what they
manage."""
