"""The storage layers, without the daemon: the verifying layer over the local backend and over a
real S3 (SeaweedFS ``weed mini``), partial-upload ownership, action tokens and the Range parser."""

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from modelrepo.errors import IntegrityError, InvalidInput, NotFound
from modelrepo.lfs.action_tokens import PREFIX, ActionSigner
from modelrepo.ops.gc import clear_abandoned_uploads
from modelrepo.settings import S3Settings
from modelrepo.storage.local import LocalBackend
from modelrepo.storage.verified import ObjectStore
from modelrepo.web.lfs_http import RangeNotSatisfiable, parse_range

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: bodies above it go up as multipart uploads


def blob(seed: int, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 64
        counter += 1
    return bytes(out[:size])


def oid_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunks_of(data: bytes, size: int = 256 * 1024, *, fail_after: int | None = None,
                    pause: asyncio.Event | None = None):
    """A request body as the network delivers it; ``fail_after`` bytes then a dropped connection,
    ``pause``: stop half-way until the event is set."""
    for i in range(0, len(data), size):
        if fail_after is not None and i >= fail_after:
            raise ConnectionResetError("client went away")
        if pause is not None and i >= len(data) // 2:
            await pause.wait()
            pause = None
        yield data[i:i + size]


# -- backends -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_server():
    from ..s3server import start_s3_server

    server = start_s3_server("storage-unit")
    yield server
    server.stop()


def s3_settings(server, prefix: str) -> S3Settings:
    return S3Settings(bucket=server.bucket, prefix=prefix, endpoint_url=server.endpoint, region=server.region,
                      access_key_id=server.access_key, secret_access_key=server.secret_key,
                      addressing_style="path", part_size=PART)


@pytest.fixture(params=["local", "s3"])
async def store(request, tmp_path):
    if request.param == "local":
        s = ObjectStore(LocalBackend(tmp_path / "lfs"))
    else:
        from modelrepo.storage.s3 import S3Backend

        server = request.getfixturevalue("s3_server")
        s = ObjectStore(S3Backend(s3_settings(server, f"u{time.time_ns()}/")))
    yield s
    await s.close()


async def read_all(store: ObjectStore, oid: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in store.read(oid, start, end)])


async def objects(store: ObjectStore) -> list[str]:
    return [oid async for oid, _, _ in store.list_objects()]


# -- the verifying layer: the same promises from every backend ---------------------------------------

@pytest.mark.parametrize("size", [300_000, 2 * PART + 123], ids=["one-put", "multipart"])
async def test_right_body_commits_atomically(store, size):
    data = blob(1, size)
    oid = oid_of(data)
    pause = asyncio.Event()
    upload = asyncio.create_task(store.put(oid, size, chunks_of(data, pause=pause)))
    await asyncio.sleep(0.5)  # half the body is in, written to the temp place
    assert not upload.done()
    assert await store.stat(oid) is None and await objects(store) == []
    partial = await store.list_partial()
    if store.name == "local":
        assert [p.held for p in partial] == [True]  # the live upload's temp file, locked
    else:
        assert [p.kind for p in partial] == (["multipart"] if size > PART else [])
    pause.set()
    await upload
    assert await store.stat(oid) == size
    assert await read_all(store, oid) == data
    assert await read_all(store, oid, 1000, 5000) == data[1000:5000]
    assert await store.list_partial() == []
    assert await objects(store) == [oid]


