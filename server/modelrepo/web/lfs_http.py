"""Git LFS over HTTP: the batch API, basic transfers (PUT/GET/verify) and the locking API.

Transfer requests are authorized by the signed action header the batch response handed out (no
catalog lookup), or by the user's own credentials if a client calls them directly.
"""

import json
import re

from aiohttp import web

from modelrepo.errors import (InvalidInput, ModelrepoError, NotFound, TooLarge, Unauthenticated, UnsupportedMediaType,
                              model_not_found)
from modelrepo.keys import LFS, LOCKS, METRICS, MODELS, SETTINGS
from modelrepo.lfs.action_tokens import ActionClaim
from modelrepo.lfs.service import Urls, check_oid
from modelrepo.lfs.locks import LockConflict
from modelrepo.models.service import Model
from modelrepo.storage.verified import ObjectStore
from modelrepo.web.bodies import OBJECT, chunks, read_json
from modelrepo.web.middlewares import ACTION, REQUEST_ID, identity_of
from modelrepo.web.routing import MAX_ID, ErrorShape, add_route, base_url, repo_name

LFS_TYPE = "application/vnd.git-lfs+json"
_JSON_TYPES = (LFS_TYPE, "application/json")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class NotAcceptable(ModelrepoError):
    status = 406
    code = "not_acceptable"


def lfs_json(request: web.Request, data: dict, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type=LFS_TYPE,
                        headers={"Cache-Control": "no-cache"})


_repo = repo_name


def _check_media_types(request: web.Request) -> None:
    ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype not in _JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type must be {LFS_TYPE}")
    accept = request.headers.get("Accept")
    if accept:
        kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
        if not kinds & {LFS_TYPE, "application/json", "*/*", "application/*"}:
            raise NotAcceptable(f"this endpoint answers {LFS_TYPE}")


async def _json_body(request: web.Request) -> dict:
    _check_media_types(request)
    return await read_json(request, OBJECT)


def lfs_urls(request: web.Request, model: Model) -> Urls:
    return Urls(f"{base_url(request)}/{model.namespace}/{model.name}.git/info/lfs")


async def batch(request: web.Request) -> web.Response:
    body = await _json_body(request)
    ns, name = _repo(request)
    # Resolve first so the URLs carry the model's canonical spelling.
    models = request.app[MODELS]
    model = await models.for_read(identity_of(request), ns, name)
    result = await request.app[LFS].batch(identity_of(request), ns, name, body, lfs_urls(request, model))
    return lfs_json(request, result)


async def _transfer_model(request: web.Request, operation: str, oid: str) -> tuple[Model, ActionClaim | None]:
    """The model this transfer is for, authorized by an action token or by the caller's identity."""
    ns, name = _repo(request)
    models = request.app[MODELS]
    claim: ActionClaim | None = request.get(ACTION)
    if claim is None and "token" in request.query:
        # The same signed token, carried in the href (clients that send no action headers).
        claim = request.app[LFS].signer.verify(request.query["token"])
        if claim is None:
            raise Unauthenticated("LFS action token invalid or expired; run the command again")
    if claim is None:
        check = models.for_read if operation == "download" else models.for_write
        return await check(identity_of(request), ns, name), None
    model = await models.find(ns, name)
    if model is None or claim.model_key != model.key:
        if not await models.exists(claim.model_key):
            # The token's own model was deleted after the batch that signed it: the answer any
            # request for it gets now. Decided by the token's model alone, never by what this URL
            # names, so a token for one model tells nothing about another.
            raise model_not_found()
        raise Unauthenticated("this action token is not valid for this object")
    if claim.operation != operation or claim.oid != oid:
        raise Unauthenticated("this action token is not valid for this object")
    return model, claim


async def upload(request: web.Request) -> web.Response:
    oid = check_oid(request.match_info["oid"])
    model, claim = await _transfer_model(request, "upload", oid)
    length = request.content_length
    lfs = request.app[LFS]
    if claim is not None:
        size = claim.size  # the batch that signed it applied the size limit and the quota
    elif length is not None:
        size = length
        if size > request.app[SETTINGS].lfs.max_object_size:
            raise TooLarge(f"object of {size} bytes exceeds lfs.max_object_size")
        await lfs.check_quota(model, [{"oid": oid, "size": size}], [oid])
    else:
        raise InvalidInput("Content-Length is required")
    if length is not None and length != size:
        raise InvalidInput(f"Content-Length {length} does not match the object size {size}")

    with request.app[METRICS].active.labels("lfs").track_inprogress():
        await lfs.receive(model.id, oid, size, chunks(request))
    return web.Response(status=200)


async def download(request: web.Request) -> web.StreamResponse:
    oid = check_oid(request.match_info["oid"])
    model, _ = await _transfer_model(request, "download", oid)
    lfs = request.app[LFS]
    size = await lfs.readable_size(model, oid)
    headers = {"Cache-Control": "private, max-age=0", "Content-Type": "application/octet-stream"}
    with request.app[METRICS].active.labels("lfs").track_inprogress():
        return await send_stored_object(request, lfs.store, oid, size, headers)


