"""Pages about the person: sign in and out, their tokens, creating a model."""

import structlog
from aiohttp import web

from modelrepo.accounts import passwords
from modelrepo.accounts.access import SCOPES, role_level
from modelrepo.errors import InvalidInput, ModelrepoError, TooManyRequests
from modelrepo.keys import ACCOUNTS, LIMITER, METRICS, MODELS, SETTINGS
from modelrepo.ui.guard import (
    FORM,
    SESSION,
    SESSION_COOKIE,
    UI,
    local_path,
    login_redirect,
    redirect,
    set_cookie,
    viewer,
)
from modelrepo.ui.render import page, render
from modelrepo.web.routing import client_address

log = structlog.get_logger("modelrepo.ui")


@page
async def login_form(request: web.Request) -> web.Response:
    return render(request, "login.html", {"title": "Sign in", "next": local_path(request.query.get("next")),
                                          "username": "", "error": None})


@page
async def login(request: web.Request) -> web.Response:
    """Failed sign-ins count against the same per-address guard as failed tokens (429 once over)."""
    form = request[FORM]
    username, password = str(form.get("username", "")), str(form.get("password", ""))
    target = local_path(str(form.get("next", "/")))
    limiter, addr = request.app[LIMITER], client_address(request, request.app[SETTINGS].server)
    retry = await limiter.retry_after(addr)
    if retry is not None:
        request.app[METRICS].auth_failures.labels("yes").inc()
        log.warning("auth_rate_limited", remote=addr, retry_after=round(retry))
        raise TooManyRequests(f"Too many failed sign-ins from your address; try again in {retry:.0f} s.", retry)
    identity = await passwords.verify(request.app[ACCOUNTS], username, password) if username and password else None
    if identity is None:
        await limiter.record(addr)
        request.app[METRICS].auth_failures.labels("no").inc()
        log.info("auth_failed", remote=addr, via="ui")
        return render(request, "login.html", {"title": "Sign in", "next": target, "username": username,
                                              "error": "Wrong username or password."}, 401)
    if SESSION in request:  # signing in again (as someone else, perhaps) ends the old session
        await request.app[UI].sessions.end(request[SESSION])
    session_id = await request.app[UI].sessions.start(identity.user_id)
    log.info("signed_in", user=identity.name)
    response = redirect(target)
    set_cookie(response, request, SESSION_COOKIE, session_id)
    return response


@page
async def logout(request: web.Request) -> web.Response:
    if SESSION in request:
        await request.app[UI].sessions.end(request[SESSION])
    response = redirect("/")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def _tokens_page(request: web.Request, *, new_token: str | None = None, error: str | None = None,
                       status: int = 200) -> web.Response:
    me = viewer(request)
    tokens = await request.app[ACCOUNTS].list_tokens(me, me.name or "")
    return render(request, "tokens.html", {"title": "Access tokens", "tokens": tokens, "scopes": SCOPES,
                                           "new_token": new_token, "error": error}, status)


@page
async def tokens(request: web.Request) -> web.Response:
    if viewer(request).anonymous:
        return login_redirect(request)
    return await _tokens_page(request)


@page
async def create_token(request: web.Request) -> web.Response:
    """The token is shown once, in this response, and never again (only its hash is kept)."""
    me = viewer(request)
    form = request[FORM]
    scopes = [s for s in form.getall("scope", []) if s in SCOPES] or ["read"]
    scope = max(scopes, key=SCOPES.index)  # nested scopes, as in the REST API
    try:
        token, _ = await request.app[ACCOUNTS].create_token_as(me, me.name or "", scope=scope,
                                                               name=str(form.get("name", "")).strip())
    except InvalidInput as exc:
        return await _tokens_page(request, error=exc.message, status=exc.status)
    return await _tokens_page(request, new_token=token, status=201)


@page
async def revoke_token(request: web.Request) -> web.Response:
    me = viewer(request)
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise InvalidInput("token id must be an integer")
    await request.app[ACCOUNTS].revoke_token(me, me.name or "", int(raw))
    return redirect("/settings/tokens")


async def _writable_namespaces(request: web.Request) -> list[str]:
    me = viewer(request)
    found = await request.app[ACCOUNTS].list_namespaces(me)
    return [n["name"] for n in found if me.is_admin or role_level(n["role"]) >= role_level("writer")]


@page
async def new_model_form(request: web.Request) -> web.Response:
    if viewer(request).anonymous:
        return login_redirect(request)
    return render(request, "new.html", {"title": "New model", "namespaces": await _writable_namespaces(request),
                                        "form": {"visibility": "private"}, "error": None})


@page
async def create_model(request: web.Request) -> web.Response:
    form = request[FORM]
    values = {k: str(form.get(k, "")).strip() for k in ("namespace", "name", "description", "visibility")}
    try:
        model = await request.app[MODELS].create(viewer(request), values["namespace"], values["name"],
                                                 description=values["description"],
                                                 visibility=values["visibility"] or "private")
    except ModelrepoError as exc:
        return render(request, "new.html", {"title": "New model", "namespaces": await _writable_namespaces(request),
                                            "form": values, "error": exc.message}, exc.status)
    return redirect(f"/{model.full_name}")
