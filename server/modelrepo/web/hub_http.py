"""HTTP edge of the Hugging Face Hub-compatible API (HF_ENDPOINT=http://this-server).

Routes and shapes follow what huggingface_hub sends and parses; errors carry ``X-Error-Code`` so
the client raises its own exception types (RepositoryNotFoundError, RevisionNotFoundError,
EntryNotFoundError). /resolve adds the Xet headers (``X-Xet-Hash`` and the read-token link) for
files stored through Xet, so a client with hf_xet reconstructs them from chunks; every other
client gets the same bytes over plain HTTP.
"""

import asyncio
import json

from aiohttp import web

from modelrepo.errors import EntryNotFound, InvalidInput, NotFound, Unauthenticated, UnsupportedMediaType
from modelrepo.keys import ACCOUNTS, HUB, HUB_COMMITS, LFS, MODELS, REFS, SETTINGS, XET
from modelrepo.git import reads as hub_repo
from modelrepo.hub.service import card_errors
from modelrepo.push.rules import NewBlob, needs_lfs
from modelrepo.web.lfs_http import parse_range, send_stored_object
from modelrepo.web.middlewares import identity_of

PAGE = 1000
def _base(request: web.Request) -> str:
    settings = request.app[SETTINGS]
    return settings.server.public_url.rstrip("/") if settings.server.public_url else str(request.url.origin())


def _json(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json",
                        headers=headers)


