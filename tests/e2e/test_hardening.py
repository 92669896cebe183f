"""Attacks a review found, kept as regressions: each must stay refused."""

import base64
import hashlib
import json
import os
import shutil

import pytest

from ..helpers import http, start_daemon

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
LFS = "application/vnd.git-lfs+json"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def hd():
    d = start_daemon()
    for ns in ("a", "b"):
        d.ok("POST", "/api/v1/namespaces", body={"name": ns})
    d.user("alice", scope="admin")
    d.ok("PUT", "/api/v1/namespaces/a/members/alice", body={"role": "admin"})
    d.user("bob", scope="admin")
    d.ok("PUT", "/api/v1/namespaces/b/members/bob", body={"role": "admin"})
    yield d
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


def test_yaml_alias_bomb_is_refused_cheaply(hd):
    levels = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    content = "---\n" + "\n".join(levels) + "\n---\n"
    r = http("POST", hd.url + "/api/validate-yaml", token=hd.tokens["alice"], body={"content": content})
    assert r.status == 400 and "anchors (&name) are not allowed" in r.json()["errors"][0]["message"]
    assert http("POST", hd.url + "/api/validate-yaml", body={"content": "x"}).status == 401


def test_refs_cannot_point_at_unpublished_objects(hd, git, tmp_path):
    d = hd
    d.ok("POST", "/api/v1/models", body={"namespace": "b", "name": "m"})
    work = git.new_repo(tmp_path / "w", {"README.md": "ok\n"})
    git.run("push", "-q", d.git_url("b/m.git", "bob"), "main", cwd=work)
    # A refused Hub commit leaves a commit object in the repository ...
    bad = {"key": "file", "value": {"path": "w.safetensors", "content": base64.b64encode(b"\0" * 99).decode()}}
    body = json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + json.dumps(bad) + "\n"
    r = http("POST", d.url + "/api/models/b/m/commit/main", raw=body.encode(), token=d.tokens["bob"],
             headers={"Content-Type": "application/x-ndjson"})
    assert r.status == 422
    # ... which no ref reaches, so no API may point a ref at it (nor use reflog syntax).
    repo = d.data / "repos/b/m.git"
    dangling = git.out("fsck", "--lost-found", "--no-reflogs", cwd=repo)
    commits = [line.split()[-1] for line in dangling.splitlines() if "commit" in line]
    assert commits, dangling
    for rev in (commits[0], "main@{1}", "main:README.md"):
        r = d.api("POST", "/api/v1/models/b/m/branches", token="bob", body={"name": "sneak", "revision": rev})
        assert r.status in (400, 404), (rev, r.status, r.body)
        r = http("POST", d.url + "/api/models/b/m/tag/" + rev.replace("/", "%2F"), token=d.tokens["bob"],
                 body={"tag": "sneak"})
        assert r.status in (400, 404), (rev, r.status, r.body)


def test_tag_pointing_at_a_blob_is_refused(hd, git, tmp_path):
    d = hd
    d.ok("POST", "/api/v1/models", body={"namespace": "b", "name": "blobtag", "visibility": "public"})
    work = git.new_repo(tmp_path / "w", {"README.md": "ok\n"})
    (work / "big.safetensors").write_bytes(os.urandom(MiB))
    blob = git.out("hash-object", "-w", "big.safetensors", cwd=work)
    git.run("tag", "weights", blob, cwd=work)
    proc = git.run("push", d.git_url("b/blobtag.git", "bob"), "main", "weights", cwd=work, check=False)
    assert proc.returncode != 0 and "points at a blob or tree, not a commit" in proc.stderr.decode()
    assert d.api("GET", "/api/v1/models/b/blobtag/refs", token=None).status == 200


def test_anonymous_read_off_cannot_be_bypassed_with_a_query_token(git, tmp_path):
    d = start_daemon(extra_env={"MODELREPO_AUTH__ALLOW_ANONYMOUS_READ": "false"})
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": "p"})
        d.ok("POST", "/api/v1/models", body={"namespace": "p", "name": "pub", "visibility": "public"})
        for path in ("/api/v1/models?token=x", "/p/pub.git/info/refs?service=git-upload-pack&token=x",
                     "/api/models/p/pub?token=x"):
            assert http("GET", d.url + path).status == 401, path
    finally:
        d.stop()
        shutil.rmtree(d.data.parent, ignore_errors=True)


