"""Short-lived signed tokens for LFS transfer actions.

The batch API hands each action an ``Authorization`` header carrying one of these: it names the
operation, the model, the OID and its size, and an expiry, signed with the daemon's signing key
(kept in the catalog, shared by every process: accounts/signing_keys.py). A transfer needs no catalog lookup to authorize, and a token for one
repository, object or operation is useless for any other.
"""

import base64
import hmac
import time
from dataclasses import dataclass
from hashlib import sha256

PREFIX = "lfs1."


@dataclass(frozen=True)
class ActionClaim:
    operation: str  # "upload" | "download" | "verify"
    model_key: str  # "<id>.<created_ms>": a deleted model's id may be reused, its key never
    oid: str
    size: int
    expires: int
    # Extra binding, e.g. the staging key of an S3 direct upload that verify must check.
    nonce: str = ""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ActionSigner:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def sign(self, operation: str, model_key: str, oid: str, size: int, ttl: float, nonce: str = "") -> str:
        if ":" in nonce or ":" in model_key:
            raise ValueError("nonce and model key must not contain ':'")
        expires = int(time.time() + ttl)
        payload = f"{operation}:{model_key}:{oid}:{size}:{expires}:{nonce}".encode()
        mac = hmac.new(self._key, payload, sha256).digest()
        return PREFIX + _b64(payload) + "." + _b64(mac)

    def verify(self, token: str) -> ActionClaim | None:
        """The claim if the token is authentic and unexpired, else None."""
        if not token.startswith(PREFIX):
            return None
        try:
            payload_b64, mac_b64 = token[len(PREFIX):].split(".")
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(hmac.new(self._key, payload, sha256).digest(), mac):
            return None
        try:
            op, model_key, oid, size, expires, nonce = payload.decode().split(":")
            claim = ActionClaim(op, model_key, oid, int(size), int(expires), nonce)
        except ValueError:
            return None
        if claim.expires < time.time():
            return None
        return claim
