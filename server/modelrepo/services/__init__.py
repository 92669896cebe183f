"""Use cases. No aiohttp here: services take typed values, raise ``modelrepo.errors``."""
