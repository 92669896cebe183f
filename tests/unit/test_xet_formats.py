"""Xet hashing and formats against the spec's reference values (hub-docs docs/xet/api.md and the
reference vectors of xet-core's merklehash aggregated_hashes tests), and round trips through an
independent producer (tests/xet_build.py)."""

import os
import struct

import pytest

from modelrepo.errors import InvalidInput
from modelrepo.xet import hashes, shard, xorb

from ..xet_build import serialize_xorb, upload_shard


def test_hash_string_form_reverses_each_8_byte_word():
    raw = bytes(range(32))
    # api.md's example, whose printed string drops the "10" byte of the third word.
    text = "0706050403020100" "0f0e0d0c0b0a0908" "1716151413121110" "1f1e1d1c1b1a1918"
    assert hashes.to_hex(raw) == text
    assert hashes.from_hex(text) == raw
    for bad in ("00" * 31, "G" * 64, text.upper(), None):
        with pytest.raises(ValueError):
            hashes.from_hex(bad)


# (leaves as (string hash, length), xorb hash, file hash with the all-zero salt) from xet-core.
H1 = "cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6"
H2 = "c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72"
H3 = "0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37"
H4 = "adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784"
Z = "0" * 64
VECTORS = [
    ([(H1, 100)], H1, "8e16257caa3fe079d484d872a8975264b2ff683b0d6db9028cc7c0f968a45661"),
    ([(H1, 100), (H2, 200), (H3, 300)], "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc",
     "54e55dccc6653c612bdb5576c5d3cb34bb31bc4e100248abccf4c908b3ef7715"),
    ([(H1, 100)] * 4, "89f2ada89ff8c96763c6b25010e6dd76a4c05b1466207633ea559acf2093211b",
     "2cdba690d0e09563596e0cda626d43eb4c96ef1e994fe72d9b2f5a83cfcd36dd"),
    ([(H1, 100), (H2, 200), (H1, 100), (H2, 200)], "90f8313ef12df385d237a067aded02562c35ded12116e32eba401dbc86c38031",
     "284ea045e5a579e99c21ec597c20de1fc0c09e7168162aac00db8f61b3d82dbb"),
    ([(H1, 100), (H2, 200), (H1, 100), (H2, 200), (H3, 300), (H4, 400)],
     "52c826f99507aa05d0b45e9837fa1709e0485425cfbcb1e80db3905cf98b3ee9",
     "91d21684db364c8883ab8209fa5eb2e781cf07f37e1fa43e731c30839afe422f"),
    ([(Z, 0), (H1, 100), (Z, 0), (H1, 100)], "e1755c85be07fd6b7a8d7becc85e6d8c5f507f2a3d38b316bcb6f97855e72188",
     "207caf24fce045ac6d873b4c6186a5a435d600d103e1ae345e55ddf1f4b7f7ef"),
    ([(Z, 0)], Z, "638a6bc391964a85939d48f008e8bdbae6a7975e7ca2d87a3ce2492f4e4d8a4c"),
]


@pytest.mark.parametrize("leaves,xorb_hash,file_hash", VECTORS)
def test_merkle_tree_matches_reference_vectors(leaves, xorb_hash, file_hash):
    raw = [(hashes.from_hex(h), n) for h, n in leaves]
    assert hashes.to_hex(hashes.xorb_hash(raw)) == xorb_hash
    assert hashes.to_hex(hashes.file_hash(raw)) == file_hash


def test_empty_file_hash_is_zero():
    assert hashes.file_hash([]) == bytes(32)


def test_internal_node_buffer_uses_string_form_and_lengths():
    """The spec's worked example: one line '{hash} : {size}\\n' per child, keyed BLAKE3."""
    from blake3 import blake3
    leaves = [(hashes.from_hex(H1), 10000), (hashes.from_hex(H2), 20000)]
    text = f"{H1} : 10000\n{H2} : 20000\n".encode()
    assert hashes.xorb_hash(leaves) == blake3(text, key=hashes.INTERNAL_NODE_KEY).digest()


