"""Pages that change a model: releases (tags), deployments, settings and deletion, namespace
members. Each form posts to the service the REST API calls, so refusals (immutable tags, the card
gate, deployment pins, the delete check) are the same ones, shown in words on the page."""


from aiohttp import web

from modelrepo.accounts.access import ROLES, VISIBILITIES, check_model_role
from modelrepo.errors import InvalidInput, ModelrepoError
from modelrepo.git.snapshot import card_at
from modelrepo.keys import ACCOUNTS, DEPLOYMENTS, MODELS, REFS, SETTINGS, WEBHOOKS
from modelrepo.models.service import Model
from modelrepo.ui.browse import model_for_read, repo_context
from modelrepo.ui.guard import FORM, redirect, viewer
from modelrepo.ui.render import page, render
from modelrepo.web.routing import base_url, int_id


def _field(request: web.Request, name: str) -> str:
    return str(request[FORM].get(name, "")).strip()


def _clone_url(request: web.Request, model: Model) -> str:
    return f"{base_url(request)}/{model.full_name}.git"


async def _tags_page(request: web.Request, model: Model, *, error: str | None = None, form: dict | None = None,
                     status: int = 200) -> web.Response:
    me = viewer(request)
    models, deployments = request.app[MODELS], request.app[DEPLOYMENTS]
    refs = await models.refs(me, model.namespace, model.name)
    pinned = await deployments.live_refs(model.id)
    schema = request.app[SETTINGS].push.model_card_schema

    def states(path) -> dict[str, list[str]]:
        # The card gate of each release: what a deployment of it would be refused for.
        out = {}
        for tag in refs["tags"]:
            card = card_at(path, f"refs/tags/{tag['name']}", schema)
            out[tag["name"]] = deployments.gate(card, tag["name"]) if card is not None else ["unreadable"]
        return out

    gate = await models.read(model, states)
    tags = sorted(refs["tags"], key=lambda t: (t.get("tagger") or {}).get("date") or "", reverse=True)
    return render(request, "tags.html", {
        **repo_context(request, model, "tags"), "tags": tags, "gate": gate,
        "pinned": {ref.removeprefix("refs/tags/"): name for ref, name in pinned.items()},
        "can_write": _can_write(request, model), "error": error,
        "form": form or {"revision": model.default_branch}, "created": request.query.get("created")}, status)


def _can_write(request: web.Request, model: Model) -> bool:
    """Whether to show the forms: the access table's own answer, not a copy of it."""
    try:
        check_model_role(viewer(request), model.role, "writer", "write")
    except ModelrepoError:
        return False
    return True


@page
async def tags(request: web.Request) -> web.Response:
    return await _tags_page(request, await model_for_read(request))


@page
async def create_tag(request: web.Request) -> web.Response:
    model = await model_for_read(request)
    form = {k: _field(request, k) for k in ("tag", "revision", "message")}
    try:
        if not form["tag"] or not form["revision"] or not form["message"]:
            raise InvalidInput("Tag name, revision and message are all required.")
        await request.app[REFS].create_tag(viewer(request), model.namespace, model.name, form["tag"],
                                           form["revision"], form["message"], _clone_url(request, model))
    except ModelrepoError as exc:
        return await _tags_page(request, model, error=exc.message, form=form, status=exc.status)
    return redirect(f"/{model.full_name}/tags?created={form['tag']}")


async def _deployments_page(request: web.Request, model: Model, *, error: str | None = None,
                            form: dict | None = None, status: int = 200) -> web.Response:
    me = viewer(request)
    found = await request.app[DEPLOYMENTS].list(me, model.namespace, model.name)
    refs = await request.app[MODELS].refs(me, model.namespace, model.name)
    return render(request, "deployments.html", {
        **repo_context(request, model, "deployments"), "deployments": list(reversed(found)),
        "tags": [t["name"] for t in refs["tags"]], "can_write": _can_write(request, model), "error": error,
        "form": form or {}, "created": request.query.get("created")}, status)


