"""The web UI: server-rendered pages over the same services as the APIs (no second copy of any
rule or query), Jinja2 templates and one stylesheet in this package, no JavaScript.

``add_routes(app)`` is the one call app.py makes. UI routes are registered after the git, LFS,
Hub and REST routes and never take their paths: aiohttp matches fixed paths and longer prefixes
first, and a page whose first segment is reserved for another door (names.RESERVED) answers that
door's usual JSON 404.
"""

import hashlib
import hmac

from aiohttp import web

from modelrepo.accounts.sessions import Sessions
from modelrepo.keys import CATALOG, SERVICES, SETTINGS
from modelrepo.ui import account, browse, release, render
from modelrepo.ui.guard import UI, UiState
from modelrepo.ui.markdown import CardCache

M = "/{ns}/{name}"


def add_routes(app: web.Application) -> None:
    settings = app[SETTINGS]
    key = app[SERVICES].signing_key
    app[UI] = UiState(
        sessions=Sessions(app[CATALOG], settings.auth.session_idle, settings.auth.session_absolute),
        csrf_key=hmac.new(key, b"modelrepo web UI CSRF", hashlib.sha256).digest(),
        secure_cookies=(settings.server.public_url or "").lower().startswith("https://"),
        cards=CardCache())
    render.setup(app)
    r = app.router
    r.add_get("/-/style.css", render.stylesheet)
    r.add_get("/", browse.explore)
    r.add_get("/login", account.login_form)
    r.add_post("/login", account.login)
    r.add_post("/logout", account.logout)
    r.add_get("/new", account.new_model_form)
    r.add_post("/new", account.create_model)
    r.add_get("/settings/tokens", account.tokens)
    r.add_post("/settings/tokens", account.create_token)
    r.add_post("/settings/tokens/{id}/revoke", account.revoke_token)
    r.add_get("/{ns}", browse.namespace)
    r.add_post("/{ns}/-/members", release.set_member)
    r.add_get(M, browse.model_page)
    r.add_get(M + "/tree/{rev}", browse.tree)
    r.add_get(M + "/tree/{rev}/{path:.+}", browse.tree)
    r.add_get(M + "/blob/{rev}/{path:.+}", browse.blob)
    r.add_get(M + "/commits/{rev}", browse.commits)
    r.add_get(M + "/commit/{sha}", browse.commit)
    r.add_get(M + "/tags", release.tags)
    r.add_post(M + "/tags", release.create_tag)
    r.add_get(M + "/deployments", release.deployments)
    r.add_post(M + "/deployments", release.create_deployment)
    r.add_get(M + "/settings", release.settings)
    r.add_post(M + "/settings", release.save_settings)
    r.add_post(M + "/settings/delete", release.delete_model)
    r.add_post(M + "/settings/webhooks/{id}/deliveries/{delivery}/redeliver", release.redeliver)


