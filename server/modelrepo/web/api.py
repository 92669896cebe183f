"""REST API under /api/v1. Each route is declared once in ``ROUTES`` with its request schema, which
both validates bodies (jsonschema) and feeds openapi.json, so the document cannot drift from the
code by construction; a test also checks every registered /api/v1 route is documented."""

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from modelrepo import __version__
from modelrepo.catalog.ranges import MAX_BIGINT, MAX_INTEGER
from modelrepo.errors import InvalidInput
from modelrepo.keys import ACCOUNTS, DEPLOYMENTS, INSPECTIONS, MODELS, REFS, SETTINGS, WEBHOOKS
from modelrepo.models.card import schema_path
from modelrepo.names import NAME_RE, NAME_RULE
from modelrepo.accounts import passwords
from modelrepo.accounts.access import ROLES, SCOPES, VISIBILITIES
from modelrepo.models.webhooks import EVENTS
from modelrepo.web.bodies import read_json
from modelrepo.web.middlewares import identity_of
from modelrepo.web.routing import ID_PATTERN, MAX_ID, ErrorShape, add_route, base_url, clone_url, int_id

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NAME = {"type": "string", "pattern": NAME_RE.pattern, "maxLength": 96, "description": NAME_RULE}
_REF = {"type": "string", "minLength": 1, "maxLength": 255}


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    handler: Handler
    summary: str
    body: dict | None = None
    status: int = 200
    # name -> (description, JSON schema of the value)
    query: dict[str, tuple[str, dict]] = field(default_factory=dict)
    anonymous: bool = False
    # False: an empty body means {} (the schema's defaults say what that does).
    body_required: bool = True


def _schema(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, headers={"Cache-Control": "no-cache"})


_TEXT = {"type": "string"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
_OFFSET = {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0}


def _int_query(request: web.Request, key: str, schema: dict) -> int:
    """An integer query parameter within its documented schema; absent or empty means the default."""
    raw = request.query.get(key, "").strip()
    if not raw:
        return schema["default"]
    lo, hi = schema["minimum"], schema["maximum"]
    if not raw.isdigit() or len(raw) > 12 or not lo <= int(raw) <= hi:
        raise InvalidInput(f"query parameter {key} must be an integer in {lo}..{hi}")
    return int(raw)


# -- handlers -----------------------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", "version": __version__})


async def openapi(request: web.Request) -> web.Response:
    return _json(build_openapi())


async def card_schema(request: web.Request) -> web.Response:
    """The model card schema pushes, tags and Hub commits are judged by (the configured one)."""
    path = request.app[SETTINGS].push.model_card_schema or schema_path()
    return web.Response(body=await asyncio.to_thread(path.read_bytes), content_type="application/schema+json",
                        headers={"Cache-Control": "no-cache"})


async def whoami(request: web.Request) -> web.Response:
    identity = identity_of(request)
    if identity.anonymous:
        return _json({"anonymous": True, "name": None})
    namespaces = await request.app[ACCOUNTS].list_namespaces(identity)
    return _json({"anonymous": False, "name": identity.name, "admin": identity.is_admin,
                  "scopes": list(SCOPES[: SCOPES.index(identity.scope) + 1]) if identity.scope else [],
                  "namespaces": [{"name": n["name"], "role": n["role"]} for n in namespaces if n["role"]]})


CREATE_USER = _schema({"name": _NAME, "admin": {"type": "boolean"}}, ("name",))


async def create_user(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_USER)
    user = await request.app[ACCOUNTS].create_user_as(identity_of(request), body["name"], body.get("admin", False))
    return _json(user.to_json(), 201)


_DEFAULT_SCOPES = ["read", "write"]
CREATE_TOKEN = _schema({"name": {"type": "string", "maxLength": 200, "default": ""},
                        "scopes": {"type": "array", "items": {"enum": list(SCOPES)}, "minItems": 1, "uniqueItems": True,
                                   "default": _DEFAULT_SCOPES}})


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_TOKEN, required=False)
    scopes = body.get("scopes", _DEFAULT_SCOPES)
    scope = max(scopes, key=SCOPES.index)  # scopes are nested: admin implies write implies read
    token, info = await request.app[ACCOUNTS].create_token_as(
        identity_of(request), request.match_info["user"], scope=scope, name=body.get("name", ""))
    return _json({"token": token, **info}, 201)


async def list_tokens(request: web.Request) -> web.Response:
    return _json(await request.app[ACCOUNTS].list_tokens(identity_of(request), request.match_info["user"]))


