"""The internal API the receive hooks call, served only on a unix socket in DATA/run/.

It is a separate application on a separate runner: public middlewares and routes never apply to
it and it is unreachable over TCP. Every call must present the per-push secret the daemon put in
git's environment.
"""

import json

import structlog
from aiohttp import web

from modelrepo.keys import PUSHES, RECEIVE
from modelrepo.push.facts import parse_updates

log = structlog.get_logger("modelrepo.hooks")
MAX_BODY = 16 * 1024 * 1024


async def _session(request: web.Request):
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None, None
    session = request.app[PUSHES].lookup(body.get("secret")) if isinstance(body, dict) else None
    return session, body


async def pre_receive(request: web.Request) -> web.Response:
    session, body = await _session(request)
    if session is None:
        return web.json_response({"ok": False, "messages": [
            "push refused: pushes must go through the modelrepo server (no valid push session)"]})
    structlog.contextvars.bind_contextvars(request_id=session.request_id, user=session.identity.name)
    env = body.get("env") if isinstance(body.get("env"), dict) else {}
    cwd = body.get("cwd") if isinstance(body.get("cwd"), str) else ""
    try:
        problems = await request.app[RECEIVE].pre(session, parse_updates(body.get("refs")), env, cwd)
    except Exception:
        log.exception("pre_receive_failed")
        problems = [f"push refused: the server could not check this push (request id {session.request_id})"]
    if problems:
        header = f"modelrepo: push refused ({len(problems)} problem{'s' if len(problems) > 1 else ''}):"
        return web.json_response({"ok": False, "messages": [header, *(f"  - {p}" for p in problems)]})
    return web.json_response({"ok": True, "messages": []})


async def post_receive(request: web.Request) -> web.Response:
    session, body = await _session(request)
    if session is None:
        return web.json_response({"ok": False, "messages": ["no valid push session"]})
    structlog.contextvars.bind_contextvars(request_id=session.request_id, user=session.identity.name)
    try:
        await request.app[RECEIVE].post(session, parse_updates(body.get("refs")))
    except Exception:
        log.exception("post_receive_failed")
        return web.json_response({"ok": False, "messages": [
            "modelrepo: warning: the push landed but the catalog could not be updated; it will catch up on "
            "the next push"]})
    return web.json_response({"ok": True, "messages": []})


def create_internal_app(public: web.Application) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[PUSHES] = public[PUSHES]
    app[RECEIVE] = public[RECEIVE]
    app.router.add_post("/hooks/pre-receive", pre_receive)
    app.router.add_post("/hooks/post-receive", post_receive)
    return app