@pytest.mark.parametrize("case", ["short", "long", "wrong-hash", "wrong-hash-multipart"])
async def test_bad_body_stores_nothing(store, case):
    data = blob(2, 2 * PART + 10 if case.endswith("multipart") else 700_000)
    oid, size, body = oid_of(data), len(data), data
    if case == "short":
        body = data[:-1]
    elif case == "long":
        body = data + b"x"
    else:
        body = bytearray(data)
        body[len(data) // 2] ^= 1
        body = bytes(body)
    expected = InvalidInput if case == "short" else IntegrityError
    with pytest.raises(expected) as err:
        await store.put(oid, size, chunks_of(body))
    if case == "short":
        assert f"after {size - 1} of {size} bytes" in err.value.message
    elif case == "long":
        assert "larger than the declared size" in err.value.message
    else:
        assert f"not the OID {oid}" in err.value.message
    assert await store.stat(oid) is None
    assert await objects(store) == []
    assert await store.list_partial() == []  # no temp file, no open multipart upload


@pytest.mark.parametrize("how", ["disconnect", "cancel"])
async def test_abort_cleans_up(store, how):
    data = blob(3, 2 * PART + 5)
    oid = oid_of(data)
    if how == "disconnect":
        with pytest.raises(ConnectionResetError):
            await store.put(oid, len(data), chunks_of(data, fail_after=PART + MiB))
    else:
        pause = asyncio.Event()
        upload = asyncio.create_task(store.put(oid, len(data), chunks_of(data, pause=pause)))
        deadline = time.monotonic() + 60  # waits on the upload itself, not a fixed time: CI can be slow
        while not await store.list_partial():  # something was in flight...
            assert not upload.done() and time.monotonic() < deadline, "the upload never showed as in flight"
            await asyncio.sleep(0.05)
        upload.cancel()
        with pytest.raises(asyncio.CancelledError):
            await upload
    assert await store.stat(oid) is None
    assert await store.list_partial() == []  # ...and nothing is left of it
    # The same object uploads fine afterwards.
    await store.put(oid, len(data), chunks_of(data))
    assert await read_all(store, oid) == data


async def test_check_hashes_without_storing(store):
    data = blob(4, 400_000)
    oid = oid_of(data)
    await store.check(oid, len(data), chunks_of(data))
    with pytest.raises(IntegrityError):
        await store.check(oid, len(data), chunks_of(bytes(len(data))))
    assert await store.stat(oid) is None and await store.list_partial() == []


async def test_rehash_reads_back_what_is_stored(store):
    data = blob(5, 600_000)
    oid = oid_of(data)
    await store.put(oid, len(data), chunks_of(data))
    seen = []
    assert await store.rehash(oid, seen.append) == (oid, len(data))
    assert sum(seen) == len(data)


async def test_presigning_is_a_declared_capability(store):
    if store.name == "local":
        assert store.presigner is None
    else:
        assert store.presigner is store.backend
        assert store.presigner.can_presign_upload(5 * 1024**3) and not store.presigner.can_presign_upload(5 * 1024**3 + 1)


# -- direct uploads (S3 only): judged by the same layer ---------------------------------------------

@pytest.fixture
async def s3_store(s3_server):
    from modelrepo.storage.s3 import S3Backend

    s = ObjectStore(S3Backend(s3_settings(s3_server, f"d{time.time_ns()}/")))
    yield s
    await s.close()


def put_presigned(p, data: bytes) -> int:
    req = urllib.request.Request(p.href, data=data, method="PUT", headers=p.header)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


async def test_direct_upload_is_verified_then_promoted(s3_store):
    data = blob(6, 300_000)
    oid = oid_of(data)
    presigner = s3_store.presigner
    p = await presigner.presign_upload(oid, "n1", 60)
    assert put_presigned(p, data) == 200
    assert await s3_store.stat(oid) is None  # staged, not readable under its OID yet
    with pytest.raises(IntegrityError):
        await s3_store.accept_staged(presigner, oid, len(data) + 1, "n1")  # wrong size...
    with pytest.raises(NotFound):  # ...and the staging key is gone with the refusal
        await s3_store.accept_staged(presigner, oid, len(data), "n1")
    assert put_presigned(await presigner.presign_upload(oid, "n2", 60), data) == 200
    await s3_store.accept_staged(presigner, oid, len(data), "n2")
    assert await read_all(s3_store, oid) == data
    assert await s3_store.list_partial() == []


async def test_direct_upload_without_recorded_checksum_is_rehashed(s3_store, s3_server):
    """A server that keeps no checksum: the layer hashes the staged bytes itself."""
    data = blob(7, 300_000)
    oid = oid_of(data)
    presigner = s3_store.presigner
    s3 = await s3_store.backend.client()
    wrong = bytes(len(data))
    await s3.put_object(Bucket=s3_server.bucket, Key=s3_store.backend.staging_key(oid, "n3"), Body=wrong)
    staged = await presigner.head_staged(oid, "n3")
    assert staged.sha256 is None
    with pytest.raises(IntegrityError):
        await s3_store.accept_staged(presigner, oid, len(data), "n3")
    assert await s3_store.stat(oid) is None and await s3_store.list_partial() == []
    await s3.put_object(Bucket=s3_server.bucket, Key=s3_store.backend.staging_key(oid, "n4"), Body=data)
    await s3_store.accept_staged(presigner, oid, len(data), "n4")
    assert await read_all(s3_store, oid) == data


async def test_direct_upload_with_a_wrong_recorded_checksum_is_refused(s3_store, s3_server):
    data, other = blob(8, 100_000), blob(9, 100_000)
    oid = oid_of(data)
    s3 = await s3_store.backend.client()
    await s3.put_object(Bucket=s3_server.bucket, Key=s3_store.backend.staging_key(oid, "n5"), Body=other,
                        ChecksumSHA256=base64.b64encode(hashlib.sha256(other).digest()).decode())
    staged = await s3_store.presigner.head_staged(oid, "n5")
    assert staged.sha256 == oid_of(other)
    with pytest.raises(IntegrityError, match="sha256 does not match"):
        await s3_store.accept_staged(s3_store.presigner, oid, len(data), "n5")
    assert await s3_store.stat(oid) is None


# -- partial uploads: who owns them ---------------------------------------------------------------------

HOLDER = """
import asyncio, sys
from pathlib import Path
from modelrepo.storage.local import LocalBackend
async def main():
    await LocalBackend(Path(sys.argv[1])).begin("ab" * 32, 10)
    print("holding", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def test_local_temp_file_is_owned_while_its_writer_lives(tmp_path):
    """A temp file of a live upload (another process) is never removed; once that process is
    killed, its file is nobody's and the start-up sweep removes it, whatever its age."""
    backend = LocalBackend(tmp_path / "lfs")
    store = ObjectStore(backend)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "lfs")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"holding\n"
        [partial] = await store.list_partial()
        assert partial.held and partial.kind == "temp"
        assert await store.delete_partial(partial.name) is False
        assert await clear_abandoned_uploads(store, 3600) == 0
        assert (backend.tmp / partial.name).exists()
    finally:
        holder.kill()
        holder.wait()
    [partial] = await store.list_partial()
    assert not partial.held
    assert await clear_abandoned_uploads(store, 3600) == 1
    assert list(backend.tmp.iterdir()) == []


