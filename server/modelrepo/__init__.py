"""modelrepo: a self-hosted, Git-versioned model repository."""

__version__ = "0.1.0"
