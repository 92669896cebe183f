"""Shard format (hub-docs docs/xet/shard.md): parse the shards clients upload, write the ones
global dedup answers with. Every entry is 48 bytes, little-endian."""

import struct
import time
from dataclasses import dataclass

from modelrepo.errors import InvalidInput
from modelrepo.xet import hashes

TAG = b"HFRepoMetaData\x00" + bytes([0x55, 0x69, 0x67, 0x45, 0x6A, 0x7B, 0x81, 0x57, 0x83, 0xA5, 0xBD, 0xD9,
                                     0x5C, 0xCD, 0xD1, 0x4A, 0xA9])
HEADER_VERSION = 2
FOOTER_VERSION = 1
FOOTER_SIZE = 200
ENTRY = 48
BOOKEND = b"\xff" * 32 + b"\x00" * 16
FLAG_VERIFICATION = 1 << 31
FLAG_METADATA_EXT = 1 << 30
MAX_SHARD_BYTES = 64 * 1024 * 1024


class InvalidShard(InvalidInput):
    code = "invalid_shard"


@dataclass(frozen=True)
class Term:
    xorb: bytes
    start: int  # chunk index, inclusive
    end: int  # chunk index, exclusive
    unpacked: int
    verification: bytes | None


@dataclass(frozen=True)
class FileInfo:
    hash: bytes
    terms: list[Term]
    sha256: bytes | None  # raw as in the shard: its string form (hashes.to_hex) is the sha256 hex

    @property
    def size(self) -> int:
        return sum(t.unpacked for t in self.terms)


@dataclass(frozen=True)
class CasInfo:
    hash: bytes
    chunks: list[tuple[bytes, int, int]]  # (chunk hash, byte offset, length)


@dataclass(frozen=True)
class Shard:
    files: list[FileInfo]
    xorbs: list[CasInfo]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def entry(self) -> bytes:
        if self.pos + ENTRY > len(self.data):
            raise InvalidShard(f"shard ends inside an entry at byte {self.pos}")
        out = self.data[self.pos:self.pos + ENTRY]
        self.pos += ENTRY
        return out


def parse(data: bytes) -> Shard:
    """Structure only; what the entries claim is checked against the catalog by the service."""
    if len(data) > MAX_SHARD_BYTES:
        raise InvalidShard(f"shard of {len(data)} bytes exceeds the limit of {MAX_SHARD_BYTES}")
    if len(data) < ENTRY or data[:32] != TAG:
        raise InvalidShard("not a shard: the header tag is missing")
    version, footer_size = struct.unpack_from("<QQ", data, 32)
    if version != HEADER_VERSION:
        raise InvalidShard(f"shard header version {version}; this server reads version {HEADER_VERSION}")
    if footer_size not in (0, FOOTER_SIZE):
        raise InvalidShard(f"shard footer size {footer_size}; expected 0 or {FOOTER_SIZE}")
    r = _Reader(data[:len(data) - footer_size])
    r.pos = ENTRY
    files: list[FileInfo] = []
    while True:
        head = r.entry()
        if head == BOOKEND:
            break
        file_hash = head[:32]
        flags, count = struct.unpack_from("<II", head, 32)
        raw_terms = [struct.unpack("<32sIIII", r.entry()) for _ in range(count)]
        verifications: list[bytes | None] = [None] * count
        if flags & FLAG_VERIFICATION:
            verifications = [r.entry()[:32] for _ in range(count)]
        sha256 = r.entry()[:32] if flags & FLAG_METADATA_EXT else None
        terms = []
        for (xorb, _flags, unpacked, start, end), verification in zip(raw_terms, verifications):
            if end <= start:
                raise InvalidShard(f"empty chunk range [{start}, {end}) in file {hashes.to_hex(file_hash)}")
            terms.append(Term(xorb, start, end, unpacked, verification))
        files.append(FileInfo(file_hash, terms, sha256))
    xorbs: list[CasInfo] = []
    while True:
        head = r.entry()
        if head == BOOKEND:
            break
        _flags, count, _bytes_in_cas, _bytes_on_disk = struct.unpack_from("<IIII", head, 32)
        chunks = []
        for _ in range(count):
            h, offset, length = struct.unpack_from("<32sII", r.entry())
            chunks.append((h, offset, length))
        xorbs.append(CasInfo(head[:32], chunks))
    if not footer_size and r.pos != len(r.data):  # with a footer, lookup tables follow: not needed here
        raise InvalidShard(f"{len(r.data) - r.pos} unexpected bytes after the CAS info section")
    return Shard(files, xorbs)


def _truncated(h: bytes) -> int:
    """The lookup tables' key: the hash's first 8 bytes as a little-endian u64."""
    return struct.unpack_from("<Q", h)[0]


def dedup_shard(xorbs: list[tuple[bytes, list[tuple[bytes, int, int]], int]], key: bytes, ttl: int) -> bytes:
    """A shard with no files and the given xorbs ((hash, chunks, serialized size)) whose chunk
    hashes are keyed with ``key``: a client recognises chunks it has, and learns nothing about
    chunks it has not (it could not prove possession of them in a shard of its own).

    hf_xet files this shard in its cache and searches it through the lookup tables that follow
    the CAS section (sorted (truncated hash, index) pairs, located by the footer), so they are
    written as the reference implementation writes them."""
    out = bytearray(TAG + struct.pack("<QQ", HEADER_VERSION, FOOTER_SIZE))
    out += BOOKEND
    cas_offset = len(out)
    cas_lookup: list[tuple[int, int]] = []
    chunk_lookup: list[tuple[int, int, int]] = []
    index = 0
    for xorb_hash, chunks, size in xorbs:
        unpacked = sum(length for _, _, length in chunks)
        cas_lookup.append((_truncated(xorb_hash), index))
        out += xorb_hash + struct.pack("<IIII", 0, len(chunks), unpacked, size)
        for i, (h, offset, length) in enumerate(chunks):
            keyed = hashes.keyed(h, key)
            chunk_lookup.append((_truncated(keyed), index, i))
            out += keyed + struct.pack("<II", offset, length) + bytes(8)
        index += 1 + len(chunks)
    out += BOOKEND
    file_lookup_offset = len(out)  # no files: an empty table
    cas_lookup_offset = len(out)
    for k, i in sorted(cas_lookup):
        out += struct.pack("<QI", k, i)
    chunk_lookup_offset = len(out)
    for k, i, j in sorted(chunk_lookup):
        out += struct.pack("<QII", k, i, j)
    footer_offset = len(out)
    now = int(time.time())
    stored = sum(size for _, _, size in xorbs)
    unpacked_total = sum(length for _, chunks, _ in xorbs for _, _, length in chunks)
    out += struct.pack("<9Q", FOOTER_VERSION, ENTRY, cas_offset, file_lookup_offset, 0, cas_lookup_offset,
                       len(cas_lookup), chunk_lookup_offset, len(chunk_lookup))
    out += key + struct.pack("<QQ", now, now + ttl) + bytes(48)
    out += struct.pack("<4Q", stored, unpacked_total, unpacked_total, footer_offset)
    assert len(out) - footer_offset == FOOTER_SIZE
    return bytes(out)
