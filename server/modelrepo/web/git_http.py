"""Git smart HTTP: ``info/refs`` advertisements and the upload-pack / receive-pack RPCs.

Bodies are never buffered: the request stream feeds git's stdin while git's stdout feeds a chunked
response, each side awaiting the other's drain (back-pressure), so a multi-GiB push or clone costs
a few socket buffers of memory. aiohttp has already inflated a gzip request body by the time we
read it.
"""

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from modelrepo.errors import Forbidden, InvalidInput, ModelrepoError, TooLarge, UnsupportedMediaType
from modelrepo.keys import GIT, HOOK_SOCKET, METRICS, MODELS, PUSHES, SETTINGS
from modelrepo.git import repos, runner as git_rpc
from modelrepo.models.service import Model
from modelrepo.push.sessions import PushSession
from modelrepo.web.bodies import CHUNK, chunks
from modelrepo.web.middlewares import NO_CACHE, REQUEST_ID, identity_of
from modelrepo.web.routing import ErrorShape, add_route, base_url, client_address, repo_name

log = structlog.get_logger("modelrepo.git")


async def _authorize(request: web.Request, service: str) -> Model:
    ns, name = repo_name(request)
    models = request.app[MODELS]
    identity = identity_of(request)
    if service == "git-receive-pack":
        return await models.for_write(identity, ns, name)
    return await models.for_read(identity, ns, name)


def _service(request: web.Request, service: str | None) -> str:
    if service not in git_rpc.SERVICES:
        # No dumb protocol: it would bypass access control on objects and cannot run hooks.
        raise Forbidden("only the smart HTTP protocol is served (git >= 1.6.6)", code="dumb_http_unsupported")
    return service


async def info_refs(request: web.Request) -> web.StreamResponse:
    service = _service(request, request.query.get("service"))
    model = await _authorize(request, service)
    git_protocol = git_rpc.protocol_version(request.headers.get("Git-Protocol"))
    path = request.app[MODELS].path(model)
    runner = request.app[GIT]
    with runner.slots.hold(client_address(request, request.app[SETTINGS].server)):
        return await _advertise(request, runner, service, path, git_protocol)


async def _advertise(request: web.Request, runner: git_rpc.GitRunner, service: str, path,
                     git_protocol: str | None) -> web.StreamResponse:
    held = await asyncio.to_thread(repos.Held, path)
    proc = await runner.spawn(service, path, advertise=True, git_protocol=git_protocol)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(git_rpc.read_bounded(proc.stderr, 8192))
        first = await proc.stdout.read(CHUNK)
        if not first:
            await proc.wait()
            err = await stderr_task
            await asyncio.to_thread(held.check)  # deleted (by any process) since the access check: 404
            log.error("advertise_failed", service=service, rc=proc.returncode, stderr=err.decode(errors="replace"))
            raise ModelrepoError("git failed to advertise refs")
        resp = web.StreamResponse(headers={**NO_CACHE, "Content-Type": f"application/x-{service}-advertisement",
                                           "X-Request-Id": request[REQUEST_ID]})
        await resp.prepare(request)
        if not git_rpc.is_v2(git_protocol):
            await resp.write(git_rpc.service_preamble(service))
        chunk = first
        while chunk:
            await resp.write(chunk)
            chunk = await proc.stdout.read(CHUNK)
        await proc.wait()
        await stderr_task
        await resp.write_eof()
        return resp
    finally:
        await git_rpc.kill(proc)


async def upload_pack(request: web.Request) -> web.StreamResponse:
    return await _rpc(request, "git-upload-pack")


async def receive_pack(request: web.Request) -> web.StreamResponse:
    return await _rpc(request, "git-receive-pack")


