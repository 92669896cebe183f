"""Errors in the Hugging Face Hub's shape: the client maps X-Error-Code to its own exceptions, and
on an http:// endpoint it maps nothing without it."""

import re

from modelrepo.errors import EntryNotFound, ModelrepoError

_HUB_CODES = {"model_not_found": "RepoNotFound", "revision_not_found": "RevisionNotFound",
              "entry_not_found": "EntryNotFound"}
# Anything but printable ASCII: a control character in a header value makes aiohttp drop the
# connection, and the message may quote a client's path or revision.
_UNSAFE = re.compile(r"[^\x20-\x7e]")


def header_safe(text: str, limit: int = 500) -> str:
    return _UNSAFE.sub("?", text)[:limit]


def hub_error_headers(exc: ModelrepoError | None, code: str, message: str) -> dict[str, str]:
    """X-Error-Code for the client's exception mapping (mandatory on http:// endpoints)."""
    headers = {"X-Error-Message": header_safe(message)}
    hub_code = _HUB_CODES.get(code)
    if code == "unauthenticated" and message == "authentication required":
        hub_code = "RepoNotFound"  # anonymous and not public: exactly like missing
    if code == "unauthenticated" and message != "authentication required":
        headers["X-Error-Message"] = "Invalid credentials in Authorization header"
    if hub_code:
        headers["X-Error-Code"] = hub_code
    if isinstance(exc, EntryNotFound) and exc.commit:
        headers["X-Repo-Commit"] = exc.commit
    return headers