async def revoke_token(request: web.Request) -> web.Response:
    await request.app[ACCOUNTS].revoke_token(identity_of(request), request.match_info["user"], int_id(request))
    return web.Response(status=204)


SET_PASSWORD = _schema({"password": {"type": "string", "minLength": passwords.MIN_LENGTH,
                                      "maxLength": passwords.MAX_LENGTH}}, ("password",))


async def set_password(request: web.Request) -> web.Response:
    body = await read_json(request, SET_PASSWORD)
    await passwords.set_password(request.app[ACCOUNTS], identity_of(request), request.match_info["user"],
                                 body["password"])
    return web.Response(status=204)


CREATE_NAMESPACE = _schema({"name": _NAME, "description": {"type": "string", "maxLength": 2000}}, ("name",))


async def create_namespace(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_NAMESPACE)
    ns = await request.app[ACCOUNTS].create_namespace_as(identity_of(request), body["name"], body.get("description", ""))
    return _json(ns.to_json(), 201)


async def list_namespaces(request: web.Request) -> web.Response:
    return _json(await request.app[ACCOUNTS].list_namespaces(identity_of(request)))


async def get_namespace(request: web.Request) -> web.Response:
    return _json(await request.app[ACCOUNTS].namespace_json(identity_of(request), request.match_info["ns"]))


# Each within its column: bytes a BIGINT, models an INTEGER (32-bit on PostgreSQL).
_QUOTA_BYTES = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_BIGINT}
_QUOTA_MODELS = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_INTEGER}
# At least one key: an empty body must not clear the quotas it does not mention.
SET_QUOTA = {**_schema({"bytes": _QUOTA_BYTES, "models": _QUOTA_MODELS}), "minProperties": 1}


async def set_quota(request: web.Request) -> web.Response:
    body = await read_json(request, SET_QUOTA)
    return _json(await request.app[ACCOUNTS].set_quota_as(identity_of(request), request.match_info["ns"],
                                                          bytes_=body.get("bytes"), models_=body.get("models")))


async def list_members(request: web.Request) -> web.Response:
    return _json(await request.app[ACCOUNTS].list_members(identity_of(request), request.match_info["ns"]))


SET_MEMBER = _schema({"role": {"enum": list(ROLES)}}, ("role",))


async def set_member(request: web.Request) -> web.Response:
    body = await read_json(request, SET_MEMBER)
    result = await request.app[ACCOUNTS].set_member_as(identity_of(request), request.match_info["ns"],
                                                       request.match_info["user"], body["role"])
    return _json(result)


async def remove_member(request: web.Request) -> web.Response:
    await request.app[ACCOUNTS].remove_member_as(identity_of(request), request.match_info["ns"], request.match_info["user"])
    return web.Response(status=204)


CREATE_MODEL = _schema({"namespace": _NAME, "name": _NAME, "description": {"type": "string", "maxLength": 10000},
                        "visibility": {"enum": list(VISIBILITIES)}, "default_branch": _REF},
                       ("namespace", "name"))


async def create_model(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_MODEL)
    model = await request.app[MODELS].create(
        identity_of(request), body["namespace"], body["name"], description=body.get("description", ""),
        visibility=body.get("visibility", "private"), default_branch=body.get("default_branch"))
    return _json(model.to_json(base_url(request)), 201)


async def list_models(request: web.Request) -> web.Response:
    q = request.query
    found = await request.app[MODELS].list(
        identity_of(request), namespace=q.get("namespace") or None, search=q.get("search") or None,
        tag=q.get("tag") or None, library=q.get("library") or None, pipeline_tag=q.get("pipeline_tag") or None,
        limit=_int_query(request, "limit", _LIMIT), offset=_int_query(request, "offset", _OFFSET))
    base = base_url(request)
    return _json([m.to_json(base) for m in found])


async def get_model(request: web.Request) -> web.Response:
    models = request.app[MODELS]
    model = await models.for_read(identity_of(request), request.match_info["ns"], request.match_info["name"])
    files = await models.files(model)
    return _json({**model.to_json(base_url(request)), "files": files,
                  "refs": await models.refs(identity_of(request), model.namespace, model.name),
                  **await request.app[INSPECTIONS].model_fields(files)})  # inspect: safetensors, gguf, security


UPDATE_MODEL = _schema({"description": {"type": "string", "maxLength": 10000},
                        "visibility": {"enum": list(VISIBILITIES)}, "default_branch": _REF,
                        "allow_force_push": {"type": "boolean"}})