async def test_startup_sweep_on_s3(s3_store, s3_server):
    """Multipart uploads go at start-up (only a daemon process starts them, and none is live);
    staging keys of direct uploads wait for their presigned URL to expire."""
    backend = s3_store.backend
    s3 = await backend.client()
    await s3.create_multipart_upload(Bucket=s3_server.bucket, Key=backend.key("cd" * 32))
    await s3.put_object(Bucket=s3_server.bucket, Key=backend.staging_key("ef" * 32, "n6"), Body=b"staged")
    assert sorted(p.kind for p in await s3_store.list_partial()) == ["multipart", "staged"]
    assert await clear_abandoned_uploads(s3_store, 3600) == 1
    assert [p.kind for p in await s3_store.list_partial()] == ["staged"]
    assert await clear_abandoned_uploads(s3_store, 0) == 1
    assert await s3_store.list_partial() == []


async def test_startup_sweep_on_a_shared_catalog_spares_young_multipart_uploads(s3_store, s3_server):
    """Replicas on one PostgreSQL catalog and one bucket: a replica restarting must not abort the
    upload another replica is receiving; only one older than the action expiry goes."""
    backend = s3_store.backend
    s3 = await backend.client()
    await s3.create_multipart_upload(Bucket=s3_server.bucket, Key=backend.key("ab" * 32))
    assert await clear_abandoned_uploads(s3_store, 3600, shared=True) == 0
    assert [p.kind for p in await s3_store.list_partial()] == ["multipart"]
    assert await clear_abandoned_uploads(s3_store, 0, shared=True) == 1
    assert await s3_store.list_partial() == []


def test_local_backend_can_read_without_writing(tmp_path):
    LocalBackend(tmp_path / "backup" / "lfs", create=False)
    assert not (tmp_path / "backup").exists()


# -- action tokens -----------------------------------------------------------------------------------

KEY = os.urandom(32)
OID = "a" * 64


def test_action_token_round_trip_binds_every_field():
    signer = ActionSigner(KEY)
    token = signer.sign("upload", "7.1700000000000", OID, 1234, 60, "nonce1")
    claim = signer.verify(token)
    assert claim is not None and token.startswith(PREFIX)
    assert (claim.operation, claim.model_key, claim.oid, claim.size, claim.nonce) == \
        ("upload", "7.1700000000000", OID, 1234, "nonce1")
    assert claim.expires == pytest.approx(time.time() + 60, abs=2)
    # Each binding is part of the signed payload: any other value is another token.
    others = [signer.sign(op, mk, oid, size, 60, nonce) for op, mk, oid, size, nonce in (
        ("download", "7.1700000000000", OID, 1234, "nonce1"), ("upload", "8.1700000000000", OID, 1234, "nonce1"),
        ("upload", "7.1700000000000", "b" * 64, 1234, "nonce1"), ("upload", "7.1700000000000", OID, 1235, "nonce1"),
        ("upload", "7.1700000000000", OID, 1234, "nonce2"))]
    assert len({token, *others}) == 6


