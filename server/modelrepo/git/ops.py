"""Running git on our repositories from the operator commands, with the daemon's minimal
environment (no user or system config, none of our secrets), async or not."""

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modelrepo.git.runner import GitRunner


@dataclass(frozen=True)
class GitResult:
    returncode: int
    output: str  # stdout and stderr, in that order

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _command(binary: str, repo: Path, args: tuple[str, ...]) -> list[str]:
    return [binary, "-C", str(repo), *args]


def _env(binary: str) -> dict[str, str]:
    return GitRunner(binary).environment(None, None)


async def git(binary: str, repo: Path, *args: str) -> GitResult:
    """Run ``git -C repo args`` without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *_command(binary, repo, args), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=_env(binary))
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return GitResult(proc.returncode, (out + err).decode(errors="replace"))


def git_sync(binary: str, repo: Path, *args: str) -> GitResult:
    """The same, for the synchronous backup and restore code."""
    proc = subprocess.run(_command(binary, repo, args), stdin=subprocess.DEVNULL, capture_output=True,
                          env=_env(binary), check=False)
    return GitResult(proc.returncode, (proc.stdout + proc.stderr).decode(errors="replace"))


def parse_count_objects(text: str) -> dict[str, int]:
    """``git count-objects -v`` output (``count: 12`` lines) as a dict of ints."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip().isdigit():
            out[key.strip()] = int(value.strip())
    return out
