"""Git LFS end to end: the real git-lfs client, and raw protocol requests for what a client would
never send. Runs once per storage backend (local disk, S3 proxy, S3 direct on SeaweedFS)."""

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from modelrepo.lfs.action_tokens import ActionSigner

from ..helpers import catalog_sql, http

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
LFS_TYPE = "application/vnd.git-lfs+json"
MiB = 1024 * 1024


def blob(seed: int, size: int) -> bytes:
    """Deterministic incompressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest() * 64  # 2 KiB per hash
        counter += 1
    return bytes(out[:size])


def lfs_batch(d, repo: str, operation: str, objects: list, who: str | None = "alice", **extra) -> tuple[int, dict]:
    body = {"operation": operation, "transfers": ["basic"], "objects": objects, **extra}
    r = http("POST", f"{d.url}/{repo}.git/info/lfs/objects/batch", raw=json.dumps(body).encode(),
             token=d.tokens[who] if who else None,
             headers={"Content-Type": LFS_TYPE, "Accept": LFS_TYPE})
    return r.status, (json.loads(r.body) if r.body else {}), r.headers


def put_action(action: dict, data: bytes) -> int:
    return http("PUT", action["href"], raw=data, headers=action.get("header", {})).status


def put_and_verify(entry: dict, data: bytes) -> int:
    """What git-lfs does with a batch entry: PUT the bytes, then POST verify if asked to."""
    status = put_action(entry["actions"]["upload"], data)
    verify = entry["actions"].get("verify")
    if status == 200 and verify:
        r = http("POST", verify["href"], raw=json.dumps({"oid": entry["oid"], "size": entry["size"]}).encode(),
                 headers={**verify.get("header", {}), "Content-Type": LFS_TYPE, "Accept": LFS_TYPE})
        return r.status
    return status


@pytest.fixture(scope="module")
def lfs_world(lfs_daemon):
    d = lfs_daemon
    for ns in ("acme", "evil"):
        d.ok("POST", "/api/v1/namespaces", body={"name": ns})
    for user, ns, role, scope in (("alice", "acme", "writer", "write"), ("rob", "acme", "reader", "write"),
                                  ("ada", "acme", "admin", "admin"), ("eve", "evil", "writer", "write")):
        d.user(user, scope=scope)
        d.ok("PUT", f"/api/v1/namespaces/{ns}/members/{user}", body={"role": role})
    return d


def new_model(d, name: str, ns: str = "acme", visibility: str = "private") -> str:
    d.ok("POST", "/api/v1/models", body={"namespace": ns, "name": name, "visibility": visibility})
    return f"{ns}/{name}"


def lfs_repo(git, path: Path, files: dict[str, bytes]) -> Path:
    git.new_repo(path)
    git.run("lfs", "track", "*.safetensors", "*.bin", cwd=path)
    git.commit(path, files, "weights")
    return path


def test_push_clone_pull_fetch_all(lfs_world, git, tmp_path):
    d = lfs_world
    repo = new_model(d, "roundtrip")
    files = {f"shard-{i}.safetensors": blob(i, (i + 1) * 300_000) for i in range(4)}
    files["README.md"] = b"# model\n"
    work = lfs_repo(git, tmp_path / "w", files)
    url = d.git_url(f"{repo}.git", "alice")
    git.run("push", "-q", url, "main", cwd=work)
    # A second commit changing a weight: fetch --all must bring both versions.
    git.commit(work, {"shard-0.safetensors": blob(99, 123_456)}, "retrain")
    git.run("push", "-q", url, "main", cwd=work)

    clone = tmp_path / "c"
    git.run("clone", "-q", d.git_url(repo, "rob"), str(clone))
    for name, data in files.items():
        if name != "shard-0.safetensors":
            assert (clone / name).read_bytes() == data, name
    assert (clone / "shard-0.safetensors").read_bytes() == blob(99, 123_456)
    listed = git.out("lfs", "ls-files", cwd=clone)
    assert all(f"shard-{i}.safetensors" in listed for i in range(4))

    # Pointer-only clone, then git lfs pull smudges.
    lazy = tmp_path / "lazy"
    git.run("clone", "-q", d.git_url(repo, "rob"), str(lazy), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (lazy / "shard-1.safetensors").read_bytes().startswith(b"version https://git-lfs")
    git.run("lfs", "pull", cwd=lazy)
    assert (lazy / "shard-1.safetensors").read_bytes() == files["shard-1.safetensors"]

    git.run("lfs", "fetch", "--all", cwd=lazy)
    old = hashlib.sha256(files["shard-0.safetensors"]).hexdigest()
    assert (lazy / ".git/lfs/objects" / old[:2] / old[2:4] / old).read_bytes() == files["shard-0.safetensors"]

    # git lfs push --all into another model of the same namespace uploads every version.
    mirror = new_model(d, "mirror")
    mirror_url = d.git_url(f"{mirror}.git", "alice")
    git.run("lfs", "push", "--all", mirror_url, cwd=lazy)
    git.run("push", "-q", mirror_url, "main", cwd=lazy)
    status, body, _ = lfs_batch(d, mirror, "download", [{"oid": old, "size": len(files["shard-0.safetensors"])}],
                                who="rob")
    assert status == 200 and "actions" in body["objects"][0]


def test_credentials_asked_once(lfs_world, git, tmp_path):
    """git-lfs takes credentials from git's helper once for the batch, not once per object."""
    d = lfs_world
    repo = new_model(d, "creds")
    log = tmp_path / "helper.log"
    helper = tmp_path / "helper.sh"
    helper.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\n"
                      f"if [ \"$1\" = get ]; then echo username=alice; echo password={d.tokens['alice']}; fi\n")
    helper.chmod(stat.S_IRWXU)
    work = lfs_repo(git, tmp_path / "w", {f"w{i}.bin": blob(100 + i, 50_000) for i in range(12)})
    git.run("-c", f"credential.helper={helper}", "push", "-q", f"{d.url}/{repo}.git", "main", cwd=work)
    gets = log.read_text().split().count("get")
    assert 1 <= gets <= 3, f"credential helper asked {gets} times for 12 objects"


