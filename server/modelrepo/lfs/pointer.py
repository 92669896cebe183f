"""The Git LFS pointer file (git-lfs docs/spec.md): the small text blob git stores in place of a
large file. Parsed where trees are read (push facts, snapshots, Hub reads, fsck) and formatted where
the server writes trees itself (Hub commits); both live here so the two sides cannot drift.
"""

import re
from dataclasses import dataclass

_POINTER_RE = re.compile(
    rb"^version https://git-lfs\.github\.com/spec/v1\n"
    rb"(?:[a-z0-9.-]+ [^\n]*\n)*?"
    rb"oid sha256:([0-9a-f]{64})\n"
    rb"size (\d+)\n"
    rb"(?:[a-z0-9.-]+ [^\n]*\n)*$"
)
# git-lfs never writes a pointer this large; a blob of this size or more is never read as one, so
# callers can decide from an object header alone whether to load a blob at all.
POINTER_MAX = 1024


@dataclass(frozen=True)
class LfsPointer:
    oid: str
    size: int


def parse_pointer(data: bytes) -> LfsPointer | None:
    """The pointer ``data`` is, or None if it is not one (any other blob)."""
    if len(data) >= POINTER_MAX:
        return None
    m = _POINTER_RE.match(data)
    if not m:
        return None
    return LfsPointer(m.group(1).decode(), int(m.group(2)))


def format_pointer(pointer: LfsPointer) -> bytes:
    """The canonical pointer text, byte for byte what ``git lfs clean`` writes for the object."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{pointer.oid}\nsize {pointer.size}\n".encode()
