"""Answering in HTML: the ``page`` wrapper every UI handler wears, templates (Jinja2 through
aiohttp-jinja2, autoescaped) and their filters, error pages, and the one stylesheet."""

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from importlib import resources

import aiohttp_jinja2
import jinja2
import structlog
from aiohttp import web

from modelrepo.errors import ModelrepoError, Unauthenticated, model_not_found
from modelrepo.keys import SETTINGS
from modelrepo.names import RESERVED
from modelrepo.ui.guard import (
    BROWSER,
    BROWSER_COOKIE,
    CSRF_FIELD,
    FORM,
    SESSION,
    check_csrf,
    csrf_token,
    login_redirect,
    resolve_viewer,
    set_cookie,
    viewer,
)

log = structlog.get_logger("modelrepo.ui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS_TITLES = {400: "Bad request", 401: "Sign-in required", 403: "Forbidden", 404: "Not found",
                  409: "Conflict", 413: "Too large", 422: "Cannot do that", 429: "Too many attempts",
                  500: "Server error", 503: "Unavailable"}


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def when(ts: float | int | str | None) -> str:
    """A timestamp (epoch seconds or ISO 8601) as a UTC date and time."""
    if ts is None or ts == "":
        return ""
    if isinstance(ts, str):
        try:
            dt = datetime.fromisoformat(ts)
        except ValueError:
            return ts
    else:
        dt = datetime.fromtimestamp(ts, timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def ago(ts: float | None) -> str:
    if ts is None:
        return ""
    seconds = max(0, time.time() - ts)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= length:
            n = int(seconds // length)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("modelrepo.ui", "templates"),
                               autoescape=jinja2.select_autoescape(default=True), undefined=jinja2.Undefined,
                               trim_blocks=True, lstrip_blocks=True)
    env.filters.update(size=human_size, when=when, ago=ago)


def render(request: web.Request, template: str, context: dict, status: int = 200) -> web.Response:
    ctx = {"viewer": viewer(request), "csrf_field": CSRF_FIELD, "csrf": csrf_token(request),
           "signed_in": SESSION in request, "path": request.path, "q": "", **context}
    return aiohttp_jinja2.render_template(template, request, ctx, status=status)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    title = _STATUS_TITLES.get(status, "Error")
    return render(request, "error.html", {"title": title, "status": status, "message": message}, status)


# Applied to every UI answer: no script may run at all (the UI needs none), nothing is framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' https:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def page(handler: Handler) -> Handler:
    """Wrap a UI handler: viewer, CSRF on POST, typed errors as HTML pages, security headers."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if request.match_info.get("ns", "").lower() in RESERVED:
            raise web.HTTPNotFound()  # another door's path: its usual JSON 404, not a UI page
        await resolve_viewer(request)
        try:
            if (viewer(request).anonymous and not request.app[SETTINGS].auth.allow_anonymous_read
                    and request.path != "/login"):
                return _finish(request, login_redirect(request))
            if request.method == "POST":
                request[FORM] = await check_csrf(request)
            response = await handler(request)
        except ModelrepoError as exc:
            if isinstance(exc, Unauthenticated):
                if "name" in request.match_info:
                    # Anonymous visitors cannot tell a private model from a missing one.
                    exc = model_not_found()
                elif request.method == "GET":
                    response = login_redirect(request)
                    return _finish(request, response)
            response = error_page(request, exc.status, exc.message)
            response.headers.update(getattr(exc, "headers", {}))  # Retry-After of a 429
        except Exception:
            log.exception("ui_error", path=request.path)
            response = error_page(request, 500, "Something went wrong on our side. The error has been logged.")
        return _finish(request, response)

    wrapped.ui_page = True  # type: ignore[attr-defined]  # the authenticate middleware lets these through
    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _finish(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    response.headers.update(SECURITY_HEADERS)
    if SESSION not in request and request.cookies.get(BROWSER_COOKIE) != request[BROWSER]:
        set_cookie(response, request, BROWSER_COOKIE, request[BROWSER])
    return response


_CSS: bytes | None = None


async def stylesheet(request: web.Request) -> web.Response:
    global _CSS  # noqa: PLW0603 - read once from the package
    if _CSS is None:
        _CSS = resources.files("modelrepo.ui").joinpath("static/style.css").read_bytes()
    return web.Response(body=_CSS, content_type="text/css", headers={"Cache-Control": "public, max-age=3600",
                                                                     "X-Content-Type-Options": "nosniff"})


stylesheet.ui_page = True  # type: ignore[attr-defined]  # reachable before sign-in (the login page uses it)
