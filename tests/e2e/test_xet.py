"""The Hub client as installed by default (huggingface_hub + hf_xet, no HF_HUB_DISABLE_XET) against
the daemon's Xet CAS: uploads, dedup of a changed version, the same bytes through git-lfs, /resolve
and Xet downloads, tenancy, and refusal of bad xorbs and shards with nothing stored."""

import hashlib
import json
import os
import shutil

import pytest

from modelrepo.xet.hashes import chunk_hash, file_hash, to_hex
from modelrepo.xet.xorb import MAX_XORB_BYTES, iter_chunks

from ..helpers import Git, catalog_sql, http, start_daemon
from ..xet_build import serialize_xorb, upload_shard
from .test_hooks_webhooks import CARD
from .test_hub import hf
from .test_ops import cli, damage, gc_line, ops_daemon  # noqa: F401 - ops_daemon is a fixture

pytest.importorskip("hf_xet")
pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
MiB = 1024 * 1024
SIZE = 64 * MiB


@pytest.fixture(scope="module")
def hub():
    d = start_daemon()
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    d.ok("POST", "/api/v1/namespaces", body={"name": "evil"})
    for user, ns in (("alice", "acme"), ("eve", "evil")):
        d.user(user, scope="write")
        d.ok("PUT", f"/api/v1/namespaces/{ns}/members/{user}", body={"role": "admin"})
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "bert"})  # private
    d.ok("POST", "/api/v1/models", body={"namespace": "evil", "name": "probe"})
    yield d
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


def stored_bytes(d) -> int:
    return sum(p.stat().st_size for p in (d.data / "lfs" / "objects").rglob("*") if p.is_file())


def stored_names(d) -> set[str]:
    return {p.name for p in (d.data / "lfs" / "objects").rglob("*") if p.is_file()}


def catalog_rows(d, table: str) -> int:
    return catalog_sql(d.data, f"select count(*) from {table}")[0][0]  # noqa: S608 - test constant


def token(d, user: str, repo: str, kind: str) -> dict:
    r = d.api("GET", f"/api/models/{repo}/xet-{kind}-token/main", user)
    assert r.status == 200, (r.status, r.body)
    body = r.json()
    assert r.headers["X-Xet-Access-Token"] == body["accessToken"] and r.headers["X-Xet-Cas-Url"] == body["casUrl"]
    return body


def upload(d, tmp, folder, message: str) -> str:
    tmp.mkdir()
    return hf(d, d.tokens["alice"], f"""
        info = HfApi().upload_folder(repo_id="acme/bert", folder_path={str(folder)!r}, commit_message={message!r})
        print(json.dumps({{"commit": info.oid}}))
    """, tmp)["commit"]


