"""HTTP edge of Xet: the token doors under /api/models and the CAS under /xet (casUrl).

CAS requests carry the short-lived token as ``Authorization: Bearer``; the authenticate
middleware verifies its signature (it is an action token) and the handlers bind it to the
repository and scope. Xorb ranges are fetched from signed URLs, so a reconstruction's links work
for exactly the bytes the reconstruction named, for a few minutes.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from aiohttp import web

from modelrepo.errors import ModelrepoError
from modelrepo.keys import XET
from modelrepo.web.lfs_http import parse_range, send_stored_object
from modelrepo.web.middlewares import ACTION, identity_of
from modelrepo.web.routing import ErrorShape, add_route, base_url

PREFIX = "/xet"
log = structlog.get_logger("modelrepo.xet")


def _json(data, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type="application/json", headers=headers)


async def _token(request: web.Request, scope: str) -> web.Response:
    xet = request.app[XET]
    token = await xet.issue(identity_of(request), request.match_info["ns"], request.match_info["name"], scope)
    cas_url = base_url(request) + PREFIX
    # huggingface_hub reads the headers; the spec (auth.md) names the JSON fields.
    headers = {"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token.access_token,
               "X-Xet-Token-Expiration": str(token.expires), "Cache-Control": "no-store"}
    return _json({"casUrl": cas_url, "accessToken": token.access_token, "exp": token.expires}, headers)


async def read_token(request: web.Request) -> web.Response:
    return await _token(request, "read")


async def write_token(request: web.Request) -> web.Response:
    return await _token(request, "write")


async def upload_xorb(request: web.Request) -> web.Response:
    xet = request.app[XET]
    model = await xet.model_for(request.get(ACTION), write=True)
    with _refusals_logged("xorb", request.match_info["hash"]):
        inserted = await xet.upload_xorb(model, request.match_info["hash"], request.content.iter_any(),
                                         request.content_length)
    return _json({"was_inserted": inserted})


async def upload_shard(request: web.Request) -> web.Response:
    xet = request.app[XET]
    model = await xet.model_for(request.get(ACTION), write=True)
    with _refusals_logged("shard", ""):
        result = await xet.upload_shard(model, request.content.iter_any())
    return _json({"result": result})


@contextmanager
def _refusals_logged(kind: str, name: str) -> Iterator[None]:
    """The client only reports a status: the reason goes to the log for the operator."""
    try:
        yield
    except ModelrepoError as exc:
        log.info("xet_upload_refused", kind=kind, name=name, status=exc.status, reason=str(exc))
        raise


async def query_chunk(request: web.Request) -> web.Response:
    xet = request.app[XET]
    model = await xet.model_for(request.get(ACTION))
    body = await xet.dedup(model, request.match_info["hash"])
    return web.Response(body=body, content_type="application/octet-stream")


async def reconstruction(request: web.Request) -> web.Response:
    xet = request.app[XET]
    model = await xet.model_for(request.get(ACTION))
    file_hex = request.match_info["file_id"]
    size, terms = await xet.file_terms(model.id, file_hex)
    first, end = parse_range(request.headers.get("Range"), size)
    base = base_url(request)

    def sign(xorb_hex: str, start: int, last: int) -> str:
        return f"{base}{PREFIX}/fetch/{xorb_hex}?token={xet.sign_fetch(model, xorb_hex, start, last)}"

    return _json(await xet.reconstruction(model, file_hex, size, terms, first, end, sign))


async def fetch_xorb(request: web.Request) -> web.StreamResponse:
    """A signed byte range of a xorb, as a reconstruction's fetch_info named it."""
    xet = request.app[XET]
    claim = xet.signer.verify(request.query.get("token", ""))
    oid, first, end = await xet.fetch(claim, request.match_info["hash"], request.headers.get("Range"))
    store = xet.store
    size = await store.stat(oid)
    headers = {"Content-Type": "application/octet-stream", "Cache-Control": "private, max-age=0"}
    return await send_stored_object(request, store, oid, size or 0, headers)


def add_routes(app: web.Application) -> None:
    """The token doors answer huggingface_hub (Hub error shape: it maps ``X-Error-Code`` to its
    exceptions); the CAS answers hf_xet, which reads only the status, so REST's shape is as good
    as any. The service itself is built in ``services.build_services``."""
    m = "/api/models/{ns}/{name}"
    add_route(app, "GET", m + "/xet-read-token/{rev:.+}", read_token, ErrorShape.HUB)
    add_route(app, "GET", m + "/xet-write-token/{rev:.+}", write_token, ErrorShape.HUB)
    for method, path, handler in [
        ("GET", PREFIX + "/v1/chunks/{prefix}/{hash}", query_chunk),
        ("POST", PREFIX + "/v1/xorbs/{prefix}/{hash}", upload_xorb),
        ("POST", PREFIX + "/v1/shards", upload_shard),
        ("GET", PREFIX + "/v1/reconstructions/{file_id}", reconstruction),
        ("GET", PREFIX + "/fetch/{hash}", fetch_xorb),
    ]:
        add_route(app, method, path, handler, ErrorShape.REST)
