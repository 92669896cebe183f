"""Templates (Jinja2 through aiohttp-jinja2, autoescaped), the filters they use, error pages and
the one stylesheet."""

import time
from datetime import datetime, timezone
from importlib import resources

import aiohttp_jinja2
import jinja2
from aiohttp import web

from modelrepo.ui.guard import CSRF_FIELD, SESSION, csrf_token, viewer

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


_CSS: bytes | None = None


async def stylesheet(request: web.Request) -> web.Response:
    global _CSS  # noqa: PLW0603 - read once from the package
    if _CSS is None:
        _CSS = resources.files("modelrepo.ui").joinpath("static/style.css").read_bytes()
    return web.Response(body=_CSS, content_type="text/css", headers={"Cache-Control": "public, max-age=3600",
                                                                     "X-Content-Type-Options": "nosniff"})


stylesheet.ui_page = True  # type: ignore[attr-defined]  # reachable before sign-in (the login page uses it)