@pytest.mark.parametrize("scheme", [0, 1, 2])
def test_xorb_round_trip_every_compression_scheme(scheme):
    chunks = [os.urandom(1000) + bytes(7000), bytes(range(256)) * 31 + b"xyz", os.urandom(65536)]
    h, data = serialize_xorb(chunks, scheme)
    table = xorb.parse(data, h)
    assert [c.hash for c in table.chunks] == [hashes.chunk_hash(c) for c in chunks]
    assert [c.length for c in table.chunks] == [len(c) for c in chunks]
    # A range of chunks decodes back to their bytes.
    lo, hi = table.byte_range(1, 3)
    assert list(xorb.iter_chunks(data[lo:hi])) == chunks[1:3]
    assert xorb.XorbTable.unpack(table.pack(), table.data_end) == table


def test_xorb_without_footer_is_accepted():
    chunks = [b"a" * 9000]
    h, data = serialize_xorb(chunks, footer=False)
    assert xorb.parse(data, h).data_end == len(data)


def test_xorb_refusals():
    chunks = [os.urandom(9000), os.urandom(9000)]
    h, data = serialize_xorb(chunks)
    other, _ = serialize_xorb([b"b" * 9000])
    cases = {
        "wrong hash": (data, other),
        "flipped byte in a chunk": (data[:20] + bytes([data[20] ^ 1]) + data[21:], h),
        "truncated": (data[:len(data) // 2], h),
        "bad footer length": (data[:-4] + struct.pack("<I", 3), h),
        "garbage after chunks": (data[:table_end(data, h)] + b"junk", h),
        "no chunks": (b"", h),
        "unknown scheme": (data[:4] + bytes([9]) + data[5:], h),
    }
    for name, (body, expected) in cases.items():
        with pytest.raises(InvalidInput):
            xorb.parse(body, expected)
            pytest.fail(name)


def table_end(data: bytes, h: bytes) -> int:
    return xorb.parse(data, h).data_end


def test_xorb_size_limit():
    with pytest.raises(InvalidInput):
        xorb.parse(b"\0" * (xorb.MAX_XORB_BYTES + 1), bytes(32))


def test_shard_round_trip():
    chunks = [os.urandom(10000) for _ in range(5)]
    h, _ = serialize_xorb(chunks)
    content = b"".join(chunks[1:4])
    data = upload_shard([([(h, 1, 4, chunks)], content)], [(h, chunks)])
    parsed = shard.parse(data)
    (f,) = parsed.files
    assert f.size == len(content) and f.terms[0].start == 1 and f.terms[0].end == 4
    assert f.terms[0].verification == hashes.verification_hash([hashes.chunk_hash(c) for c in chunks[1:4]])
    assert parsed.xorbs[0].hash == h and len(parsed.xorbs[0].chunks) == 5
    for bad in (data[:-1], b"x" * 100, data[:32] + struct.pack("<QQ", 3, 0) + data[48:]):
        with pytest.raises(InvalidInput):
            shard.parse(bad)


def test_dedup_shard_parses_and_keys_chunk_hashes():
    chunks = [os.urandom(10000) for _ in range(3)]
    h, _ = serialize_xorb(chunks)
    key = os.urandom(32)
    table = [(hashes.chunk_hash(c), i * 10, len(c)) for i, c in enumerate(chunks)]
    data = shard.dedup_shard([(h, table, 12345)], key, 3600)
    parsed = shard.parse(data)
    assert parsed.files == []
    got = parsed.xorbs[0]
    assert got.hash == h
    assert [c[0] for c in got.chunks] == [hashes.keyed(hashes.chunk_hash(c), key) for c in chunks]
    assert data[-200 + 72:-200 + 104] == key  # footer chunk_hash_hmac_key