async def update_model(request: web.Request) -> web.Response:
    body = await read_json(request, UPDATE_MODEL)
    ns, name = request.match_info["ns"], request.match_info["name"]
    branch = body.pop("default_branch", None)
    if branch is not None:
        await request.app[REFS].set_default_branch(identity_of(request), ns, name, branch, clone_url(request))
    model = await request.app[MODELS].update(identity_of(request), ns, name, **body)
    return _json(model.to_json(base_url(request)))


async def delete_model(request: web.Request) -> web.Response:
    await request.app[MODELS].delete(identity_of(request), request.match_info["ns"], request.match_info["name"])
    return web.Response(status=204)


async def list_refs(request: web.Request) -> web.Response:
    return _json(await request.app[MODELS].refs(identity_of(request), request.match_info["ns"], request.match_info["name"]))


CREATE_TAG = _schema({"name": _REF, "revision": _REF, "message": {"type": "string", "minLength": 1, "maxLength": 65536}},
                     ("name", "revision", "message"))


async def create_tag(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_TAG)
    tag = await request.app[REFS].create_tag(identity_of(request), request.match_info["ns"], request.match_info["name"],
                                             body["name"], body["revision"], body["message"], clone_url(request))
    return _json(tag, 201)


async def delete_tag(request: web.Request) -> web.Response:
    await request.app[REFS].delete_tag(identity_of(request), request.match_info["ns"], request.match_info["name"],
                                       request.match_info["tag"], clone_url(request))
    return web.Response(status=204)


CREATE_BRANCH = _schema({"name": _REF, "revision": _REF}, ("name", "revision"))


async def create_branch(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_BRANCH)
    branch = await request.app[REFS].create_branch(identity_of(request), request.match_info["ns"],
                                                   request.match_info["name"], body["name"], body["revision"],
                                                   clone_url(request))
    return _json(branch, 201)


async def delete_branch(request: web.Request) -> web.Response:
    await request.app[REFS].delete_branch(identity_of(request), request.match_info["ns"], request.match_info["name"],
                                          request.match_info["branch"], clone_url(request))
    return web.Response(status=204)


# -- webhooks -------------------------------------------------------------------------------------

_EVENTS = {"type": "array", "items": {"enum": list(EVENTS)}, "minItems": 1, "uniqueItems": True}
# What Webhooks.check_url accepts, so that the spec does not promise more than the server takes.
_URL = {"type": "string", "maxLength": 2000, "description": "use an http(s) URL such as https://ci.example.com/hook",
        "pattern": r"^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[!-~]*)?$"}
CREATE_WEBHOOK = _schema({"url": _URL, "secret": {"type": "string", "minLength": 1, "maxLength": 500},
                          "events": _EVENTS, "active": {"type": "boolean"}}, ("url", "secret", "events"))
UPDATE_WEBHOOK = _schema({"url": _URL,
                          "secret": {"type": "string", "minLength": 1, "maxLength": 500},
                          "events": _EVENTS, "active": {"type": "boolean"}})


async def _hook_scope(request: web.Request) -> dict:
    """Webhooks of a namespace or of a model; managing them takes a namespace admin."""
    return await request.app[MODELS].webhook_scope(identity_of(request), request.match_info["ns"],
                                                   request.match_info.get("name"))


async def create_webhook(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_WEBHOOK)
    scope = await _hook_scope(request)
    hook = await request.app[WEBHOOKS].create(**scope, url=body["url"], secret=body["secret"], events=body["events"],
                                              active=body.get("active", True))
    return _json(hook, 201)


async def list_webhooks(request: web.Request) -> web.Response:
    return _json(await request.app[WEBHOOKS].list(**await _hook_scope(request)))


async def get_webhook(request: web.Request) -> web.Response:
    return _json(await request.app[WEBHOOKS].get(int_id(request), **await _hook_scope(request)))


async def update_webhook(request: web.Request) -> web.Response:
    body = await read_json(request, UPDATE_WEBHOOK)
    return _json(await request.app[WEBHOOKS].update(int_id(request), body, **await _hook_scope(request)))


async def delete_webhook(request: web.Request) -> web.Response:
    await request.app[WEBHOOKS].delete(int_id(request), **await _hook_scope(request))
    return web.Response(status=204)


async def list_deliveries(request: web.Request) -> web.Response:
    return _json(await request.app[WEBHOOKS].deliveries(int_id(request), **await _hook_scope(request)))


async def redeliver(request: web.Request) -> web.Response:
    result = await request.app[WEBHOOKS].redeliver(int_id(request), request.match_info["delivery"],
                                                   **await _hook_scope(request))
    return _json(result, 202)


