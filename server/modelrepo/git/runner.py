"""Run git's own protocol engines (upload-pack, receive-pack) as ``--stateless-rpc`` subprocesses.

We do not reimplement the pack protocol: git speaks v0, v2, shallow, filters and every capability
correctly. Our job is to pipe bodies both ways without buffering them and to give receive-pack's
hooks what they need to call back into the daemon.
"""

import asyncio
import os
import re
from collections.abc import Mapping
from pathlib import Path

SERVICES = ("git-upload-pack", "git-receive-pack")
# Only well-formed key=value lists reach GIT_PROTOCOL (the header is client-controlled).
GIT_PROTOCOL_RE = re.compile(r"^[0-9a-zA-Z]+=[0-9a-zA-Z]+(:[0-9a-zA-Z]+=[0-9a-zA-Z]+)*$")
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


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


class GitRunner:
    def __init__(self, binary: str = "git") -> None:
        self.binary = binary

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
