"""Xorb format (hub-docs docs/xet/xorb.md): parse and verify a serialized xorb, decode chunk ranges.

A xorb is a sequence of chunks (8-byte header + compressed bytes) followed by a metadata footer
whose last 4 bytes are its length. We trust nothing in the footer: the chunk table (hash, byte
offset, length) the server keeps is the one it computed itself while verifying the chunks, and
the xorb is accepted only if the Merkle root of those chunks is the hash it was uploaded under.
"""

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import lz4.block
import lz4.frame

from modelrepo.errors import InvalidInput
from modelrepo.xet import hashes

# The spec caps a xorb at 64 MiB. The reference client cuts xorbs at 64 MiB of chunk data, so a
# xorb of incompressible chunks serializes a little larger (8-byte chunk headers, the footer's
# per-chunk index): allow that overhead, nothing more.
MAX_XORB_BYTES = 64 * 1024 * 1024 + 1024 * 1024
MAX_CHUNK_BYTES = 128 * 1024
HEADER = 8
NONE, LZ4, BG4_LZ4 = 0, 1, 2
_LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"
_ENTRY = struct.Struct("<32sII")  # chunk hash, byte offset of its header, uncompressed length


class InvalidXorb(InvalidInput):
    code = "invalid_xorb"


@dataclass(frozen=True)
class Chunk:
    hash: bytes
    offset: int  # of its header in the serialized xorb
    length: int  # uncompressed


@dataclass(frozen=True)
class XorbTable:
    """What the catalog keeps about a stored xorb: its chunks and where their bytes end."""

    chunks: list[Chunk]
    data_end: int

    @property
    def unpacked(self) -> int:
        return sum(c.length for c in self.chunks)

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """[first byte, end byte) of chunks [start, end) in the serialized xorb."""
        stop = self.chunks[end].offset if end < len(self.chunks) else self.data_end
        return self.chunks[start].offset, stop

    def pack(self) -> bytes:
        return b"".join(_ENTRY.pack(c.hash, c.offset, c.length) for c in self.chunks)

    @classmethod
    def unpack(cls, blob: bytes, data_end: int) -> "XorbTable":
        return cls([Chunk(*_ENTRY.unpack_from(blob, i)) for i in range(0, len(blob), _ENTRY.size)], data_end)


def _ungroup4(data: bytes) -> bytes:
    """Undo byte grouping: group i holds bytes i, i+4, i+8, ... of the original."""
    n = len(data)
    out = bytearray(n)
    pos = 0
    for i in range(4):
        count = len(range(i, n, 4))
        out[i::4] = data[pos:pos + count]
        pos += count
    return bytes(out)


def _lz4(data: bytes, size: int) -> bytes:
    if data[:4] == _LZ4_FRAME_MAGIC:
        return lz4.frame.decompress(data)
    return lz4.block.decompress(data, uncompressed_size=size)


def decode_chunk(scheme: int, payload: bytes, size: int) -> bytes:
    try:
        if scheme == NONE:
            out = bytes(payload)
        elif scheme == LZ4:
            out = _lz4(bytes(payload), size)
        elif scheme == BG4_LZ4:
            out = _ungroup4(_lz4(bytes(payload), size))
        else:
            raise InvalidXorb(f"unknown chunk compression scheme {scheme}")
    except (RuntimeError, ValueError) as exc:
        if isinstance(exc, InvalidXorb):
            raise
        raise InvalidXorb(f"chunk does not decompress: {exc}") from None
    if len(out) != size:
        raise InvalidXorb(f"chunk decompressed to {len(out)} bytes, its header says {size}")
    return out


def _header(buf: bytes | memoryview, pos: int) -> tuple[int, int, int]:
    version = buf[pos]
    if version != 0:
        raise InvalidXorb(f"chunk header version {version} at byte {pos}; expected 0")
    compressed = int.from_bytes(buf[pos + 1:pos + 4], "little")
    scheme = buf[pos + 4]
    size = int.from_bytes(buf[pos + 5:pos + 8], "little")
    if size == 0 or size > MAX_CHUNK_BYTES:
        raise InvalidXorb(f"chunk of {size} bytes at byte {pos}: chunks hold 1 to {MAX_CHUNK_BYTES} bytes")
    return compressed, scheme, size


def parse(data: bytes | bytearray, expected: bytes) -> XorbTable:
    """Verify a whole serialized xorb against the hash it is uploaded under (CPU-bound: run it
    in a thread). Raises InvalidXorb with the reason."""
    if len(data) > MAX_XORB_BYTES:
        raise InvalidXorb(f"xorb of {len(data)} bytes exceeds the limit of {MAX_XORB_BYTES}")
    view = memoryview(data)
    chunks: list[Chunk] = []
    pos = 0
    while pos < len(data) and data[pos] == 0:
        if pos + HEADER > len(data):
            raise InvalidXorb(f"truncated chunk header at byte {pos}")
        compressed, scheme, size = _header(view, pos)
        end = pos + HEADER + compressed
        if end > len(data):
            raise InvalidXorb(f"chunk at byte {pos} runs past the end of the xorb")
        raw = decode_chunk(scheme, view[pos + HEADER:end], size)
        chunks.append(Chunk(hashes.chunk_hash(raw), pos, size))
        pos = end
    if not chunks:
        raise InvalidXorb("xorb holds no chunks")
    _check_footer(view[pos:], len(chunks))
    actual = hashes.xorb_hash([(c.hash, c.length) for c in chunks])
    if actual != expected:
        raise InvalidXorb(f"xorb hash is {hashes.to_hex(actual)}, not {hashes.to_hex(expected)}")
    return XorbTable(chunks, pos)


def _check_footer(footer: memoryview, count: int) -> None:
    """The footer is the client's index of the chunks; readers locate it by its trailing length.
    Absent (a bare chunk sequence) is accepted; present, it must be self-consistent."""
    if not len(footer):
        return
    if len(footer) < 36 or bytes(footer[:7]) != b"XETBLOB":
        raise InvalidXorb("bytes after the last chunk are not a xorb footer")
    (info_length,) = struct.unpack_from("<I", footer, len(footer) - 4)
    if info_length != len(footer) - 4:
        raise InvalidXorb(f"xorb footer says it is {info_length} bytes long, it is {len(footer) - 4}")


class ChunkDecoder:
    """Incremental decoder for a byte range of a xorb that starts on a chunk header: feed it the
    bytes as they arrive, get whole decompressed chunks back. Holds at most one chunk."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        pos = 0
        while len(self._buf) - pos >= HEADER:
            compressed, scheme, size = _header(self._buf, pos)
            end = pos + HEADER + compressed
            if end > len(self._buf):
                break
            out.append(decode_chunk(scheme, bytes(self._buf[pos + HEADER:end]), size))
            pos = end
        del self._buf[:pos]
        return out

    def finish(self) -> None:
        if self._buf:
            raise InvalidXorb(f"{len(self._buf)} bytes of a partial chunk at the end of the range")


def iter_chunks(data: bytes) -> Iterator[bytes]:
    decoder = ChunkDecoder()
    yield from decoder.feed(data)
    decoder.finish()