def test_huge_readme_is_refused_without_being_loaded(hd, git, tmp_path):
    d = hd
    d.ok("POST", "/api/v1/models", body={"namespace": "b", "name": "readme"})
    work = git.new_repo(tmp_path / "w")
    with open(work / "README.md", "wb") as f:
        f.write(b"\0" * (64 * MiB))  # compresses to almost nothing on the wire
    git.commit(work, {}, "huge readme")
    before = d.rss()
    proc = git.run("push", d.git_url("b/readme.git", "bob"), "main", cwd=work, check=False)
    assert proc.returncode != 0 and "README.md is 64 MiB; the limit is 1 MiB" in proc.stderr.decode()
    assert (d.rss() - before) < 32 * MiB


def test_action_token_of_a_deleted_model_does_not_open_its_successor(hd):
    d = hd
    d.ok("POST", "/api/v1/models", body={"namespace": "b", "name": "tmp"})
    data = b"bob's payload"
    oid = hashlib.sha256(data).hexdigest()
    r = http("POST", d.url + "/b/tmp.git/info/lfs/objects/batch", token=d.tokens["bob"],
             raw=json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).encode(),
             headers={"Content-Type": LFS, "Accept": LFS})
    header = r.json()["objects"][0]["actions"]["upload"]["header"]
    assert d.api("DELETE", "/api/v1/models/b/tmp", token="bob").status == 204
    d.ok("POST", "/api/v1/models", body={"namespace": "a", "name": "successor"}, token="alice")
    r = http("PUT", f"{d.url}/a/successor.git/info/lfs/objects/{oid}", raw=data, headers=header)
    # Decided by the token's own model, which is gone: the missing model's 404 (a live model's
    # token used on another model is a 401, test_lfs), and nothing is stored for the successor.
    assert r.status == 404 and r.json()["message"] == "model not found"
    assert d.ok("GET", "/api/v1/namespaces/a", token="alice")["usage"]["bytes"] == 0


def test_direct_put_with_credentials_respects_the_quota(hd):
    d = hd
    d.ok("POST", "/api/v1/models", body={"namespace": "b", "name": "q"})
    d.ok("PUT", "/api/v1/namespaces/b/quota", body={"bytes": 1000})
    data = os.urandom(5000)
    oid = hashlib.sha256(data).hexdigest()
    r = http("PUT", f"{d.url}/b/q.git/info/lfs/objects/{oid}", raw=data, token=d.tokens["bob"])
    assert r.status == 507 and "quota exceeded" in r.json()["message"]
    d.ok("PUT", "/api/v1/namespaces/b/quota", body={"bytes": None})


def test_hub_commit_cannot_drop_lfs_attributes_or_add_submodules(hd, tmp_path):
    d = hd
    d.ok("POST", "/api/v1/models", body={"namespace": "b", "name": "hubattr"})
    data = os.urandom(2048)
    oid = hashlib.sha256(data).hexdigest()
    r = http("POST", d.url + "/b/hubattr.git/info/lfs/objects/batch", token=d.tokens["bob"],
             raw=json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).encode(),
             headers={"Content-Type": LFS, "Accept": LFS})
    assert http("PUT", r.json()["objects"][0]["actions"]["upload"]["href"], raw=data,
                headers=r.json()["objects"][0]["actions"]["upload"]["header"]).status == 200

    def commit(*ops):
        body = "".join(json.dumps(x) + "\n" for x in [{"key": "header", "value": {"summary": "c"}}, *ops])
        return http("POST", d.url + "/api/models/b/hubattr/commit/main", raw=body.encode(), token=d.tokens["bob"],
                    headers={"Content-Type": "application/x-ndjson"})

    def file_op(path, content):
        return {"key": "file", "value": {"path": path, "content": base64.b64encode(content).decode()}}

    lfs_op = {"key": "lfsFile", "value": {"path": "m.safetensors", "algo": "sha256", "oid": oid, "size": len(data)}}
    r = commit(file_op(".gitattributes", b"# no lfs here\n"), lfs_op)
    assert r.status == 200, r.body  # the server extends the committed .gitattributes ...
    attrs = http("GET", d.url + "/b/hubattr/resolve/main/.gitattributes", token=d.tokens["bob"]).body
    assert b"*.safetensors filter=lfs diff=lfs merge=lfs -text" in attrs  # ... it does not trust the old one
    r = commit(file_op(".gitmodules", b'[submodule "../../x"]\n\tpath = x\n\turl = --upload-pack=touch\n'))
    assert r.status == 400 and ".gitmodules" in r.json()["error"]
    r = commit(file_op("a/.GIT/config", b"x"))
    assert r.status == 400


def test_anonymous_cannot_probe_deployment_ids(hd):
    assert http("GET", hd.url + "/api/v1/deployments/987654").status == 401
