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
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from modelrepo.accounts.access import ANONYMOUS, Identity
from modelrepo.accounts.sessions import Sessions
from modelrepo.errors import Forbidden
from modelrepo.ui.markdown import CardCache
from modelrepo.web.middlewares import identity_of

SESSION_COOKIE = "mr_session"
BROWSER_COOKIE = "mr_browser"
CSRF_FIELD = "csrf_token"


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


async def resolve_viewer(request: web.Request) -> None:
    """The session (cookie) or token (header) behind a request, and its pre-session browser id."""
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