async def _body(request: web.Request) -> dict:
    limit = request.app[SETTINGS].limits.max_json_body
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise InvalidInput("request body too large")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise InvalidInput("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def _repo(request: web.Request) -> tuple[str, str]:
    return request.match_info["ns"], request.match_info["name"]


def _page_link(request: web.Request, offset: int) -> dict[str, str]:
    url = request.url.with_query({**request.query, "cursor": str(offset)})
    absolute = f"{_base(request)}{url.raw_path_qs}"
    return {"Link": f'<{absolute}>; rel="next"'}


def _cursor(request: web.Request) -> int:
    raw = request.query.get("cursor", "0")
    if not raw.isdigit():
        raise InvalidInput("cursor must be an integer")
    return int(raw)


# -- reads ----------------------------------------------------------------------------------------

async def whoami(request: web.Request) -> web.Response:
    identity = identity_of(request)
    if identity.anonymous:
        raise Unauthenticated("Invalid credentials in Authorization header")
    name = await request.app[ACCOUNTS].token_name(identity.token_id)
    return _json(await request.app[HUB].whoami(identity, name))


async def list_models(request: web.Request) -> web.Response:
    q = request.query
    limit_raw = q.get("limit")
    limit = min(int(limit_raw), PAGE) if limit_raw and limit_raw.isdigit() and int(limit_raw) > 0 else PAGE
    offset = _cursor(request)
    found = await request.app[HUB].list_models(
        identity_of(request), search=q.get("search") or None, author=q.get("author") or None,
        filters=[f for f in q.getall("filter", []) if f], pipeline_tag=q.get("pipeline_tag") or None,
        limit=limit, offset=offset)
    headers = _page_link(request, offset + limit) if len(found) == limit and not limit_raw else None
    return _json(found, headers=headers)


async def model_info(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    return _json(await request.app[HUB].model_info(identity_of(request), ns, name, request.match_info.get("rev")))


async def tree(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    recursive = request.query.get("recursive", "false").lower() in ("1", "true")
    _, entries = await request.app[HUB].tree(identity_of(request), ns, name, request.match_info["rev"],
                                              request.match_info.get("path", ""), recursive)
    offset = _cursor(request)
    page = entries[offset:offset + PAGE]
    headers = _page_link(request, offset + PAGE) if offset + PAGE < len(entries) else None
    return _json([e.tree_json() for e in page], headers=headers)


async def refs(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    return _json(await request.app[HUB].refs_json(identity_of(request), ns, name))


async def resolve(request: web.Request) -> web.StreamResponse:
    """HEAD/GET a file at a revision: the contract hf_hub_download relies on."""
    ns, name = _repo(request)
    r, entry = await request.app[HUB].file(identity_of(request), ns, name, request.match_info["rev"],
                                           request.match_info["path"])
    headers = {"X-Repo-Commit": r.commit, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=0",
               "Content-Type": "application/octet-stream"}
    if entry.lfs_oid:
        lfs = request.app[LFS]
        try:
            size = await lfs.readable_size(r.model.id, entry.lfs_oid)
        except NotFound:
            raise EntryNotFound(f"{entry.path}: its LFS object is not stored in this repository", r.commit) from None
        headers.update({"ETag": f'"{entry.lfs_oid}"', "X-Linked-Etag": f'"{entry.lfs_oid}"', "X-Linked-Size": str(size)})
        xet_hash = await request.app[XET].file_for(r.model.id, entry.lfs_oid)
        if xet_hash:
            token_url = f"{_base(request)}/api/models/{r.model.full_name}/xet-read-token/{r.commit}"
            headers.update({"X-Xet-Hash": xet_hash, "Link": f'<{token_url}>; rel="xet-auth"'})
        # A file stored through Xet is streamed (rebuilt from its xorbs) rather than materialized
        # in the bucket for a redirect: Xet clients fetch xorb ranges and never read it whole.
        if lfs.direct and not xet_hash:
            presigned = await lfs.store.presign_download(entry.lfs_oid, request.app[SETTINGS].lfs.action_expiry)
            raise web.HTTPFound(presigned.href, headers=headers)
        return await send_stored_object(request, lfs.store, entry.lfs_oid, size, headers)
    models = request.app[MODELS]
    data = await asyncio.to_thread(hub_repo.read_blob, models.path(r.model), entry.oid)
    headers.update({"ETag": f'"{entry.oid}"', "X-Linked-Etag": f'"{entry.oid}"', "X-Linked-Size": str(len(data))})
    start, end = parse_range(request.headers.get("Range"), len(data))
    if request.headers.get("Range") and (start, end) != (0, len(data)):
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:end], headers=headers)
    return web.Response(body=data, headers=headers)


# -- management --------------------------------------------------------------------------------

async def create_repo(request: web.Request) -> web.Response:
    status, body = await request.app[HUB].create_repo(identity_of(request), await _body(request), _base(request))
    return _json(body, status)


async def delete_repo(request: web.Request) -> web.Response:
    await request.app[HUB].delete_repo(identity_of(request), await _body(request))
    return _json({})


async def settings(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    await request.app[HUB].settings(identity_of(request), ns, name, await _body(request))
    return _json({})


async def preupload(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    await request.app[MODELS].for_write(identity_of(request), ns, name)
    body = await _body(request)
    files = body.get("files")
    if not isinstance(files, list):
        raise InvalidInput("files must be a list")
    push = request.app[SETTINGS].push
    out = []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("size"), int):
            raise InvalidInput("each file needs a path and a size")
        size = f["size"]
        # The same line the push rules draw: weights and big files go to LFS.
        lfs = size > 0 and (size > push.max_plain_blob or needs_lfs(NewBlob("", f["path"], size, None),
                                                                   push.weight_patterns))
        out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
    return _json({"files": out})


async def commit(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    if request.query.get("create_pr") in ("1", "true", "True"):
        raise InvalidInput("pull requests are not supported: commit to a branch")
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-ndjson", "application/json"):
        raise UnsupportedMediaType("expected Content-Type application/x-ndjson")
    base = _base(request)
    sha = await request.app[HUB_COMMITS].commit(identity_of(request), ns, name, request.match_info["rev"],
                                                request.content.iter_chunked(256 * 1024), f"{base}/{ns}/{name}.git")
    model = await request.app[MODELS].for_read(identity_of(request), ns, name)
    return _json({"commitUrl": f"{base}/{model.full_name}/commit/{sha}", "commitOid": sha, "success": True,
                  "pullRequestUrl": None})


async def create_branch(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    body = await _body(request)
    start = body.get("startingPoint")
    if start is not None and not isinstance(start, str):
        raise InvalidInput("startingPoint must be a revision")
    await request.app[HUB].create_branch(identity_of(request), ns, name, request.match_info["branch"], start,
                                         f"{_base(request)}/{ns}/{name}.git")
    return _json({})


async def delete_branch(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    await request.app[REFS].delete_branch(identity_of(request), ns, name, request.match_info["branch"],
                                          f"{_base(request)}/{ns}/{name}.git")
    return _json({})


async def create_tag(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    body = await _body(request)
    tag, message = body.get("tag"), body.get("message")
    if not isinstance(tag, str) or (message is not None and not isinstance(message, str)):
        raise InvalidInput("tag (and optionally message) must be strings")
    await request.app[HUB].create_tag(identity_of(request), ns, name, request.match_info["rev"], tag, message,
                                      f"{_base(request)}/{ns}/{name}.git")
    return _json({})


async def delete_tag(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    await request.app[REFS].delete_tag(identity_of(request), ns, name, request.match_info["tag"],
                                       f"{_base(request)}/{ns}/{name}.git")
    return _json({})


async def validate_yaml(request: web.Request) -> web.Response:
    if identity_of(request).anonymous:
        raise Unauthenticated("authentication required")
    body = await _body(request)
    content = body.get("content")
    if not isinstance(content, str):
        raise InvalidInput("content must be the README text")
    errors = await asyncio.to_thread(card_errors, content)
    if errors:
        return _json({"errors": [{"message": e} for e in errors], "warnings": []}, 400)
    return _json({"errors": [], "warnings": []})


def add_routes(app: web.Application) -> None:
    m = "/api/models/{ns}/{name}"
    app.router.add_get("/api/whoami-v2", whoami)
    app.router.add_get("/api/models", list_models)
    app.router.add_get(m, model_info)
    app.router.add_get(m + "/revision/{rev}", model_info)
    app.router.add_get(m + "/tree/{rev}", tree)
    app.router.add_get(m + "/tree/{rev}/{path:.+}", tree)
    app.router.add_get(m + "/refs", refs)
    app.router.add_put(m + "/settings", settings)
    app.router.add_post(m + "/preupload/{rev}", preupload)
    app.router.add_post(m + "/commit/{rev}", commit)
    app.router.add_post(m + "/branch/{branch}", create_branch)
    app.router.add_delete(m + "/branch/{branch}", delete_branch)
    app.router.add_post(m + "/tag/{rev}", create_tag)
    app.router.add_delete(m + "/tag/{tag}", delete_tag)
    app.router.add_post("/api/repos/create", create_repo)
    app.router.add_delete("/api/repos/delete", delete_repo)
    app.router.add_post("/api/validate-yaml", validate_yaml)
    app.router.add_get("/{ns}/{name}/resolve/{rev}/{path:.+}", resolve)
