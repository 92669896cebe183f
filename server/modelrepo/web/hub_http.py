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
from modelrepo.keys import ACCOUNTS, HUB, HUB_COMMITS, LFS, MODELS, REFS, XET
from modelrepo.git import reads as hub_repo
from modelrepo.web.bodies import chunks, read_json
from modelrepo.web.lfs_http import parse_range, send_stored_object
from modelrepo.web.middlewares import identity_of
from modelrepo.web.routing import ErrorShape, add_route, base_url, clone_url

PAGE = 1000
COMMITS_PAGE = 50  # the Hub's own page of commits
# The Hub's own default page size and our cap; cursor offsets stay within a SQLite integer.
MAX_CURSOR = 10**12


def _json(data, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json",
                        headers=headers)


async def _body(request: web.Request) -> dict:
    """Hub management bodies: a JSON object, read whole; an empty body means {}."""
    return await read_json(request, required=False)


def _repo(request: web.Request) -> tuple[str, str]:
    return request.match_info["ns"], request.match_info["name"]


def _page_link(request: web.Request, offset: int) -> dict[str, str]:
    url = request.url.with_query({**request.query, "cursor": str(offset)})
    absolute = f"{base_url(request)}{url.raw_path_qs}"
    return {"Link": f'<{absolute}>; rel="next"'}


def _cursor(request: web.Request) -> int:
    raw = request.query.get("cursor", "0")
    if not raw.isdigit() or int(raw) > MAX_CURSOR:
        raise InvalidInput(f"cursor must be an integer in 0..{MAX_CURSOR}")
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
    limit = min(int(limit_raw[:5]), PAGE) if limit_raw and limit_raw.isdigit() and int(limit_raw) > 0 else PAGE
    offset = _cursor(request)
    found = await request.app[HUB].list_models(
        identity_of(request), search=q.get("search") or None, author=q.get("author") or None,
        filters=[f for f in q.getall("filter", []) if f], pipeline_tag=q.get("pipeline_tag") or None,
        limit=limit, offset=offset)
    headers = _page_link(request, offset + limit) if len(found) == limit and not limit_raw else None
    return _json(found, headers=headers)


async def model_info(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    security = request.query.get("securityStatus", "").lower() in ("1", "true")
    return _json(await request.app[HUB].model_info(identity_of(request), ns, name, request.match_info.get("rev"),
                                                   security))


async def tree(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    recursive = request.query.get("recursive", "false").lower() in ("1", "true")
    _, entries = await request.app[HUB].tree(identity_of(request), ns, name, request.match_info["rev"],
                                              request.match_info.get("path", ""), recursive)
    offset = _cursor(request)
    page = entries[offset:offset + PAGE]
    headers = _page_link(request, offset + PAGE) if offset + PAGE < len(entries) else None
    return _json([e.tree_json() for e in page], headers=headers)


async def commits(request: web.Request) -> web.Response:
    """``list_repo_commits``: pages of COMMITS_PAGE, the next one named by a Link header as the
    client's paginator expects."""
    ns, name = _repo(request)
    offset = _cursor(request)
    found, more = await request.app[HUB].commits(identity_of(request), ns, name, request.match_info["rev"],
                                                 offset, COMMITS_PAGE)
    return _json(found, headers=_page_link(request, offset + COMMITS_PAGE) if more else None)


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
            size = await lfs.readable_size(r.model, entry.lfs_oid)
        except NotFound as exc:
            if exc.code == "model_not_found":
                raise  # the model was deleted meanwhile: the missing model's 404, not the file's
            raise EntryNotFound(f"{entry.path}: its LFS object is not stored in this repository", r.commit) from None
        headers.update({"ETag": f'"{entry.lfs_oid}"', "X-Linked-Etag": f'"{entry.lfs_oid}"', "X-Linked-Size": str(size)})
        xet_hash = await request.app[XET].file_for(r.model.id, entry.lfs_oid)
        if xet_hash:
            token_url = f"{base_url(request)}/api/models/{r.model.full_name}/xet-read-token/{r.commit}"
            headers.update({"X-Xet-Hash": xet_hash, "Link": f'<{token_url}>; rel="xet-auth"'})
        # A file stored through Xet is streamed (rebuilt from its xorbs) rather than materialized
        # in the bucket for a redirect: Xet clients fetch xorb ranges and never read it whole.
        if lfs.direct and not xet_hash:
            presigned = await lfs.presigned_download(entry.lfs_oid)
            raise web.HTTPFound(presigned.href, headers=headers)
        return await send_stored_object(request, lfs.store, entry.lfs_oid, size, headers)
    data = await request.app[MODELS].read(r.model, hub_repo.read_blob, entry.oid)
    headers.update({"ETag": f'"{entry.oid}"', "X-Linked-Etag": f'"{entry.oid}"', "X-Linked-Size": str(len(data))})
    start, end = parse_range(request.headers.get("Range"), len(data))
    if request.headers.get("Range") and (start, end) != (0, len(data)):
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:end], headers=headers)
    return web.Response(body=data, headers=headers)


