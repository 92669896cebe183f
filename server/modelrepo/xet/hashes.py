"""Xet hashes (hub-docs docs/xet/hashing.md): keyed BLAKE3 over chunks, an aggregated Merkle
tree for xorbs and files, and term verification hashes.

Hashes are 32 raw bytes here. On the wire (URL paths, JSON) they are written the spec's way:
each 8-byte word as a little-endian u64 in hex, so ``to_hex`` is not ``bytes.hex``.
"""

import re
import struct

from blake3 import blake3

DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
                  155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83,
                           111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])
VERIFICATION_KEY = bytes([127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205,
                          38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195])
ZERO_KEY = bytes(32)
BRANCHING = 4  # mean branching factor of the aggregated tree
GLOBAL_DEDUP_MODULUS = 1024  # a chunk whose hash is 0 mod this is indexed for global dedup
HEX_RE = re.compile(r"^[0-9a-f]{64}$")


def to_hex(h: bytes) -> str:
    return "".join(f"{w:016x}" for w in struct.unpack("<4Q", h))


def from_hex(text: str) -> bytes:
    """Raises ValueError on anything but 64 lowercase hex characters."""
    if not isinstance(text, str) or not HEX_RE.match(text):
        raise ValueError(f"invalid hash {text!r}: expected 64 lowercase hex characters")
    return struct.pack("<4Q", *(int(text[i:i + 16], 16) for i in range(0, 64, 16)))


def chunk_hash(data: bytes | memoryview) -> bytes:
    return blake3(data, key=DATA_KEY).digest()


def _mod(h: bytes, n: int) -> int:
    """The reference implementation's ``hash % n``: the last 8 bytes as a little-endian u64."""
    return struct.unpack_from("<Q", h, 24)[0] % n


def dedup_eligible(h: bytes) -> bool:
    return _mod(h, GLOBAL_DEDUP_MODULUS) == 0


def _next_cut(nodes: list[tuple[bytes, int]], start: int) -> int:
    remaining = len(nodes) - start
    if remaining <= 2:
        return len(nodes)
    end = start + min(2 * BRANCHING + 1, remaining)
    for i in range(start + 2, end):
        if _mod(nodes[i][0], BRANCHING) == 0:
            return i + 1
    return end


def _node(nodes: list[tuple[bytes, int]]) -> tuple[bytes, int]:
    text = "".join(f"{to_hex(h)} : {size}\n" for h, size in nodes)
    return blake3(text.encode(), key=INTERNAL_NODE_KEY).digest(), sum(size for _, size in nodes)


def merkle_root(chunks: list[tuple[bytes, int]]) -> bytes:
    """Root of the aggregated tree over (chunk hash, chunk length) leaves: the xorb hash."""
    if not chunks:
        return ZERO_KEY
    level = list(chunks)
    while len(level) > 1:
        nxt, i = [], 0
        while i < len(level):
            cut = _next_cut(level, i)
            nxt.append(_node(level[i:cut]))
            i = cut
        level = nxt
    return level[0][0]


def xorb_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    return merkle_root(chunks)


def file_hash(chunks: list[tuple[bytes, int]]) -> bytes:
    if not chunks:
        return ZERO_KEY
    return blake3(merkle_root(chunks), key=ZERO_KEY).digest()


def verification_hash(chunk_hashes: list[bytes]) -> bytes:
    return blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()


def keyed(h: bytes, key: bytes) -> bytes:
    """The HMAC the dedup shard applies to chunk hashes (footer ``chunk_hash_hmac_key``)."""
    return blake3(h, key=key).digest()
