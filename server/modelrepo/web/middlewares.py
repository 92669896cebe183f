"""Request context, authentication and error mapping, plus the one-line-per-request access log."""

import json
import logging
import sys
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from modelrepo.errors import ModelrepoError, StorageUnavailable, TooManyRequests, Unauthenticated
from modelrepo.keys import ACCOUNTS, INFLIGHT, LFS, LIMITER, METRICS, SETTINGS
from modelrepo.lfs.action_tokens import PREFIX as ACTION_PREFIX
from modelrepo.lfs.action_tokens import ActionClaim
from modelrepo.accounts.access import ANONYMOUS, Identity
from modelrepo.web.auth import parse_authorization
from modelrepo.web.bodies import BYTES_IN
from modelrepo.web.hub_errors import hub_error_headers
from modelrepo.web.routing import ErrorShape, client_address, error_shape

# Reachable without credentials even when auth.allow_anonymous_read is false.
ANONYMOUS_ALWAYS = frozenset({"/healthz", "/readyz", "/metrics"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("modelrepo.http")

IDENTITY = web.RequestKey("identity", Identity)
REQUEST_ID = web.RequestKey("request_id", str)
ACTION = web.RequestKey("lfs_action", ActionClaim)
LFS_TYPE = "application/vnd.git-lfs+json"
NO_CACHE = {"Cache-Control": "no-cache, max-age=0, must-revalidate", "Pragma": "no-cache",
            "Expires": "Fri, 01 Jan 1980 00:00:00 GMT"}


def identity_of(request: web.Request) -> Identity:
    return request.get(IDENTITY, ANONYMOUS)


# nginx's "client closed request": the client went away before we could answer.
CLIENT_CLOSED = 499


def error_response(request: web.Request, status: int, code: str, message: str,
                   exc: ModelrepoError | None = None) -> web.Response:
    headers = dict(NO_CACHE)
    realm = request.app[SETTINGS].auth.realm
    shape = error_shape(request)
    if shape is ErrorShape.HUB:
        # The Hugging Face client's shape: {"error": ...} and X-Error-Code headers.
        headers.update(hub_error_headers(exc, code, message))
        return web.Response(status=status, body=json.dumps({"error": message}).encode(),
                            content_type="application/json", headers=headers)
    if shape is ErrorShape.LFS:
        # git-lfs error shape; LFS-Authenticate rather than WWW-Authenticate so that browsers do
        # not prompt and git-lfs asks the git credential helper (docs/api/batch.md).
        body = json.dumps({"message": message, "request_id": request.get(REQUEST_ID)}).encode()
        if status == 401:
            headers["LFS-Authenticate"] = f'Basic realm="{realm}"'
        return web.Response(status=status, body=body, content_type=LFS_TYPE, headers=headers)
    error = {"code": code, "message": message}
    if getattr(exc, "details", None):  # e.g. the findings of a refused deployment
        error["details"] = exc.details
    body = json.dumps({"error": error}).encode()
    if status == 401:
        headers["WWW-Authenticate"] = f'Basic realm="{realm}", charset="UTF-8"'
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    inflight = request.app[INFLIGHT]
    inflight.enter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        # aiohttp's own 404/405 for unknown routes: same JSON shape as ours.
        if exc.status >= 400:
            response = error_response(request, exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
            for key in ("Allow",):
                if key in exc.headers:
                    response.headers[key] = exc.headers[key]
        else:
            raise
    except ConnectionError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            # Still connected: some backend connection failed, and that is ours to answer for.
            response = _internal_error(request, request_id)
        else:
            # The client hung up (aiohttp raises ConnectionResetError from reads and writes):
            # nothing can be sent, and it is not our failure. The access log records it as 499.
            log.info("client_disconnected", path=request.path)
            response = web.Response(status=CLIENT_CLOSED)
    except ModelrepoError as exc:
        if isinstance(exc, StorageUnavailable):
            request.app[METRICS].storage_errors.inc()
        response = error_response(request, exc.status, exc.code, exc.message, exc)
        response.headers.update(getattr(exc, "headers", {}))
    except Exception:
        response = _internal_error(request, request_id)
    finally:
        inflight.leave()
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
        if request.content.exception() is not None:
            response.force_close()  # the body broke mid-stream: this connection carries nothing more
    return response


def _internal_error(request: web.Request, request_id: str) -> web.Response:
    """Log the exception being handled; answer without its details."""
    log.exception("unhandled_error", path=request.path)
    return error_response(request, 500, "internal_error", f"internal error (request id {request_id})")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Resolve the Authorization header to an Identity. Presented-but-wrong credentials are a 401
    everywhere, even on public models: a client with a stale token should hear about it."""
    header = request.headers.get("Authorization")
    identity = ANONYMOUS
    if header:
        limiter = request.app[LIMITER]
        addr = client_address(request, request.app[SETTINGS].server)
        retry = await limiter.retry_after(addr)
        if retry is not None:
            request.app[METRICS].auth_failures.labels("yes").inc()
            log.warning("auth_rate_limited", remote=addr, retry_after=round(retry))
            raise TooManyRequests(f"too many failed authentications from {addr}; retry in {retry:.0f} s", retry)
        try:
            identity = await _identify(request, header)
        except Unauthenticated:
            await limiter.record(addr)
            request.app[METRICS].auth_failures.labels("no").inc()
            log.info("auth_failed", remote=addr)
            raise
        if identity is None:  # an LFS action token: the transfer handler binds it
            request[IDENTITY] = ANONYMOUS
            return await handler(request)
        structlog.contextvars.bind_contextvars(user=identity.name)
    elif (not request.app[SETTINGS].auth.allow_anonymous_read and request.path not in ANONYMOUS_ALWAYS
          and not _signed_lfs_href(request) and not getattr(request.match_info.handler, "ui_page", False)):
        # Web UI pages see the session cookie themselves and send anonymous visitors to /login.
        raise Unauthenticated("authentication required")
    request[IDENTITY] = identity
    return await handler(request)


def _signed_lfs_href(request: web.Request) -> bool:
    """An LFS object href or a Xet xorb range URL carrying its own signed token (the handler
    verifies it, and nothing else ever accepts a query token)."""
    return ("/info/lfs/objects/" in request.path or request.path.startswith("/xet/fetch/")) and "token" in request.query


async def _identify(request: web.Request, header: str) -> Identity | None:
    """The caller's identity; None for a valid LFS action token (recorded on the request)."""
    parsed = parse_authorization(header)
    if parsed is None:
        raise Unauthenticated("malformed Authorization header")
    user, token = parsed
    if user is None and token.startswith(ACTION_PREFIX):
        # A signed LFS action header from a batch response: checked here, bound to its
        # repository/object/operation by the transfer handler.
        claim = request.app[LFS].signer.verify(token)
        if claim is None:
            raise Unauthenticated("LFS action token invalid or expired; run the command again")
        request[ACTION] = claim
        return None
    if user == "":
        raise Unauthenticated("Basic authentication needs the token owner's user name before the token "
                              "(or send the token alone as 'Authorization: Bearer TOKEN')")
    accounts = request.app[ACCOUNTS]
    found = await accounts.authenticate(token, user)
    if found is None:
        if user is not None and await accounts.authenticate(token) is not None:
            # Only someone holding a valid token learns this, and it is what they need to fix.
            raise Unauthenticated(f"this token does not belong to user {user!r}: use its owner's user name, "
                                  "or send the token alone as 'Authorization: Bearer TOKEN'")
        raise Unauthenticated("invalid credentials")
    return found


class AccessLogger(AbstractAccessLogger):
    """One structured line per request, after the response (streamed ones included) is done, and
    the request metrics (so streamed bodies count in full). Bound to its application by
    ``for_app``: a request aiohttp's parser rejected (bad chunk size, too many headers) never
    reached the application, so ``request.app`` and its route cannot be asked for."""

    app: web.Application

    @classmethod
    def for_app(cls, app: web.Application) -> type["AccessLogger"]:
        return type("BoundAccessLogger", (cls,), {"app": app})

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:  # noqa: A002
        identity = request.get(IDENTITY)
        if REQUEST_ID in request:  # our middleware ran, so the router did too
            route = request.match_info.route.resource if request.match_info.route else None
            label = route.canonical if route else "unmatched"
        else:
            label = "rejected"
        bytes_in = request.get(BYTES_IN, request.content_length)
        self.app[METRICS].observe(label, request.method, response.status, time, request.path, bytes_in,
                                  response.body_length)
        structlog.get_logger("modelrepo.access").info(
            "request",
            request_id=request.get(REQUEST_ID),
            method=request.method,
            path=request.path,
            status=response.status,
            bytes_out=response.body_length,
            bytes_in=bytes_in,
            duration_ms=round(time * 1000, 2),
            user=identity.name if identity else None,
            remote=client_address(request, self.app[SETTINGS].server),
        )


class ProtocolLog(logging.LoggerAdapter):
    """aiohttp's connection-level logger. aiohttp logs every request its parser rejects (a bad
    chunk size, too many headers, TLS sent to a plain port) with a full traceback: any client could
    flood the log that way. Those get one warning line (the access log has the request); anything
    else aiohttp reports keeps its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})

    def exception(self, msg: object, *args: object, exc_info: object = True, **kwargs: object) -> None:
        exc = sys.exc_info()[1] if exc_info is True else exc_info
        if isinstance(exc, HttpProcessingError):
            log.warning("http_request_rejected", status=exc.code, reason=str(exc.message).splitlines()[0][:200])
            return
        self.logger.error(msg, *args, exc_info=exc_info, **kwargs)  # type: ignore[arg-type]
