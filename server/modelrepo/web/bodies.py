"""Request bodies, read the one way every door shares: to the end, bounded, never stalled forever.

``request.content.read(n)`` returns whatever has arrived so far, which over a real network is one
TCP segment of a longer body; so a JSON body is read until EOF (Content-Length or the last chunk)
and refused with 413 the moment it passes the limit. Every read has an idle timeout: a client that
stops sending gets 408 instead of holding a connection (and maybe a git process) open forever.
A body aiohttp cannot decode (bad gzip, bad chunk framing) is the client's error: 400.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from modelrepo.errors import InvalidInput, RequestTimeout, TooLarge
from modelrepo.keys import SETTINGS

BYTES_IN = web.RequestKey("bytes_in", int)
CHUNK = 256 * 1024
OBJECT = {"type": "object"}


async def chunks(request: web.Request, size: int = CHUNK) -> AsyncIterator[bytes]:
    """The body as it arrives (at most ``size`` bytes a chunk), counted in BYTES_IN for the access
    log; 408 when nothing arrives for ``limits.body_idle_timeout``."""
    idle = request.app[SETTINGS].limits.body_idle_timeout
    while True:
        try:
            async with asyncio.timeout(idle):
                chunk = await request.content.read(size)
        except TimeoutError:
            raise RequestTimeout(f"no request body data for {idle:g} s") from None
        except (RequestPayloadError, HttpProcessingError) as exc:
            # The rest cannot be decoded either: mark the body finished so that aiohttp does not
            # linger reading it after our 400 (it would hit the same error); the middleware
            # closes the connection.
            request.content.feed_eof()
            raise InvalidInput(f"the request body cannot be decoded: {_reason(exc)}") from None
        if not chunk:
            return
        request[BYTES_IN] = request.get(BYTES_IN, 0) + len(chunk)
        yield chunk


def _reason(exc: HttpProcessingError) -> str:
    """aiohttp's message without the raw bytes it sometimes quotes."""
    return (getattr(exc, "message", "") or str(exc)).splitlines()[0].strip().rstrip(":") or "malformed"


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is larger than ``limit`` (declared or actual)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"request body larger than {limit} bytes")
    buf = bytearray()
    async for chunk in chunks(request):
        buf += chunk
        if len(buf) > limit:
            raise TooLarge(f"request body larger than {limit} bytes")
    return bytes(buf)


async def read_json(request: web.Request, schema: dict = OBJECT, *, required: bool = True) -> Any:
    """The body as JSON valid under ``schema``. An empty body is 400 when ``required``, else ``{}``."""
    raw = await read_bounded(request, request.app[SETTINGS].limits.max_json_body)
    if not raw.strip():
        if required:
            raise InvalidInput("a JSON request body is required")
        raw = b"{}"
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        where = _lone_surrogate(body)
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    except RecursionError:
        raise InvalidInput("request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, NaN, an integer of more than 4300 digits
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if where is not None:
        raise InvalidInput(f"{where or '(body)'}: not valid Unicode (a lone surrogate escape such as \\ud800)")
    if errors:
        err = errors[0]
        raise InvalidInput(f"{'/'.join(str(p) for p in err.absolute_path) or '(body)'}: {_in_words(err)}")
    return _as_integers(body, schema)


def _as_integers(value: Any, schema: dict) -> Any:
    """JSON Schema counts 105835.0 as an integer, so the server takes it as 105835: services then
    see the Python int they check for."""
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(value, float) and "integer" in kinds and value.is_integer():
        return int(value)
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        return {k: _as_integers(v, schema["properties"].get(k, {})) for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_as_integers(v, schema["items"]) for v in value]
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _in_words(err: jsonschema.ValidationError) -> str:
    """jsonschema's message, except that a pattern is never shown to a user: the schema's
    ``description`` says in words what the pattern wants."""
    if err.validator == "pattern":
        return f"{err.instance!r} is not valid: {err.schema.get('description', 'see openapi.json')}"
    return err.message


def _lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) that is not encodable Unicode, else None. JSON allows
    ``"\\udc80"``; UTF-8, SQLite and git do not."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}/{key}" if path else str(key)
            if _lone_surrogate(key) is not None:
                return path or "(body)"
            found = _lone_surrogate(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}/{i}" if path else str(i))
            if found is not None:
                return found
    return None
