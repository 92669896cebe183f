"""A minimal Xet producer for tests: chunks -> serialized xorb, files -> upload shard. It follows
the spec (hub-docs docs/xet) independently of the server's parser, so the two check each other;
the end-to-end tests use the real hf_xet client for the happy path."""

import hashlib
import struct

import lz4.frame

from modelrepo.xet import hashes, shard


def serialize_xorb(chunks: list[bytes], scheme: int = 1, footer: bool = True) -> tuple[bytes, bytes]:
    """(xorb hash, serialized bytes)."""
    out = bytearray()
    for data in chunks:
        if scheme == 0:
            payload = data
        elif scheme == 1:
            payload = lz4.frame.compress(data)
        else:  # byte grouping then LZ4
            grouped = b"".join(data[i::4] for i in range(4))
            payload = lz4.frame.compress(grouped)
        out += bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme]) + len(data).to_bytes(3, "little")
        out += payload
    if footer:
        body = b"XETBLOB" + bytes([1]) + bytes(24)
        out += body + struct.pack("<I", len(body))
    h = hashes.xorb_hash([(hashes.chunk_hash(c), len(c)) for c in chunks])
    return h, bytes(out)


def upload_shard(files: list[tuple[list[tuple[bytes, int, int, list[bytes]]], bytes]],
                 xorbs: list[tuple[bytes, list[bytes]]] = ()) -> bytes:
    """files: ([(xorb hash, start, end, chunks of that xorb)], file bytes); xorbs: (hash, chunks)."""
    out = bytearray(shard.TAG + struct.pack("<QQ", 2, 0))
    for terms, content in files:
        leaves = []
        for _, start, end, chunks in terms:
            leaves += [(hashes.chunk_hash(c), len(c)) for c in chunks[start:end]]
        out += hashes.file_hash(leaves) + struct.pack("<II", shard.FLAG_VERIFICATION | shard.FLAG_METADATA_EXT,
                                                      len(terms)) + bytes(8)
        for xh, start, end, chunks in terms:
            out += xh + struct.pack("<IIII", 0, sum(len(c) for c in chunks[start:end]), start, end)
        for xh, start, end, chunks in terms:
            out += hashes.verification_hash([hashes.chunk_hash(c) for c in chunks[start:end]]) + bytes(16)
        # hf_xet writes the sha256 like a Xet hash (parsed from its hex string as u64 words).
        out += hashes.from_hex(hashlib.sha256(content).hexdigest()) + bytes(16)
    out += shard.BOOKEND
    for xh, chunks in xorbs:
        out += xh + struct.pack("<IIII", 0, len(chunks), sum(map(len, chunks)), 0)
        offset = 0
        for c in chunks:
            out += hashes.chunk_hash(c) + struct.pack("<II", offset, len(c)) + bytes(8)
            offset += len(c)
    out += shard.BOOKEND
    return bytes(out)
