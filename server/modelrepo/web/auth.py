"""Credentials from the Authorization header: Basic (user name + token) or Bearer (token)."""

import base64
import binascii


def parse_authorization(header: str) -> tuple[str | None, str] | None:
    """(user, token) — user None for Bearer, possibly "" for Basic — or None when malformed."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return None, value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, token = decoded.partition(":")
        if not sep or not token:
            return None
        return user, token
    return None