@pytest.fixture(scope="module")
def uploaded(hub, tmp_path_factory):
    """v1 (card + 64 MiB weights) and v2 (16 bytes changed in the middle), each uploaded by the
    default client from a fresh HF_HOME, so dedup comes from the server, not a local cache."""
    d = hub
    tmp = tmp_path_factory.mktemp("xet")
    folder = tmp / "model"
    folder.mkdir()
    (folder / "README.md").write_text(CARD)
    v1 = os.urandom(SIZE)
    (folder / "model.safetensors").write_bytes(v1)
    before = stored_bytes(d)
    c1 = upload(d, tmp / "a", folder, "v1 through Xet")
    after_v1 = stored_bytes(d)
    v2 = bytearray(v1)
    v2[SIZE // 2:SIZE // 2 + 16] = os.urandom(16)
    v2 = bytes(v2)
    (folder / "model.safetensors").write_bytes(v2)
    c2 = upload(d, tmp / "b", folder, "v2: 16 bytes changed")
    after_v2 = stored_bytes(d)
    return {"v1": v1, "v2": v2, "c1": c1, "c2": c2, "v1_stored": after_v1 - before, "v2_growth": after_v2 - after_v1}


def test_upload_stores_the_file_once_and_a_new_version_only_its_changes(hub, uploaded):
    d = hub
    # The xorbs hold the weights once (random bytes do not compress); no second LFS copy.
    assert SIZE <= uploaded["v1_stored"] < SIZE * 1.02, uploaded["v1_stored"]
    # 16 changed bytes cost one chunk or so (~64-128 KiB), not another 64 MiB.
    print(f"\nXet: v1 stored {uploaded['v1_stored']} bytes; v2 (16 bytes changed) grew the store by "
          f"{uploaded['v2_growth']} bytes ({uploaded['v2_growth'] / SIZE:.2%} of the file)")
    assert 0 < uploaded["v2_growth"] < 1 * MiB, uploaded["v2_growth"]
    assert catalog_rows(d, "xet_files") == 2


def test_git_clone_returns_identical_bytes(hub, uploaded, tmp_path):
    d = hub
    git = Git(tmp_path / "home")
    git.run("clone", "-q", d.git_url("acme/bert.git", "alice"), str(tmp_path / "c"))
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == uploaded["v2"]
    assert (tmp_path / "c" / "README.md").read_text() == CARD
    git.run("checkout", "-q", uploaded["c1"], cwd=tmp_path / "c")
    assert hashlib.sha256((tmp_path / "c" / "model.safetensors").read_bytes()).digest() == \
        hashlib.sha256(uploaded["v1"]).digest()


@pytest.mark.parametrize("xet", [True, False])
def test_hf_hub_download_with_and_without_xet(hub, uploaded, tmp_path, xet):
    d = hub
    reconstructions = d.log().count("/xet/v1/reconstructions/")
    out = hf(d, d.tokens["alice"], """
        import hashlib
        p = hf_hub_download("acme/bert", "model.safetensors")
        print(json.dumps({"sha": hashlib.sha256(open(p, "rb").read()).hexdigest()}))
    """, tmp_path, without_xet=not xet)
    assert out["sha"] == hashlib.sha256(uploaded["v2"]).hexdigest()
    # With hf_xet the client rebuilt the file from xorb ranges; without it, it read /resolve.
    assert (d.log().count("/xet/v1/reconstructions/") > reconstructions) == xet
    head = d.api("HEAD", "/acme/bert/resolve/main/model.safetensors", "alice")
    assert head.status == 200
    assert "X-Xet-Hash" in head.headers and 'rel="xet-auth"' in head.headers["Link"]
    card = d.api("HEAD", "/acme/bert/resolve/main/README.md", "alice")
    assert "X-Xet-Hash" not in card.headers  # only files stored through Xet


def test_range_reads_of_a_rebuilt_object(hub, uploaded):
    d = hub
    start = SIZE // 2 - 100
    r = d.api("GET", "/acme/bert/resolve/main/model.safetensors", "alice",
              headers={"Range": f"bytes={start}-{start + 999}"})
    assert r.status == 206 and r.body == uploaded["v2"][start:start + 1000]


def test_another_tenant_gets_nothing(hub, uploaded):
    d = hub
    # The token doors answer like the model does not exist.
    for kind in ("read", "write"):
        r = d.api("GET", f"/api/models/acme/bert/xet-{kind}-token/main", "eve")
        assert r.status == 404, (kind, r.status)
    assert d.api("GET", "/acme/bert/resolve/main/model.safetensors", "eve").status == 404
    file_hash = d.api("HEAD", "/acme/bert/resolve/main/model.safetensors", "alice").headers["X-Xet-Hash"]
    # eve's own repository token is useless for alice's file, chunks and xorbs.
    mine = token(d, "eve", "evil/probe", "write")
    cas, tok = mine["casUrl"], mine["accessToken"]
    assert http("GET", f"{cas}/v1/reconstructions/{file_hash}", token=tok).status == 404
    alice = token(d, "alice", "acme/bert", "read")
    recon = http("GET", f"{alice['casUrl']}/v1/reconstructions/{file_hash}", token=alice["accessToken"]).json()
    first = recon["terms"][0]
    fetch = recon["fetch_info"][first["hash"]][0]
    rng = f"bytes={fetch['url_range']['start']}-{fetch['url_range']['end']}"
    assert http("GET", f"{cas}/fetch/{first['hash']}", token=tok, headers={"Range": rng}).status == 401
    # The signed URL works for exactly its range (and for alice's download it does).
    assert http("GET", fetch["url"], headers={"Range": rng}).status == 206
    assert http("GET", fetch["url"], headers={"Range": "bytes=0-10"}).status == 403
    # Global dedup never names another repository's xorbs.
    chunk_table = catalog_sql(d.data, "select chunk_hash from xet_dedup limit 1")[0][0]
    assert http("GET", f"{cas}/v1/chunks/default-merkledb/{chunk_table}", token=tok).status == 404
    assert http("GET", f"{alice['casUrl']}/v1/chunks/default-merkledb/{chunk_table}",
                token=alice["accessToken"]).status == 200
    # No token, a forged one, a read token for writing.
    assert http("GET", f"{cas}/v1/reconstructions/{file_hash}").status == 401
    assert http("GET", f"{cas}/v1/reconstructions/{file_hash}", token=tok[:-2] + "xx").status == 401
    h, data = serialize_xorb([os.urandom(9000)])
    r = http("POST", f"{alice['casUrl']}/v1/xorbs/default/{to_hex(h)}", token=alice["accessToken"], raw=data)
    assert r.status == 403


def test_bad_uploads_are_refused_and_leave_nothing_stored(hub, uploaded):
    d = hub
    w = token(d, "alice", "acme/bert", "write")
    cas, tok = w["casUrl"], w["accessToken"]
    names, xorbs, files = stored_names(d), catalog_rows(d, "xet_xorbs"), catalog_rows(d, "xet_files")

    chunks = [os.urandom(20000) for _ in range(3)]
    h, data = serialize_xorb(chunks)
    other, _ = serialize_xorb([os.urandom(100)])
    # A xorb under the wrong hash, and one with a flipped byte.
    assert http("POST", f"{cas}/v1/xorbs/default/{to_hex(other)}", token=tok, raw=data).status == 400
    flipped = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    assert http("POST", f"{cas}/v1/xorbs/default/{to_hex(h)}", token=tok, raw=flipped).status == 400
    # An oversized xorb (the spec's 64 MiB cap, plus the client's serialization overhead).
    big = b"\0" * (MAX_XORB_BYTES + 1)
    assert http("POST", f"{cas}/v1/xorbs/default/{to_hex(h)}", token=tok, raw=big).status == 413
    # A shard naming a xorb that was never uploaded.
    shard = upload_shard([([(h, 0, 3, chunks)], b"".join(chunks))], [(h, chunks)])
    r = http("POST", f"{cas}/v1/shards", token=tok, raw=shard)
    assert r.status == 400 and b"not stored" in r.body
    # Garbage as a shard.
    assert http("POST", f"{cas}/v1/shards", token=tok, raw=b"\0" * 96).status == 400
    assert (stored_names(d), catalog_rows(d, "xet_xorbs"), catalog_rows(d, "xet_files")) == (names, xorbs, files)

    # The good xorb is accepted (idempotently), then a shard lying about the file's sha256 or
    # about a term's verification hash registers nothing.
    assert http("POST", f"{cas}/v1/xorbs/default/{to_hex(h)}", token=tok, raw=data).json() == {"was_inserted": True}
    assert http("POST", f"{cas}/v1/xorbs/default/{to_hex(h)}", token=tok, raw=data).json() == {"was_inserted": False}
    lying = upload_shard([([(h, 0, 3, chunks)], b"not these bytes")])
    assert http("POST", f"{cas}/v1/shards", token=tok, raw=lying).status == 400
    bad_verification = bytearray(upload_shard([([(h, 0, 3, chunks)], b"".join(chunks))]))
    bad_verification[48 + 48 + 48] ^= 1  # first byte of the first verification entry
    assert http("POST", f"{cas}/v1/shards", token=tok, raw=bytes(bad_verification)).status == 400
    assert catalog_rows(d, "xet_files") == files
    good = upload_shard([([(h, 0, 3, chunks)], b"".join(chunks))])
    assert http("POST", f"{cas}/v1/shards", token=tok, raw=good).json() == {"result": 1}
    assert catalog_rows(d, "xet_files") == files + 1


def test_quota_counts_stored_chunks_once(hub, uploaded):
    d = hub
    usage = d.ok("GET", "/api/v1/namespaces/acme")["usage"]["bytes"]
    # Two 64 MiB versions, stored as their xorbs: one file's worth plus the changed chunks.
    assert SIZE <= usage < SIZE * 1.05, usage
    d.ok("PUT", "/api/v1/namespaces/evil/quota", body={"bytes": 10000, "models": None})
    try:
        w = token(d, "eve", "evil/probe", "write")
        h, data = serialize_xorb([os.urandom(30000)])
        names = stored_names(d)
        r = http("POST", f"{w['casUrl']}/v1/xorbs/default/{to_hex(h)}", token=w["accessToken"], raw=data)
        assert r.status == 507 and b"quota" in r.body
        assert stored_names(d) == names
    finally:
        d.ok("PUT", "/api/v1/namespaces/evil/quota", body={"bytes": None, "models": None})


# -- gc and fsck, on a local and an S3 store ---------------------------------------------------------

def cas_upload(d, user: str, repo: str, chunks: list[bytes]) -> tuple[str, str, bytes]:
    """Upload one xorb and a shard registering its chunks as one file: (xorb hash, the xorb's store
    key, the file's bytes)."""
    w = token(d, user, repo, "write")
    h, data = serialize_xorb(chunks)
    assert http("POST", f"{w['casUrl']}/v1/xorbs/default/{to_hex(h)}", token=w["accessToken"], raw=data).status == 200
    content = b"".join(chunks)
    shard = upload_shard([([(h, 0, len(chunks), chunks)], content)], [(h, chunks)])
    r = http("POST", f"{w['casUrl']}/v1/shards", token=w["accessToken"], raw=shard)
    assert r.status == 200, r.body
    return to_hex(h), hashlib.sha256(data).hexdigest(), content


def lfs_download(d, user: str, repo: str, content: bytes) -> bytes:
    oid = hashlib.sha256(content).hexdigest()
    r = d.api("POST", f"/{repo}.git/info/lfs/objects/batch", user,
              body={"operation": "download", "objects": [{"oid": oid, "size": len(content)}]},
              headers={"Accept": "application/vnd.git-lfs+json"})
    action = r.json()["objects"][0]["actions"]["download"]
    return http("GET", action["href"], headers=action.get("header", {})).body


def test_gc_and_fsck_know_xet(ops_daemon):
    d = ops_daemon
    for name in ("a", "b"):
        d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": name})
    chunks = [os.urandom(20000) for _ in range(4)]
    xorb_hash, key, content = cas_upload(d, "alice", "acme/a", chunks)
    # git-lfs reads the file uploaded through Xet: it was not stored a second time.
    assert lfs_download(d, "alice", "acme/a", content) == content
    assert d.stored(hashlib.sha256(content).hexdigest()) is None and d.stored(key) is not None

    r = cli(d, "fsck")
    assert r.returncode == 0 and "1 Xet xorb(s)" in r.stdout, r.stdout + r.stderr
    r = cli(d, "gc", "--grace", "0")
    assert r.returncode == 0 and d.stored(key) is not None, r.stdout + r.stderr  # linked: kept

    d.ok("DELETE", "/api/v1/models/acme/a")
    r = cli(d, "gc", "--grace", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gc_line(r.stdout, "unreferenced xorbs")[0] == "1", r.stdout
    assert gc_line(r.stdout, "unlinked Xet files")[0] == "1", r.stdout
    assert d.stored(key) is None
    assert (catalog_rows(d, "xet_xorbs"), catalog_rows(d, "xet_files"), catalog_rows(d, "lfs_objects")) == (0, 0, 0)

    # fsck names a corrupt xorb, and the LFS object rebuilt from it.
    xorb_hash, key, content = cas_upload(d, "alice", "acme/b", chunks)
    _, data = serialize_xorb(chunks)
    damage(d, key, data[:50] + bytes([data[50] ^ 1]) + data[51:])
    r = cli(d, "fsck")
    assert r.returncode == 1 and f"xorb {xorb_hash}: corrupt" in r.stdout, r.stdout + r.stderr


def test_backup_and_restore_keep_xet_files(tmp_path):
    d = start_daemon()
    restored = None
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
        d.user("alice")
        d.ok("PUT", "/api/v1/namespaces/acme/members/alice", body={"role": "writer"})
        d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "a"})
        git = Git(tmp_path / "home")
        work = git.new_repo(tmp_path / "w", {"README.md": CARD})
        git.run("push", "-q", d.git_url("acme/a.git", "alice"), "main", cwd=work)
        chunks = [os.urandom(20000) for _ in range(3)]
        _, key, content = cas_upload(d, "alice", "acme/a", chunks)
        r = cli(d, "backup", str(tmp_path / "bk"))
        assert r.returncode == 0 and "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert (tmp_path / "bk" / "lfs" / "objects" / key[:2] / key[2:4] / key).is_file()  # the xorb
        new = tmp_path / "restored"
        r = cli(d, "restore", str(tmp_path / "bk"), data=new)
        assert r.returncode == 0 and "WARNING" not in r.stdout + r.stderr, r.stdout + r.stderr
        restored = start_daemon(new)
        restored.tokens["alice"] = d.tokens["alice"]
        assert lfs_download(restored, "alice", "acme/a", content) == content
    finally:
        d.stop()
        if restored is not None:
            restored.stop()
        shutil.rmtree(d.data.parent, ignore_errors=True)


