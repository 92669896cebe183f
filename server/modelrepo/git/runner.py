"""Run git's own protocol engines (upload-pack, receive-pack) as ``--stateless-rpc`` subprocesses.

We do not reimplement the pack protocol: git speaks v0, v2, shallow, filters and every capability
correctly. Our job is to pipe bodies both ways without buffering them and to give receive-pack's
hooks what they need to call back into the daemon.
"""

import asyncio
import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path

from modelrepo.errors import InvalidInput, ServiceBusy

SERVICES = ("git-upload-pack", "git-receive-pack")
# Only well-formed key=value lists reach GIT_PROTOCOL (the header is client-controlled).
GIT_PROTOCOL_RE = re.compile(r"^[0-9a-zA-Z]+=[0-9a-zA-Z]+(:[0-9a-zA-Z]+=[0-9a-zA-Z]+)*$")
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
# What a client told to wait by the process cap is asked to wait: a clone's negotiation is short.
BUSY_RETRY_AFTER = 5.0
_HEX4 = re.compile(rb"^[0-9a-f]{4}$")
LARGE_PACKET_MAX = 65520  # git's pkt-line limit: 4 header bytes + 65516 of payload


def pkt_line(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


def service_preamble(service: str) -> bytes:
    """The '# service=…' pkt-line and flush that v0/v1 info/refs responses start with."""
    return pkt_line(f"# service={service}\n".encode()) + b"0000"


def protocol_version(header: str | None) -> str | None:
    if header and GIT_PROTOCOL_RE.match(header):
        return header
    return None


def is_v2(git_protocol: str | None) -> bool:
    return bool(git_protocol) and "version=2" in git_protocol.split(":")


# git's own words when it dies on what the client sent (well framed, but not the protocol): these are
# the client's errors. git has no other channel than stderr for them; anything else is ours (500).
_CLIENT_FAULT = re.compile(r"^fatal: (?:git upload-pack: )?(?P<why>(?:protocol error|not our ref|unknown capability|"
                           r"invalid command|no command requested|expected |unexpected |bad |invalid |unknown ).*)$", re.MULTILINE)


def client_fault(stderr: str) -> str | None:
    """git's complaint about the request, when its stderr says the request was at fault."""
    m = _CLIENT_FAULT.search(stderr)
    return m.group("why")[:300] if m else None


class PktLineCheck:
    """Checks that a request body is framed as pkt-lines before git reads it: git answers framing
    errors by exiting, which would look like the server failing, and a garbage body should not
    cost a git process its start-up. Upload-pack bodies are pkt-lines throughout; receive-pack
    bodies are pkt-lines up to the first flush, then the pack (``until_flush``)."""

    def __init__(self, *, until_flush: bool) -> None:
        self.until_flush = until_flush
        self.done = False
        self._head = b""
        self._skip = 0

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n and not self.done:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                continue
            take = 4 - len(self._head)
            self._head += data[i:i + take]
            i += take
            if len(self._head) < 4:
                return
            head, self._head = self._head, b""
            if not _HEX4.match(head.lower()):
                raise InvalidInput("malformed git request: a pkt-line must start with 4 hex digits")
            length = int(head, 16)
            if length == 0 and self.until_flush:
                self.done = True
            elif length in (2, 3) or length > LARGE_PACKET_MAX:
                # 0002 (response end) only ever goes from server to client; git 2.39 aborts on one.
                raise InvalidInput(f"malformed git request: invalid pkt-line length {length}")
            elif length > 4:
                self._skip = length - 4
            # 0000 flush and 0001 delimiter (protocol v2) carry no payload.

    def finish(self) -> None:
        if self._head or self._skip:
            raise InvalidInput("malformed git request: the body ends inside a pkt-line")


class ProcessSlots:
    """Caps concurrent git protocol processes, in total and per client address, so stalled or
    abusive clients cannot exhaust processes and file descriptors; past a cap the request is
    refused at once (503 + Retry-After) rather than queued."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self.running: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.running.values())

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[None]:
        if self.count >= self.total:
            raise ServiceBusy(f"the server is running its maximum of {self.total} git processes; "
                              "retry shortly", BUSY_RETRY_AFTER)
        if self.running[client] >= self.per_client:
            raise ServiceBusy(f"{self.per_client} git operations from {client} are already running; "
                              "retry when one finishes", BUSY_RETRY_AFTER)
        self.running[client] += 1
        try:
            yield
        finally:
            self.running[client] -= 1
            if not self.running[client]:
                del self.running[client]


class GitRunner:
    def __init__(self, binary: str = "git", max_processes: int = 64, max_per_client: int = 16) -> None:
        self.binary = binary
        self.slots = ProcessSlots(max_processes, max_per_client)

    def environment(self, git_protocol: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
        # A minimal environment: nothing from the daemon's own (tokens, S3 keys) leaks into git
        # or its hooks, and the user's ~/.gitconfig cannot change server behaviour.
        env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["GIT_CONFIG_GLOBAL"] = os.devnull
        if git_protocol:
            env["GIT_PROTOCOL"] = git_protocol
        if extra:
            env.update(extra)
        return env

    async def spawn(self, service: str, repo: Path, *, advertise: bool, git_protocol: str | None,
                    extra_env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
        assert service in SERVICES
        args = [self.binary, service.removeprefix("git-"), "--stateless-rpc"]
        if advertise:
            args.append("--advertise-refs")
        args.append(str(repo))
        return await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL if advertise else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.environment(git_protocol, extra_env),
            # asyncio buffers up to 2x this per pipe while the client lags: keep it small.
            limit=128 * 1024,
        )


async def read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read at most ``limit`` bytes of a stream and drain the rest (stderr of git)."""
    buf = bytearray()
    while chunk := await stream.read(65536):
        if len(buf) < limit:
            buf += chunk[: limit - len(buf)]
    return bytes(buf)


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    await proc.wait()