async def _rpc(request: web.Request, service: str) -> web.StreamResponse:
    expected = f"application/x-{service}-request"
    if request.headers.get("Content-Type", "").split(";")[0].strip().lower() != expected:
        raise UnsupportedMediaType(f"expected Content-Type {expected}")
    model = await _authorize(request, service)
    settings = request.app[SETTINGS]
    git_protocol = git_rpc.protocol_version(request.headers.get("Git-Protocol"))
    extra_env: dict[str, str] = {}
    secret = None
    pushes = request.app[PUSHES]
    if service == "git-receive-pack":
        identity = identity_of(request)
        secret = pushes.open(PushSession(model_id=model.id, namespace=model.namespace, name=model.name,
                                         identity=identity, request_id=request[REQUEST_ID],
                                         base_url=base_url(request)))
        extra_env = {
            # This process's own socket: it holds the session the secret names.
            "MODELREPO_HOOK_SOCKET": str(request.app[HOOK_SOCKET]),
            "MODELREPO_HOOK_SECRET": secret,
            "MODELREPO_HOOK_REQUEST_ID": request[REQUEST_ID],
            # Reflog identity for the ref updates receive-pack makes.
            "GIT_COMMITTER_NAME": identity.name or "anonymous",
            "GIT_COMMITTER_EMAIL": f"{identity.name}@modelrepo.invalid",
        }
    limit = (settings.limits.max_upload_pack_request if service == "git-upload-pack"
             else settings.limits.max_push_size or None)
    body = _checked_body(request, service, limit)
    runner = request.app[GIT]
    try:
        # No process until the client has sent something: a stalled client holds a socket only.
        first = await anext(body, b"")
        if not first:
            raise InvalidInput("malformed git request: the body is empty")
        with runner.slots.hold(client_address(request, request.app[SETTINGS].server)):
            path = request.app[MODELS].path(model)
            held = await asyncio.to_thread(repos.Held, path)
            proc = await runner.spawn(service, path, advertise=False,
                                      git_protocol=git_protocol, extra_env=extra_env)
            resp = web.StreamResponse(headers={**NO_CACHE, "Content-Type": f"application/x-{service}-result",
                                               "X-Request-Id": request[REQUEST_ID]})
            try:
                with request.app[METRICS].active.labels("git").track_inprogress():
                    async with asyncio.timeout(settings.limits.git_rpc_timeout):
                        await _pump(request, proc, resp, first, body, held)
                return resp
            finally:
                await git_rpc.kill(proc)
    finally:
        if secret:
            pushes.close(secret)


async def _checked_body(request: web.Request, service: str, limit: int | None) -> AsyncIterator[bytes]:
    """The request body, bounded by ``limit`` and checked for pkt-line framing as it streams."""
    check = git_rpc.PktLineCheck(until_flush=service == "git-receive-pack")
    total = 0
    async for chunk in chunks(request, CHUNK):
        total += len(chunk)
        if limit is not None and total > limit:
            raise TooLarge(f"{service} request larger than {limit} bytes")
        check.feed(chunk)
        yield chunk
    check.finish()


async def _pump(request: web.Request, proc: asyncio.subprocess.Process, resp: web.StreamResponse,
                first: bytes, body: AsyncIterator[bytes], held: repos.Held) -> None:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def write(chunk: bytes) -> bool:
        try:
            stdin.write(chunk)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return False  # git stopped reading (it refused the push or failed): its stdout says why
        return True

    async def feed() -> None:
        # A ConnectionResetError from reading ``body`` is the client leaving: it propagates.
        try:
            if not await write(first):
                return
            async for chunk in body:
                if not await write(chunk):
                    return
        finally:
            stdin.close()

    async def relay() -> None:
        chunk = await stdout.read(CHUNK)
        if not chunk:
            return
        await resp.prepare(request)
        while chunk:
            await resp.write(chunk)
            chunk = await stdout.read(CHUNK)

    stderr_task = asyncio.create_task(git_rpc.read_bounded(proc.stderr, 16384))
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(feed())
            tg.create_task(relay())
    except* (ModelrepoError, ConnectionError) as group:
        raise group.exceptions[0] from None
    rc = await proc.wait()
    err = (await stderr_task).decode(errors="replace").strip()
    if rc != 0 and not resp.prepared:
        await asyncio.to_thread(held.check)  # deleted (by any process) since the access check: 404
    if rc != 0 or err:
        log.warning("git_rpc_stderr", rc=rc, stderr=err[-4000:]) if rc else log.debug("git_rpc_stderr", stderr=err)
    if not resp.prepared:
        if rc != 0:
            why = git_rpc.client_fault(err)
            if why is not None:
                raise InvalidInput(f"git refused the request: {why}", code="git_protocol_error")
            raise ModelrepoError(f"git exited with status {rc}")
        await resp.prepare(request)
    await resp.write_eof()


def add_routes(app: web.Application) -> None:
    # {name} may carry the ".git" suffix or not; repo_name strips it.
    add_route(app, "GET", "/{ns}/{name}/info/refs", info_refs, ErrorShape.REST)
    add_route(app, "POST", "/{ns}/{name}/git-upload-pack", upload_pack, ErrorShape.REST)
    add_route(app, "POST", "/{ns}/{name}/git-receive-pack", receive_pack, ErrorShape.REST)