async def send_stored_object(request: web.Request, store: ObjectStore, oid: str, size: int,
                             headers: dict[str, str]) -> web.StreamResponse:
    """Stream an object from the store with Range support: sendfile(2) for a local file,
    chunked reads for S3. Shared by LFS downloads and the Hub API's /resolve."""
    path = store.local_path(oid)
    if path is not None:
        if not path.is_file():
            raise NotFound("object missing from storage", code="object_missing")
        # sendfile(2) zero-copy, Range/If-Range handled by aiohttp.
        return web.FileResponse(path, chunk_size=1024 * 1024, headers=headers)
    start, end = parse_range(request.headers.get("Range"), size)
    status = 206 if (start, end) != (0, size) and request.headers.get("Range") else 200
    resp = web.StreamResponse(status=status, headers={**headers, "Accept-Ranges": "bytes"})
    resp.content_length = end - start
    if status == 206:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    await resp.prepare(request)
    if request.method != "HEAD":
        async for chunk in store.read(oid, start, end):
            await resp.write(chunk)
    await resp.write_eof()
    return resp


class RangeNotSatisfiable(ModelrepoError):
    status = 416
    code = "range_not_satisfiable"


def parse_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) for a single 'bytes=' range; the whole object when absent or unparseable."""
    if not header:
        return 0, size
    m = _RANGE_RE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return 0, size
    first, last = m.group(1), m.group(2)
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:
        start, end = max(size - int(last), 0), size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(f"range {header} not satisfiable for {size} bytes")
    return start, end


async def verify(request: web.Request) -> web.Response:
    body = await _json_body(request)
    oid = check_oid(body.get("oid"))
    size = body.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput("size must be an integer >= 0")
    model, claim = await _transfer_model(request, "verify", oid)
    if claim is not None and claim.size != size:
        raise Unauthenticated("this action token is not valid for this object")
    await request.app[LFS].verify(model, oid, size, claim.nonce if claim else "")
    return lfs_json(request, {"oid": oid, "size": size})


# -- locks ------------------------------------------------------------------------------------

async def _lock_model(request: web.Request, write: bool) -> Model:
    ns, name = _repo(request)
    models = request.app[MODELS]
    identity = identity_of(request)
    return await (models.for_write if write else models.for_read)(identity, ns, name)


async def create_lock(request: web.Request) -> web.Response:
    body = await _json_body(request)
    model = await _lock_model(request, write=True)
    ref = (body.get("ref") or {}).get("name") if isinstance(body.get("ref"), dict) else None
    try:
        lock = await request.app[LOCKS].create(identity_of(request), model, body.get("path"), ref)
    except LockConflict as exc:
        return lfs_json(request, {"lock": exc.lock, "message": exc.message, "request_id": request[REQUEST_ID]}, 409)
    return lfs_json(request, {"lock": lock}, 201)


def _in_range(value: object, what: str) -> object:
    """Lock cursors, limits and ids become SQLite integers: refuse what would overflow one."""
    number = value.strip() if isinstance(value, str) else value
    if isinstance(number, str) and number.isdigit():
        number = int(number) if len(number) < 25 else MAX_ID + 1
    if isinstance(number, int) and not isinstance(number, bool) and number > MAX_ID:
        raise InvalidInput(f"{what} must be an integer up to {MAX_ID}")
    return value


async def list_locks(request: web.Request) -> web.Response:
    model = await _lock_model(request, write=False)
    q = request.query
    result = await request.app[LOCKS].list(model, path=q.get("path") or None, lock_id=_in_range(q.get("id"), "id") or None,
                                           cursor=_in_range(q.get("cursor"), "cursor"),
                                           limit=_in_range(q.get("limit"), "limit"))
    return lfs_json(request, result)


async def verify_locks(request: web.Request) -> web.Response:
    body = await _json_body(request)
    model = await _lock_model(request, write=True)
    result = await request.app[LOCKS].verify(identity_of(request), model, _in_range(body.get("cursor"), "cursor"),
                                             _in_range(body.get("limit"), "limit"))
    return lfs_json(request, result)


async def unlock(request: web.Request) -> web.Response:
    body = await _json_body(request)
    model = await _lock_model(request, write=True)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidInput("force must be a boolean")
    lock_id = request.match_info["id"]
    if lock_id.isdigit() and (len(lock_id) > 19 or int(lock_id) > MAX_ID):
        lock_id = "0"  # no such lock: the service says so in its own words
    lock = await request.app[LOCKS].unlock(identity_of(request), model, lock_id, force)
    return lfs_json(request, {"lock": lock})


def add_routes(app: web.Application) -> None:
    base = "/{ns}/{name}/info/lfs"
    for method, path, handler in (
        ("POST", "/objects/batch", batch),
        ("PUT", "/objects/{oid}", upload),
        ("GET", "/objects/{oid}", download),
        ("POST", "/verify", verify),
        ("POST", "/locks", create_lock),
        ("GET", "/locks", list_locks),
        ("POST", "/locks/verify", verify_locks),
        ("POST", "/locks/{id}/unlock", unlock),
    ):
        add_route(app, method, base + path, handler, ErrorShape.LFS)