# -- deployments ----------------------------------------------------------------------------------

CREATE_DEPLOYMENT = _schema({"name": _NAME, "revision": _REF, "target": {"type": "string", "maxLength": 2000},
                             "params": {"type": "object"}}, ("name", "revision"))
UPDATE_DEPLOYMENT = _schema({"status": {"enum": ["active", "failed", "stopped"]},
                             "endpoint": {"type": ["string", "null"], "maxLength": 2000}}, ("status",))


async def create_deployment(request: web.Request) -> web.Response:
    body = await read_json(request, CREATE_DEPLOYMENT)
    dep = await request.app[DEPLOYMENTS].create(identity_of(request), request.match_info["ns"],
                                                request.match_info["name"], body)
    return _json(dep, 201)


async def list_deployments(request: web.Request) -> web.Response:
    return _json(await request.app[DEPLOYMENTS].list(identity_of(request), request.match_info["ns"],
                                                     request.match_info["name"]))


async def get_deployment(request: web.Request) -> web.Response:
    return _json(await request.app[DEPLOYMENTS].get(identity_of(request), int_id(request)))


async def update_deployment(request: web.Request) -> web.Response:
    body = await read_json(request, UPDATE_DEPLOYMENT)
    return _json(await request.app[DEPLOYMENTS].update(identity_of(request), int_id(request), body))


M = "/api/v1/models/{ns}/{name}"
NSW = "/api/v1/namespaces/{ns}/webhooks"
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/openapi.json", openapi, "This OpenAPI document", anonymous=True),
    ApiRoute("GET", "/api/v1/model-card.schema.json", card_schema,
             "The JSON Schema README.md front matter (the model card) is validated against", anonymous=True),
    ApiRoute("GET", "/api/v1/user", whoami, "Who am I (anonymous allowed)", anonymous=True),
    ApiRoute("POST", "/api/v1/users", create_user, "Create a user (site admin)", CREATE_USER, 201),
    ApiRoute("GET", "/api/v1/users/{user}/tokens", list_tokens, "List a user's tokens (self or site admin)"),
    ApiRoute("POST", "/api/v1/users/{user}/tokens", create_token,
             "Create a token (self or site admin); the token is returned once. Without a body: "
             "a read+write token with no name", CREATE_TOKEN, 201, body_required=False),
    ApiRoute("DELETE", "/api/v1/users/{user}/tokens/{id}", revoke_token, "Revoke a token", status=204),
    ApiRoute("PUT", "/api/v1/users/{user}/password", set_password,
             "Set a user's web UI password, at least 12 characters (self or site admin); ends their sessions",
             SET_PASSWORD, 204),
    ApiRoute("GET", "/api/v1/namespaces", list_namespaces, "Namespaces the caller belongs to (all, for a site admin)"),
    ApiRoute("POST", "/api/v1/namespaces", create_namespace, "Create a namespace (site admin)", CREATE_NAMESPACE, 201),
    ApiRoute("GET", "/api/v1/namespaces/{ns}", get_namespace,
             "A namespace the caller belongs to, with its quota and usage (LFS bytes, models)"),
    ApiRoute("PUT", "/api/v1/namespaces/{ns}/quota", set_quota,
             "Set a namespace's quotas, null for unlimited (site admin)", SET_QUOTA),
    ApiRoute("GET", "/api/v1/namespaces/{ns}/members", list_members, "Members of a namespace"),
    ApiRoute("PUT", "/api/v1/namespaces/{ns}/members/{user}", set_member,
             "Add a member or change a role (namespace admin)", SET_MEMBER),
    ApiRoute("DELETE", "/api/v1/namespaces/{ns}/members/{user}", remove_member, "Remove a member (namespace admin)",
             status=204),
    ApiRoute("GET", "/api/v1/models", list_models, "Models the caller may read",
             query={"namespace": ("only this namespace", _TEXT), "search": ("substring of name or description", _TEXT),
                    "tag": ("model card tag", _TEXT), "library": ("model card library_name", _TEXT),
                    "pipeline_tag": ("model card pipeline_tag", _TEXT),
                    "limit": ("how many (default 100)", _LIMIT), "offset": ("skip this many", _OFFSET)},
             anonymous=True),
    ApiRoute("POST", "/api/v1/models", create_model, "Create a model and its empty repository (namespace writer)",
             CREATE_MODEL, 201),
    ApiRoute("GET", M, get_model, "A model with its card, files (LFS sizes), refs and what its weights hold "
             "(safetensors, gguf, security, inspections)", anonymous=True),
    ApiRoute("PATCH", M, update_model,
             "Change description (writer); visibility, default branch, allow_force_push (namespace admin)",
             UPDATE_MODEL),
    ApiRoute("DELETE", M, delete_model,
             "Delete a model, its repository and LFS links (namespace admin); 409 while deployed", status=204),
    ApiRoute("GET", M + "/refs", list_refs, "Branches and tags", anonymous=True),
    ApiRoute("POST", M + "/tags", create_tag, "Create an annotated tag (namespace writer)", CREATE_TAG, 201),
    ApiRoute("DELETE", M + "/tags/{tag}", delete_tag, "Delete a tag (namespace writer)", status=204),
    ApiRoute("POST", M + "/branches", create_branch, "Create a branch (namespace writer)", CREATE_BRANCH, 201),
    ApiRoute("DELETE", M + "/branches/{branch}", delete_branch, "Delete a branch (namespace writer)", status=204),
    ApiRoute("POST", M + "/deployments", create_deployment,
             "Deploy a tag: validates the model card at the tag (namespace writer)", CREATE_DEPLOYMENT, 201),
    ApiRoute("GET", M + "/deployments", list_deployments, "Deployments of a model", anonymous=True),
    ApiRoute("GET", "/api/v1/deployments/{id}", get_deployment, "A deployment", anonymous=True),
    ApiRoute("PATCH", "/api/v1/deployments/{id}", update_deployment,
             "Report a deployment's status (inference platform; namespace writer)", UPDATE_DEPLOYMENT),
    *(route for base in (NSW, M + "/webhooks") for route in (
        ApiRoute("POST", base, create_webhook, "Create a webhook (namespace admin); the secret is write-only",
                 CREATE_WEBHOOK, 201),
        ApiRoute("GET", base, list_webhooks, "List webhooks (namespace admin)"),
        ApiRoute("GET", base + "/{id}", get_webhook, "A webhook (namespace admin)"),
        ApiRoute("PATCH", base + "/{id}", update_webhook, "Change a webhook (namespace admin)", UPDATE_WEBHOOK),
        ApiRoute("DELETE", base + "/{id}", delete_webhook, "Delete a webhook (namespace admin)", status=204),
        ApiRoute("GET", base + "/{id}/deliveries", list_deliveries,
                 "Delivery log: status, response code, duration, attempts (namespace admin)"),
        ApiRoute("POST", base + "/{id}/deliveries/{delivery}/redeliver", redeliver,
                 "Queue a delivery again with the same id (namespace admin)", status=202),
    )),
)

