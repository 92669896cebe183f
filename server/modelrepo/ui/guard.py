"""Who is looking at a page, and proof that a form was sent by our own page.

A browser is identified by its session cookie (accounts/sessions.py); a program may still send
its token in the Authorization header (the authenticate middleware resolved it already). Cookies
are read here only, for UI routes only: the git, LFS, Hub and REST doors never accept a cookie,
so they stay immune to cross-site requests by construction.

CSRF: every form carries HMAC(key, what the browser is bound to) -- the session id once signed in,
a random pre-session cookie before (the sign-in form). A POST whose token does not match is
refused before its handler runs, so it changes nothing.
"""

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import structlog
from aiohttp import web
from multidict import MultiDictProxy

from modelrepo.accounts.access import ANONYMOUS, Identity
from modelrepo.accounts.sessions import Sessions
from modelrepo.errors import Forbidden, ModelrepoError, Unauthenticated, model_not_found
from modelrepo.keys import SETTINGS
from modelrepo.names import RESERVED
from modelrepo.ui.markdown import CardCache
from modelrepo.web.middlewares import identity_of

SESSION_COOKIE = "mr_session"
BROWSER_COOKIE = "mr_browser"
CSRF_FIELD = "csrf_token"
log = structlog.get_logger("modelrepo.ui")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class UiState:
    sessions: Sessions
    csrf_key: bytes
    secure_cookies: bool
    cards: CardCache


UI = web.AppKey("ui", UiState)
VIEWER = web.RequestKey("ui_viewer", Identity)
SESSION = web.RequestKey("ui_session", str)
BROWSER = web.RequestKey("ui_browser", str)
FORM = web.RequestKey("ui_form", MultiDictProxy)

# Applied to every UI answer: no script may run at all (the UI needs none), nothing is framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' https:; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def viewer(request: web.Request) -> Identity:
    return request.get(VIEWER, ANONYMOUS)


def csrf_token(request: web.Request) -> str:
    binding = f"s:{request[SESSION]}" if SESSION in request else f"b:{request[BROWSER]}"
    return hmac.new(request.app[UI].csrf_key, binding.encode(), hashlib.sha256).hexdigest()


async def check_csrf(request: web.Request) -> MultiDictProxy:
    """The posted form, once its CSRF token is proven; Forbidden (403) otherwise."""
    form = await request.post()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(request)):
        raise Forbidden("This form has expired or did not come from this site (missing or invalid CSRF token). "
                        "Go back, reload the page and try again.", code="csrf_failed")
    return form


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", httponly=True, samesite="Lax",
                        secure=request.app[UI].secure_cookies)


def local_path(target: str | None) -> str:
    """Where to go after sign-in: only a path on this site (never //host or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def redirect(location: str) -> web.Response:
    """303: the browser follows with a GET, so a reload never re-sends a form."""
    return web.Response(status=303, headers={"Location": location})


def login_redirect(request: web.Request) -> web.Response:
    return redirect("/login?next=" + quote(request.path_qs, safe="/"))


async def _resolve_viewer(request: web.Request) -> None:
    identity = identity_of(request)  # a token in the Authorization header, if any
    sid = request.cookies.get(SESSION_COOKIE)
    if identity.anonymous and sid:
        found = await request.app[UI].sessions.identity(sid)
        if found is not None:
            identity = found
            request[SESSION] = sid
    browser = request.cookies.get(BROWSER_COOKIE)
    request[BROWSER] = browser if browser and len(browser) <= 64 else secrets.token_urlsafe(24)
    request[VIEWER] = identity


def page(handler: Handler) -> Handler:
    """Wrap a UI handler: viewer, CSRF on POST, typed errors as HTML pages, security headers."""
    from modelrepo.ui.render import error_page  # noqa: PLC0415 - render imports this module

    async def wrapped(request: web.Request) -> web.StreamResponse:
        if request.match_info.get("ns", "").lower() in RESERVED:
            raise web.HTTPNotFound()  # another door's path: its usual JSON 404, not a UI page
        await _resolve_viewer(request)
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
