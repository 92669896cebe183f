"""Operations endpoints: /readyz (readiness, unlike /healthz which is liveness) and /metrics."""

from aiohttp import web

from modelrepo.keys import CATALOG, LFS, METRICS, SETTINGS
from modelrepo.metrics import CONTENT_TYPE
from modelrepo.ops.readiness import check
from modelrepo.web.routing import ErrorShape, add_route


async def readyz(request: web.Request) -> web.Response:
    ok, body = await check(request.app[SETTINGS], request.app[CATALOG], request.app[LFS].store)
    return web.json_response(body, status=200 if ok else 503, headers={"Cache-Control": "no-cache"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/readyz", readyz, ErrorShape.REST)
    add_route(app, "GET", "/metrics", metrics, ErrorShape.REST)