@page
async def deployments(request: web.Request) -> web.Response:
    return await _deployments_page(request, await model_for_read(request))


@page
async def create_deployment(request: web.Request) -> web.Response:
    model = await model_for_read(request)
    form = {"name": _field(request, "name"), "revision": _field(request, "revision")}
    try:
        dep = await request.app[DEPLOYMENTS].create(viewer(request), model.namespace, model.name, form)
    except ModelrepoError as exc:
        return await _deployments_page(request, model, error=exc.message, form=form, status=exc.status)
    return redirect(f"/{model.full_name}/deployments?created={dep['id']}")


async def _settings_page(request: web.Request, model: Model, *, error: str | None = None,
                         notice: str | None = None, status: int = 200) -> web.Response:
    me = viewer(request)
    hooks = await request.app[WEBHOOKS].list(namespace_id=None, model_id=model.id)
    for hook in hooks:
        hook["deliveries"] = await request.app[WEBHOOKS].deliveries(hook["id"], namespace_id=None,
                                                                     model_id=model.id, limit=20)
    refs = await request.app[MODELS].refs(me, model.namespace, model.name)
    return render(request, "settings.html", {
        **repo_context(request, model, "settings"), "hooks": hooks, "visibilities": VISIBILITIES,
        "branches": [b["name"] for b in refs["branches"]] or [model.default_branch], "error": error,
        "notice": notice or request.query.get("notice")}, status)


async def _admin_model(request: web.Request) -> Model:
    return await request.app[MODELS].for_admin(viewer(request), request.match_info["ns"], request.match_info["name"])


@page
async def settings(request: web.Request) -> web.Response:
    return await _settings_page(request, await _admin_model(request))


@page
async def save_settings(request: web.Request) -> web.Response:
    model = await _admin_model(request)
    me = viewer(request)
    branch = _field(request, "default_branch")
    try:
        if branch and branch != model.default_branch:
            await request.app[REFS].set_default_branch(me, model.namespace, model.name, branch,
                                                       _clone_url(request, model))
        model = await request.app[MODELS].update(me, model.namespace, model.name,
                                                 description=str(request[FORM].get("description", "")),
                                                 visibility=_field(request, "visibility") or model.visibility)
    except ModelrepoError as exc:
        return await _settings_page(request, model, error=exc.message, status=exc.status)
    return redirect(f"/{model.full_name}/settings?notice=Saved.")


@page
async def redeliver(request: web.Request) -> web.Response:
    model = await _admin_model(request)
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise InvalidInput("webhook id must be an integer")
    await request.app[WEBHOOKS].redeliver(int_id(request), request.match_info["delivery"], namespace_id=None,
                                          model_id=model.id)
    return redirect(f"/{model.full_name}/settings?notice=Delivery queued again.")


@page
async def delete_model(request: web.Request) -> web.Response:
    """Refused (with the reason, e.g. live deployments) by the same dependency check as the API."""
    model = await _admin_model(request)
    if _field(request, "confirm") != model.name:
        return await _settings_page(request, model, status=422,
                                    error=f"Type the model name ({model.name}) to confirm the deletion.")
    try:
        await request.app[MODELS].delete(viewer(request), model.namespace, model.name)
    except ModelrepoError as exc:
        return await _settings_page(request, model, error=exc.message, status=exc.status)
    return redirect(f"/{model.namespace}")


@page
async def set_member(request: web.Request) -> web.Response:
    ns = request.match_info["ns"]
    user, role = _field(request, "user"), _field(request, "role")
    accounts = request.app[ACCOUNTS]
    if role == "remove":
        await accounts.remove_member_as(viewer(request), ns, user)
    elif role in ROLES:
        await accounts.set_member_as(viewer(request), ns, user, role)
    else:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)} or remove")
    return redirect(f"/{ns}")