@pytest.mark.slow
def test_large_object_roundtrip(lfs_world, git, tmp_path):
    d = lfs_world
    repo = new_model(d, "large")
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.bin", cwd=work)
    big = work / "model.bin"
    with open(big, "wb") as f:
        for i in range(210):
            f.write(os.urandom(MiB))
    git.commit(work, {}, "210 MiB weights")
    baseline = d.rss()
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
    clone = tmp_path / "c"
    git.run("clone", "-q", d.git_url(repo, "rob"), str(clone))
    assert subprocess.run(["cmp", str(big), str(clone / "model.bin")]).returncode == 0
    grown = (d.rss() - baseline) / MiB
    assert grown < 100, f"daemon grew by {grown:.0f} MiB moving a 210 MiB object"


def test_interrupted_upload_leaves_nothing_then_retry_succeeds(lfs_world, git, tmp_path):
    d = lfs_world
    repo = new_model(d, "interrupted")
    data = blob(7, 3 * MiB)
    oid = hashlib.sha256(data).hexdigest()
    status, body, _ = lfs_batch(d, repo, "upload", [{"oid": oid, "size": len(data)}])
    action = body["objects"][0]["actions"]["upload"]
    if d.lfs_mode == "s3-direct":
        pytest.skip("direct mode: the upload goes to S3, whose own atomicity applies")
    # Send half the declared body, then drop the connection.
    parts = urlsplit(action["href"])
    with socket.create_connection((parts.hostname, parts.port)) as s:
        head = (f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(data)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in action["header"].items()) + "\r\n")
        s.sendall(head.encode() + data[: len(data) // 2])
    # Nothing visible: not downloadable, not in the store, no temp file left behind.
    status, body, _ = lfs_batch(d, repo, "download", [{"oid": oid, "size": len(data)}])
    assert body["objects"][0]["error"]["code"] == 404
    assert d.stored(oid) is None
    d.wait_for(lambda: not d.temp_files(), "temp files cleaned up")
    # A short body with the right Content-Length but wrong bytes: refused with 422.
    bad = bytearray(data)
    bad[100] ^= 1
    assert put_action(action, bytes(bad)) == 422
    assert d.stored(oid) is None
    # The client retries: now everything works.
    work = lfs_repo(git, tmp_path / "w", {"w.bin": data})
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
    assert d.stored(oid) == len(data)


def test_download_range_resume(lfs_world, git, tmp_path):
    d = lfs_world
    repo = new_model(d, "ranges")
    data = blob(8, 2 * MiB + 17)
    oid = hashlib.sha256(data).hexdigest()
    work = lfs_repo(git, tmp_path / "w", {"r.bin": data})
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
    _, body, _ = lfs_batch(d, repo, "download", [{"oid": oid, "size": len(data)}], who="rob")
    action = body["objects"][0]["actions"]["download"]
    r = http("GET", action["href"], headers={**action.get("header", {}), "Range": f"bytes=1000-{len(data) - 1}"})
    assert r.status == 206 and r.body == data[1000:]
    assert r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    r = http("GET", action["href"], headers=action.get("header", {}))
    assert r.status == 200 and r.body == data


def test_cross_tenant_oid_is_not_readable_and_needs_the_bytes(lfs_world, git, tmp_path):
    d = lfs_world
    secret = blob(9, 500_000)
    oid = hashlib.sha256(secret).hexdigest()
    work = lfs_repo(git, tmp_path / "w", {"secret.bin": secret})
    git.run("push", "-q", d.git_url(f"{new_model(d, 'victim')}.git", "alice"), "main", cwd=work)

    theirs = new_model(d, "thief", ns="evil")
    # Knowing the hash gives no read access from another repository.
    status, body, _ = lfs_batch(d, theirs, "download", [{"oid": oid, "size": len(secret)}], who="eve")
    assert status == 200 and body["objects"][0]["error"]["code"] == 404 and "actions" not in body["objects"][0]
    # Nor does claiming to upload it: the server asks for the bytes ...
    status, body, _ = lfs_batch(d, theirs, "upload", [{"oid": oid, "size": len(secret)}], who="eve")
    entry = body["objects"][0]
    # ... refuses wrong ones (in S3 direct mode S3 itself refuses them: the checksum is signed) ...
    fake = bytes(len(secret))
    assert put_and_verify(entry, fake) in (400, 403, 422)
    status, body, _ = lfs_batch(d, theirs, "download", [{"oid": oid, "size": len(secret)}], who="eve")
    assert body["objects"][0]["error"]["code"] == 404
    assert d.stored(oid) == len(secret), "a refused upload must not touch the stored copy"
    # ... and links it once the real bytes arrived (the store still keeps one copy).
    assert put_and_verify(entry, secret) == 200
    status, body, _ = lfs_batch(d, theirs, "download", [{"oid": oid, "size": len(secret)}], who="eve")
    assert "download" in body["objects"][0]["actions"]
    # A download token for one repository does not open another's href.
    status, body, _ = lfs_batch(d, "acme/victim", "download", [{"oid": oid, "size": len(secret)}], who="alice")
    token_header = body["objects"][0]["actions"]["download"]["header"]
    if d.lfs_mode != "s3-direct":
        r = http("GET", f"{d.url}/{new_model(d, 'other')}.git/info/lfs/objects/{oid}", headers=token_header)
        assert r.status == 401


def test_locks_with_the_real_client(lfs_world, git, tmp_path):
    d = lfs_world
    repo = new_model(d, "locked")
    work = lfs_repo(git, tmp_path / "w", {"a.bin": blob(10, 1000), "b.bin": blob(11, 1000)})
    url = d.git_url(f"{repo}.git", "alice")
    git.run("remote", "add", "origin", url, cwd=work)
    git.run("push", "-q", "origin", "main", cwd=work)
    out = git.out("lfs", "lock", "a.bin", cwd=work)
    assert "Locked a.bin" in out
    proc = git.run("lfs", "lock", "a.bin", cwd=work, check=False)
    assert proc.returncode != 0 and "already created lock" in (proc.stdout + proc.stderr).decode()
    listed = git.out("lfs", "locks", cwd=work)
    assert "a.bin" in listed and "alice" in listed

    # Rob only reads: he can list, not lock.
    rob = tmp_path / "rob"
    git.run("clone", "-q", d.git_url(repo, "rob"), str(rob))
    assert "a.bin" in git.out("lfs", "locks", cwd=rob)
    assert git.run("lfs", "lock", "b.bin", cwd=rob, check=False).returncode != 0

    # Ada (namespace admin) cannot unlock alice's lock without --force; with it she can.
    ada = tmp_path / "ada"
    git.run("clone", "-q", d.git_url(repo, "ada"), str(ada))
    assert git.run("lfs", "unlock", "a.bin", cwd=ada, check=False).returncode != 0
    git.run("lfs", "unlock", "--force", "a.bin", cwd=ada)
    assert "a.bin" not in git.out("lfs", "locks", cwd=work)

    # Push verifies locks: alice's push goes through while she holds a lock of her own.
    git.run("lfs", "lock", "b.bin", cwd=work)
    git.commit(work, {"b.bin": blob(12, 1000)}, "change b")
    git.run("push", "-q", "origin", "main", cwd=work)
    git.run("lfs", "unlock", "b.bin", cwd=work)
    # Eve (other tenant) cannot even see the locks.
    r = http("GET", f"{d.url}/{repo}.git/info/lfs/locks", token=d.tokens["eve"], headers={"Accept": LFS_TYPE})
    assert r.status == 404


@pytest.mark.parametrize("case", [
    "malformed_json", "not_an_object", "wrong_content_type", "bad_accept", "unknown_operation",
    "unknown_transfer", "too_many_objects", "objects_not_list",
])
def test_batch_whole_request_errors(lfs_world, case):
    d = lfs_world
    repo = "acme/bad-input" if case != "malformed_json" else "acme/bad-input"
    if d.api("GET", f"/api/v1/models/{repo}").status == 404:
        new_model(d, "bad-input")
    ok_obj = [{"oid": "a" * 64, "size": 1}]
    headers = {"Content-Type": LFS_TYPE, "Accept": LFS_TYPE}
    body: bytes = json.dumps({"operation": "upload", "objects": ok_obj}).encode()
    expected = {"malformed_json": 400, "not_an_object": 400, "wrong_content_type": 415, "bad_accept": 406,
                "unknown_operation": 422, "unknown_transfer": 422, "too_many_objects": 413,
                "objects_not_list": 422}[case]
    if case == "malformed_json":
        body = b'{"operation": "upload", "objects": ['
    elif case == "not_an_object":
        body = b"[1, 2]"
    elif case == "wrong_content_type":
        headers["Content-Type"] = "text/plain"
    elif case == "bad_accept":
        headers["Accept"] = "text/html"
    elif case == "unknown_operation":
        body = json.dumps({"operation": "delete", "objects": ok_obj}).encode()
    elif case == "unknown_transfer":
        body = json.dumps({"operation": "upload", "transfers": ["tus"], "objects": ok_obj}).encode()
    elif case == "too_many_objects":
        body = json.dumps({"operation": "upload", "objects": ok_obj * 1001}).encode()
    elif case == "objects_not_list":
        body = json.dumps({"operation": "upload", "objects": "all"}).encode()
    r = http("POST", f"{d.url}/{repo}.git/info/lfs/objects/batch", raw=body, token=d.tokens["alice"], headers=headers)
    assert r.status == expected, (case, r.status, r.body)
    assert r.headers["Content-Type"].startswith(LFS_TYPE)
    err = json.loads(r.body)
    assert err["message"] and err["request_id"]
    assert d.stored("a" * 64) is None


def test_batch_per_object_errors(lfs_world):
    d = lfs_world
    repo = new_model(d, "per-object")
    good = hashlib.sha256(b"x").hexdigest()
    objects = [
        {"oid": "A" * 64, "size": 1},        # uppercase
        {"oid": "a" * 63, "size": 1},        # short
        {"oid": "../../etc/passwd", "size": 1},
        {"oid": good, "size": -1},
        {"oid": good, "size": 1 << 62},      # beyond lfs.max_object_size
        {"oid": good, "size": "1"},
        {"oid": good, "size": 1},            # valid
    ]
    status, body, headers = lfs_batch(d, repo, "upload", objects)
    assert status == 200 and headers["Content-Type"].startswith(LFS_TYPE)
    codes = [o.get("error", {}).get("code") for o in body["objects"]]
    assert codes == [422, 422, 422, 422, 422, 422, None]
    assert "upload" in body["objects"][-1]["actions"] and "verify" in body["objects"][-1]["actions"]
    assert body["objects"][-1]["actions"]["upload"]["expires_in"] > 0
    status, body, _ = lfs_batch(d, repo, "download", [{"oid": good, "size": 1}], ref={"name": "refs/heads/main"})
    assert body["objects"][0]["error"]["code"] == 404
    status, body, _ = lfs_batch(d, repo, "upload", [{"oid": good, "size": 1}], hash_algo="sha512")
    assert body["objects"][0]["error"]["code"] == 409


def test_batch_access(lfs_world):
    d = lfs_world
    repo = new_model(d, "guarded")
    obj = [{"oid": "b" * 64, "size": 1}]
    status, body, headers = lfs_batch(d, repo, "download", obj, who=None)
    assert status == 401 and headers["LFS-Authenticate"].startswith("Basic") and "WWW-Authenticate" not in headers
    status, body, _ = lfs_batch(d, repo, "download", obj, who="eve")
    assert status == 404 and body["message"] == "model not found"
    status, missing, _ = lfs_batch(d, "acme/no-such-model", "download", obj, who="eve")
    assert status == 404 and missing["message"] == body["message"]
    status, body, _ = lfs_batch(d, repo, "upload", obj, who="rob")
    assert status == 403
    status, body, _ = lfs_batch(d, repo, "download", obj, who="rob")
    assert status == 200


def test_transfer_token_abuse(lfs_world):
    d = lfs_world
    if d.lfs_mode == "s3-direct":
        pytest.skip("direct mode hands out S3 URLs, not daemon tokens")
    repo = new_model(d, "tokens")
    other = new_model(d, "tokens-other")
    data = b"token test payload"
    oid = hashlib.sha256(data).hexdigest()
    _, body, _ = lfs_batch(d, repo, "upload", [{"oid": oid, "size": len(data)}])
    action = body["objects"][0]["actions"]["upload"]
    # The same token on another repository's href, or for another OID: refused, nothing stored.
    assert http("PUT", f"{d.url}/{other}.git/info/lfs/objects/{oid}", raw=data, headers=action["header"]).status == 401
    evil = hashlib.sha256(b"other").hexdigest()
    assert http("PUT", f"{d.url}/{repo}.git/info/lfs/objects/{evil}", raw=b"other",
                headers=action["header"]).status == 401
    # An upload token does not download.
    assert http("GET", action["href"], headers=action["header"]).status == 401
    # A forged or expired token.
    forged = action["header"]["Authorization"][:-4] + "AAAA"
    assert http("PUT", action["href"], raw=data, headers={"Authorization": forged}).status == 401
    # the signing key is in the catalog
    key = bytes(catalog_sql(d.data, "select secret from signing_keys where name = 'actions'")[0][0])
    signer = ActionSigner(key)
    claim = signer.verify(action["header"]["Authorization"].removeprefix("Bearer "))
    expired = signer.sign("upload", claim.model_key, oid, len(data), ttl=-60)
    r = http("PUT", action["href"], raw=data, headers={"Authorization": "Bearer " + expired})
    assert r.status == 401 and r.headers["LFS-Authenticate"].startswith("Basic")
    # A Content-Length that disagrees with the signed size.
    assert http("PUT", action["href"], raw=data + b"!", headers=action["header"]).status == 400
    assert d.stored(oid) is None
    assert put_action(action, data) == 200
    assert d.stored(oid) == len(data)


def test_hub_resolve_serves_lfs_content_from_every_store(lfs_world, git, tmp_path):
    """/resolve streams LFS content from the store, or redirects to a presigned URL in S3 direct
    mode with the metadata huggingface_hub reads from the redirect itself."""
    import urllib.request

    d = lfs_world
    repo = new_model(d, "resolve")
    data = blob(21, 300_000)
    work = lfs_repo(git, tmp_path / "w", {"w.bin": data})
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
    commit = git.out("rev-parse", "HEAD", cwd=work)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    req = urllib.request.Request(f"{d.url}/{repo}/resolve/main/w.bin", method="HEAD",
                                 headers={"Authorization": f"Bearer {d.tokens['rob']}"})
    try:
        resp = urllib.request.build_opener(NoRedirect).open(req, timeout=30)
        status, headers = resp.status, resp.headers
    except urllib.error.HTTPError as err:
        status, headers = err.code, err.headers
    assert headers["X-Repo-Commit"] == commit
    assert headers["X-Linked-Etag"].strip('"') == hashlib.sha256(data).hexdigest()
    assert int(headers["X-Linked-Size"]) == len(data)
    if d.lfs_mode == "s3-direct":
        assert status == 302 and "X-Amz-Signature" in headers["Location"]
        assert http("GET", headers["Location"]).body == data  # no Authorization needed: presigned
    else:
        assert status == 200 and int(headers["Content-Length"]) == len(data)
    r = http("GET", f"{d.url}/{repo}/resolve/main/w.bin", token=d.tokens["rob"], headers={"Range": "bytes=10-"})
    assert r.body == data[10:]