# Ref names may contain '/': their route segment matches the rest of the path. Ids are digits.
_PATTERNS = {"{tag}": "{tag:.+}", "{branch}": "{branch:.+}", "{id}": "{id:" + ID_PATTERN + "}"}
# How each path parameter is described in openapi.json.
_PARAM_SCHEMAS = {"id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                  "ns": _NAME, "name": _NAME, "user": _NAME, "tag": _REF, "branch": _REF,
                  "delivery": {"type": "string", "minLength": 1, "maxLength": 64}}


def aiohttp_path(path: str) -> str:
    for k, v in _PATTERNS.items():
        path = path.replace(k, v)
    return path


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/healthz", healthz, ErrorShape.REST)
    for r in ROUTES:
        add_route(app, r.method, aiohttp_path(r.path), r.handler, ErrorShape.REST)


def build_openapi() -> dict:
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict] = {}
    for r in ROUTES:
        params = [{"name": p, "in": "path", "required": True, "schema": _PARAM_SCHEMAS[p]}
                  for p in _path_params(r.path)]
        params += [{"name": k, "in": "query", "required": False, "description": d, "schema": schema}
                   for k, (d, schema) in r.query.items()]
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{r.handler.__name__}"
                           + ("_model" if "/models/" in r.path and "webhooks" in r.path else ""),
            "parameters": params,
            "responses": {str(r.status): {"description": "success"},
                          "default": {"description": "error",
                                      "content": {"application/json": {"schema": error}}}},
        }
        if r.anonymous:
            op["security"] = [{}, {"basic": []}, {"bearer": []}]
        if r.body is not None:
            op["requestBody"] = {"required": r.body_required, "content": {"application/json": {"schema": r.body}}}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "modelrepo API", "version": __version__},
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                                          "description": "user name and token as password"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}},
        },
        "security": [{"basic": []}, {"bearer": []}],
    }


def _path_params(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)