def test_action_token_expires(monkeypatch):
    signer = ActionSigner(KEY)
    token = signer.sign("download", "1.1", OID, 1, 30)
    assert signer.verify(token) is not None
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    assert signer.verify(token) is None
    assert signer.verify(ActionSigner(KEY).sign("download", "1.1", OID, 1, -1)) is None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_action_token_tampering_is_refused():
    signer = ActionSigner(KEY)
    token = signer.sign("download", "1.1", OID, 100, 60)
    payload_b64, mac_b64 = token[len(PREFIX):].split(".")
    payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
    # The size raised, the operation changed, the OID swapped: the MAC no longer matches.
    for forged in (payload.replace(b":100:", b":999999:"), payload.replace(b"download:", b"upload:"),
                   payload.replace(OID.encode(), b"b" * 64)):
        assert forged != payload
        assert signer.verify(PREFIX + _b64(forged) + "." + mac_b64) is None
    flipped = bytearray(base64.urlsafe_b64decode(mac_b64 + "=" * (-len(mac_b64) % 4)))
    flipped[0] ^= 1
    assert signer.verify(PREFIX + payload_b64 + "." + _b64(bytes(flipped))) is None
    assert ActionSigner(os.urandom(32)).verify(token) is None  # another installation's key
    for garbage in ("", PREFIX, token[len(PREFIX):], "lfs2." + token[len(PREFIX):], token + ".x", PREFIX + "!!.??",
                    "Bearer " + token):
        assert signer.verify(garbage) is None
    with pytest.raises(ValueError):
        signer.sign("upload", "1.1", OID, 1, 60, nonce="a:b")  # ':' would let fields shift


# -- the Range parser (web/lfs_http.parse_range) ---------------------------------------------------------

@pytest.mark.parametrize("header,expected", [
    (None, (0, 100)), ("", (0, 100)),
    ("bytes=0-", (0, 100)), ("bytes=10-19", (10, 20)), ("bytes=10-10", (10, 11)),
    ("bytes=90-1000", (90, 100)),  # an end past the object is clamped
    ("bytes=-5", (95, 100)), ("bytes=-500", (0, 100)),  # suffix ranges
    (" bytes=1-2 ", (1, 3)),
    # Unparseable or multiple ranges: the whole object (a 200), as RFC 9110 allows.
    ("bytes=-", (0, 100)), ("items=1-2", (0, 100)), ("bytes=0-1,5-6", (0, 100)), ("bytes=a-b", (0, 100)),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header,size", [("bytes=100-", 100), ("bytes=5-2", 100), ("bytes=-0", 100),
                                         ("bytes=0-", 0)])
def test_parse_range_not_satisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable) as err:
        parse_range(header, size)
    assert err.value.status == 416


async def test_a_put_cancelled_while_its_temp_file_is_made_leaves_nothing(tmp_path, monkeypatch):
    """The client goes away in the moment the local store makes its temp file (in a thread, which
    cannot be cancelled): the file the thread then makes must not stay behind, held open and locked
    where no sweep can take it (the CI run's test_abort_cleans_up[local-cancel] once saw one)."""
    import threading

    from modelrepo.storage import local

    real, started, made = local._create_held, threading.Event(), threading.Event()

    def slow_disk(*args):
        started.set()
        time.sleep(0.3)
        try:
            return real(*args)
        finally:
            made.set()

    monkeypatch.setattr(local, "_create_held", slow_disk)
    backend = local.LocalBackend(tmp_path)
    begin = asyncio.create_task(backend.begin("ab" * 32, 10))
    assert await asyncio.to_thread(started.wait, 10)
    begin.cancel()
    with pytest.raises(asyncio.CancelledError):
        await begin
    assert await asyncio.to_thread(made.wait, 10)
    await asyncio.sleep(0.05)  # a cleanup scheduled rather than done would still be pending here
    assert list((tmp_path / "tmp").iterdir()) == []
