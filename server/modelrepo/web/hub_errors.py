"""Errors in the Hugging Face Hub's shape: the client maps X-Error-Code to its own exceptions, and
on an http:// endpoint it maps nothing without it."""

from aiohttp import web

from modelrepo.errors import EntryNotFound, ModelrepoError

_HUB_CODES = {"model_not_found": "RepoNotFound", "revision_not_found": "RevisionNotFound",
              "entry_not_found": "EntryNotFound"}


def is_hub(request: web.Request) -> bool:
    path = request.path
    if path.startswith("/api/"):
        return not path.startswith("/api/v1/")
    return path.split("/")[3:4] == ["resolve"]


def hub_error_headers(exc: ModelrepoError | None, code: str, message: str) -> dict[str, str]:
    """X-Error-Code for the client's exception mapping (mandatory on http:// endpoints)."""
    headers = {"X-Error-Message": message.encode("ascii", "replace").decode()[:500]}
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