def xet_download(d, user: str, repo: str, file_hex: str, byte_range: str | None = None) -> bytes:
    """What hf_xet does: the reconstruction, then each term's signed xorb range, decoded."""
    r = token(d, user, repo, "read")
    recon = http("GET", f"{r['casUrl']}/v1/reconstructions/{file_hex}", token=r["accessToken"],
                 headers={"Range": byte_range} if byte_range else None)
    assert recon.status == 200, recon.body
    body = recon.json()
    out = b""
    for term in body["terms"]:
        fetch = next(f for f in body["fetch_info"][term["hash"]] if f["range"]["start"] <= term["range"]["start"]
                     and f["range"]["end"] >= term["range"]["end"])
        got = http("GET", fetch["url"], headers={"Range": f"bytes={fetch['url_range']['start']}-"
                                                          f"{fetch['url_range']['end']}"})
        assert got.status == 206, got.body
        chunks = list(iter_chunks(got.body))
        skip = term["range"]["start"] - fetch["range"]["start"]
        out += b"".join(chunks[skip:skip + term["range"]["end"] - term["range"]["start"]])
    out = out[body["offset_into_first_range"]:]
    if byte_range:  # whole chunks come back: the client cuts the end (download-protocol.md)
        first, last = (int(n) for n in byte_range.removeprefix("bytes=").split("-"))
        out = out[:last - first + 1]
    return out


