"""Typed domain errors. Services raise these; one middleware maps them to HTTP.

Keeping aiohttp out of this module means the service layer and the CLI share the same errors, and
a handler can never forget to stop after writing an error status (Gitea's missing-return bug).
"""


class ModelrepoError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(ModelrepoError):
    status = 400
    code = "invalid_input"


class Unauthenticated(ModelrepoError):
    """No (valid) credentials where some are needed: 401 with a challenge."""

    status = 401
    code = "unauthenticated"


class Forbidden(ModelrepoError):
    """Authenticated, allowed to see the thing, not allowed to do this to it."""

    status = 403
    code = "forbidden"


class NotFound(ModelrepoError):
    status = 404
    code = "not_found"


class Conflict(ModelrepoError):
    status = 409
    code = "conflict"


class TooLarge(ModelrepoError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(ModelrepoError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(ModelrepoError):
    status = 422
    code = "unprocessable"


def model_not_found() -> NotFound:
    """The one message for 'does not exist' and 'exists but you may not read it': they must be
    byte-identical so that a private model cannot be told apart from a missing one."""
    return NotFound("model not found", code="model_not_found")


class IntegrityError(ModelrepoError):
    """Uploaded bytes do not match their OID or declared size; nothing was stored."""

    status = 422
    code = "integrity_error"


class StorageUnavailable(ModelrepoError):
    status = 503
    code = "storage_unavailable"


class PreconditionFailed(ModelrepoError):
    status = 412
    code = "precondition_failed"


class EntryNotFound(NotFound):
    """A path that is not in a revision; carries the commit it was looked up in (the Hub client
    caches the absence per commit)."""

    code = "entry_not_found"

    def __init__(self, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.commit = commit


class RequestTimeout(ModelrepoError):
    """The client stopped sending its body: nothing arrived for the idle timeout."""

    status = 408
    code = "request_timeout"


class RetryLater(ModelrepoError):
    """Refusals that say when to come back (Retry-After, whole seconds rounded up)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(int(retry_after + 0.999))}


class TooManyRequests(RetryLater):
    status = 429
    code = "too_many_requests"


class ServiceBusy(RetryLater):
    """A capacity limit (git processes) is reached: the client should come back shortly."""

    status = 503
    code = "busy"


class CatalogBusy(RetryLater):
    """A catalog lock stayed held past ``catalog.lock_timeout`` (another transaction is stuck or
    slow): the transaction was rolled back, nothing changed, and trying again shortly is safe."""

    status = 503
    code = "catalog_busy"


class InsufficientStorage(ModelrepoError):
    """A namespace quota would be exceeded (git-lfs batch.md names 507 for this)."""

    status = 507
    code = "quota_exceeded"
