"""The bridge between a receive-pack the daemon spawned and the hooks git runs inside it.

Each push gets a random secret, handed to git (and so to its hooks) in the environment. The hooks
present it on the internal socket; a push that did not come through the daemon has no valid secret
and is refused, so nobody with shell access can bypass the rules by pushing to the directory.
"""

import hmac
import secrets
import time
from dataclasses import dataclass, field

from modelrepo.accounts.access import Identity


@dataclass
class PushSession:
    model_id: int
    namespace: str
    name: str
    identity: Identity
    request_id: str
    base_url: str = ""
    started: float = field(default_factory=time.time)
    # Printed as remote: lines when the push is accepted (push.pickle_policy=warn findings).
    warnings: list[str] = field(default_factory=list)


class PushSessions:
    def __init__(self) -> None:
        self._sessions: dict[str, PushSession] = {}

    def open(self, session: PushSession) -> str:
        secret = secrets.token_hex(32)
        self._sessions[secret] = session
        return secret

    def close(self, secret: str) -> None:
        self._sessions.pop(secret, None)

    def lookup(self, secret: object) -> PushSession | None:
        if not isinstance(secret, str):
            return None
        for known, session in list(self._sessions.items()):
            if hmac.compare_digest(known, secret):
                return session
        return None

    def __len__(self) -> int:
        return len(self._sessions)