def test_every_store_serves_xet_files_to_both_protocols(lfs_daemon):
    """Local disk, S3 through the daemon, and S3 direct (where git-lfs is sent to a presigned URL
    of the object, materialized from the xorbs on first use)."""
    d = lfs_daemon
    ns = f"x{lfs_daemon.port}"
    d.ok("POST", "/api/v1/namespaces", body={"name": ns})
    d.user(f"{ns}u")
    d.ok("PUT", f"/api/v1/namespaces/{ns}/members/{ns}u", body={"role": "writer"})
    d.ok("POST", "/api/v1/models", body={"namespace": ns, "name": "m"})
    chunks = [os.urandom(70000) for _ in range(5)]
    _, key, content = cas_upload(d, f"{ns}u", f"{ns}/m", chunks)
    assert d.stored(key) is not None
    file_hex = to_hex(file_hash([(chunk_hash(c), len(c)) for c in chunks]))
    assert xet_download(d, f"{ns}u", f"{ns}/m", file_hex) == content
    assert xet_download(d, f"{ns}u", f"{ns}/m", file_hex, "bytes=100000-250000") == content[100000:250001]
    # Committed as an LFS pointer (what huggingface_hub does after a Xet upload), then read back
    # through /resolve (streamed even in S3 direct mode) and through git-lfs.
    oid = hashlib.sha256(content).hexdigest()
    ndjson = b"\n".join(json.dumps(line).encode() for line in (
        {"key": "header", "value": {"summary": "weights through Xet"}},
        {"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": oid,
                                     "size": len(content)}}))
    r = d.api("POST", f"/api/models/{ns}/m/commit/main", f"{ns}u", raw=ndjson,
              headers={"Content-Type": "application/x-ndjson"})
    assert r.status == 200, r.body
    resolved = d.api("GET", f"/{ns}/m/resolve/main/model.safetensors", f"{ns}u")
    assert resolved.status == 200 and resolved.body == content and resolved.headers["X-Xet-Hash"] == file_hex
    assert d.stored(oid) is None  # not materialized for /resolve
    assert lfs_download(d, f"{ns}u", f"{ns}/m", content) == content
    # git-lfs is sent straight to the bucket in direct mode: only then is the object materialized.
    assert (d.stored(oid) is not None) == (d.lfs_mode == "s3-direct")