# -- management --------------------------------------------------------------------------------

async def create_repo(request: web.Request) -> web.Response:
    status, body = await request.app[HUB].create_repo(identity_of(request), await _body(request), base_url(request))
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
    judge = request.app[HUB_COMMITS].judge
    out = []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) or not isinstance(f.get("size"), int):
            raise InvalidInput("each file needs a path and a size")
        # The judge's own line: exactly the files a commit would be refused for as plain blobs.
        out.append({"path": f["path"], "uploadMode": judge.upload_mode(f["path"], f["size"]), "shouldIgnore": False})
    return _json({"files": out})


async def commit(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    if request.query.get("create_pr") in ("1", "true", "True"):
        raise InvalidInput("pull requests are not supported: commit to a branch")
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in ("application/x-ndjson", "application/json"):
        raise UnsupportedMediaType("expected Content-Type application/x-ndjson")
    base = base_url(request)
    sha = await request.app[HUB_COMMITS].commit(identity_of(request), ns, name, request.match_info["rev"],
                                                chunks(request), clone_url(request))
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
                                         clone_url(request))
    return _json({})


async def delete_branch(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    await request.app[REFS].delete_branch(identity_of(request), ns, name, request.match_info["branch"],
                                          clone_url(request))
    return _json({})


async def create_tag(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    body = await _body(request)
    tag, message = body.get("tag"), body.get("message")
    if not isinstance(tag, str) or (message is not None and not isinstance(message, str)):
        raise InvalidInput("tag (and optionally message) must be strings")
    await request.app[HUB].create_tag(identity_of(request), ns, name, request.match_info["rev"], tag, message,
                                      clone_url(request))
    return _json({})


async def delete_tag(request: web.Request) -> web.Response:
    ns, name = _repo(request)
    await request.app[REFS].delete_tag(identity_of(request), ns, name, request.match_info["tag"],
                                       clone_url(request))
    return _json({})


async def validate_yaml(request: web.Request) -> web.Response:
    if identity_of(request).anonymous:
        raise Unauthenticated("authentication required")
    body = await _body(request)
    content = body.get("content")
    if not isinstance(content, str):
        raise InvalidInput("content must be the README text")
    # The judge's schema (push.model_card_schema), the one the commit itself will meet.
    problems = await asyncio.to_thread(request.app[HUB_COMMITS].judge.card_problems, content.encode("utf-8"))
    if problems:
        return _json({"errors": [{"message": p.line()} for p in problems], "warnings": []}, 400)
    return _json({"errors": [], "warnings": []})


def add_routes(app: web.Application) -> None:
    m = "/api/models/{ns}/{name}"
    routes = [
        ("GET", "/api/whoami-v2", whoami),
        ("GET", "/api/models", list_models),
        ("GET", m, model_info),
        ("GET", m + "/revision/{rev}", model_info),
        ("GET", m + "/tree/{rev}", tree),
        ("GET", m + "/tree/{rev}/{path:.+}", tree),
        ("GET", m + "/refs", refs),
        ("GET", m + "/commits/{rev}", commits),
        ("PUT", m + "/settings", settings),
        ("POST", m + "/preupload/{rev}", preupload),
        ("POST", m + "/commit/{rev}", commit),
        ("POST", m + "/branch/{branch}", create_branch),
        ("DELETE", m + "/branch/{branch}", delete_branch),
        ("POST", m + "/tag/{rev}", create_tag),
        ("DELETE", m + "/tag/{tag}", delete_tag),
        ("POST", "/api/repos/create", create_repo),
        ("DELETE", "/api/repos/delete", delete_repo),
        ("POST", "/api/validate-yaml", validate_yaml),
        ("GET", "/{ns}/{name}/resolve/{rev}/{path:.+}", resolve),
    ]
    for method, path, handler in routes:
        add_route(app, method, path, handler, ErrorShape.HUB)
