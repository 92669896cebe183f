"""Operations endpoints: /readyz (readiness, unlike /healthz which is liveness) and /metrics."""

from aiohttp import web

from modelrepo.keys import CATALOG, LFS, METRICS, SETTINGS
from modelrepo.metrics import CONTENT_TYPE
from modelrepo.ops.readiness import check


async def readyz(request: web.Request) -> web.Response:
    ok, body = await check(request.app[SETTINGS], request.app[CATALOG], request.app[LFS].store)
    return web.json_response(body, status=200 if ok else 503, headers={"Cache-Control": "no-cache"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
