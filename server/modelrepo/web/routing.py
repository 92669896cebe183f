"""Plumbing every HTTP door shares, written once: how a route declares the shape its errors take,
the base URL clients reach us by, the optional ``.git`` suffix, and integer ids.

Each door speaks to a different client, and each client reads errors its own way: git-lfs wants
``{"message"}`` and ``LFS-Authenticate``, huggingface_hub maps ``X-Error-Code`` headers to its
exceptions, scripts read the REST API's ``{"error": {"code", "message"}}``. The route knows which
client it serves, so it says so when it is registered; the middleware never guesses from the path.
"""

import enum
import functools
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from modelrepo.catalog.ranges import MAX_INTEGER
from modelrepo.keys import SETTINGS
from modelrepo.settings import ServerSettings, ip_networks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Catalog ids are INTEGERs, 32-bit on PostgreSQL: a larger number exists nowhere.
MAX_ID = MAX_INTEGER
# The route pattern for an integer id: anything else is not a route (404), not a handler's 500.
ID_PATTERN = "[0-9]{1,19}"


class ErrorShape(enum.Enum):
    # {"error": {"code", "message"}}, WWW-Authenticate on 401. Git's smart HTTP routes use it too:
    # git shows only the status line, and scripts probing a repository URL read the code.
    REST = "rest"
    # git-lfs: {"message", "request_id"}, application/vnd.git-lfs+json, LFS-Authenticate on 401.
    LFS = "lfs"
    # huggingface_hub: {"error": message} and X-Error-Code / X-Error-Message headers.
    HUB = "hub"


def add_route(app: web.Application, method: str, path: str, handler: Handler, shape: ErrorShape) -> None:
    """Register ``handler`` with the error shape of its client."""

    @functools.wraps(handler)
    async def shaped(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    shaped.error_shape = shape  # type: ignore[attr-defined]
    if method == "GET":
        app.router.add_get(path, shaped)  # and HEAD, which hf_hub_download and monitors send
    else:
        app.router.add_route(method, path, shaped)


def error_shape(request: web.Request) -> ErrorShape:
    """The shape the matched route declared; REST for paths no route matched (404/405)."""
    return getattr(request.match_info.handler, "error_shape", ErrorShape.REST)


def base_url(request: web.Request) -> str:
    """server.public_url when configured, else the origin the client reached us by."""
    settings = request.app[SETTINGS]
    return settings.server.public_url.rstrip("/") if settings.server.public_url else str(request.url.origin())


def client_address(request: web.BaseRequest, server: ServerSettings) -> str:
    """Who the client is, for the brute-force guard, per-client limits and logs: the peer, or
    when the peer is a trusted proxy (server.trusted_proxies), the last X-Forwarded-For address no
    trusted proxy has: every proxy appends the address it got the request from, and everything to
    the left of that is whatever the client chose to send."""
    peer = request.remote or "unknown"
    trusted = ip_networks(server.trusted_proxies)
    if not trusted or not _within(peer, trusted):
        return peer
    hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", ()) for h in value.split(",")]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop if _ip(hop) else peer  # a trusted proxy wrote no address: keep the proxy's
    return hops[0] if hops and _ip(hops[0]) else peer  # a client inside a trusted network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _within(address: str, networks: tuple) -> bool:
    ip = _ip(address)
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


def repo_name(request: web.Request) -> tuple[str, str]:
    """(namespace, model) of a repository route; ``{name}`` may carry the ``.git`` suffix or not."""
    name = request.match_info["name"]
    return request.match_info["ns"], name.removesuffix(".git")


def clone_url(request: web.Request) -> str:
    ns, name = repo_name(request)
    return f"{base_url(request)}/{ns}/{name}.git"


def int_id(request: web.Request, key: str = "id") -> int:
    """An id matched by ``ID_PATTERN``. Past the catalog's range it is 0, which no row has, so the
    service answers with its own not-found rather than the database overflowing."""
    value = int(request.match_info[key])
    return value if value <= MAX_ID else 0
