"""The real git client against a real daemon: clone, push, fetch, tags, v0 and v2, shallow,
partial, gzip bodies, and the access rules for every identity and visibility."""

import gzip
import subprocess
from pathlib import Path

import pytest

from ..helpers import http


@pytest.fixture(scope="module")
def world(daemon):
    """acme (alice writer, rob reader, ada namespace admin) and evil (eve), one model per visibility."""
    daemon.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    daemon.ok("POST", "/api/v1/namespaces", body={"name": "evil"})
    for user, ns, role in (("alice", "acme", "writer"), ("rob", "acme", "reader"), ("ada", "acme", "admin"),
                           ("eve", "evil", "admin")):
        daemon.user(user, scope="admin" if role == "admin" else "write")
        daemon.ok("PUT", f"/api/v1/namespaces/{ns}/members/{user}", body={"role": role})
    for vis in ("private", "shared", "public"):
        daemon.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": vis, "visibility": vis})
    return daemon


def _seed(git, tmp_path: Path, daemon, repo: str) -> Path:
    work = git.new_repo(tmp_path / "seed", {"README.md": "# model\n", "config.json": '{"a": 1}\n'})
    git.run("push", "-q", daemon.git_url(repo, "alice"), "main", cwd=work)
    return work


@pytest.mark.parametrize("version", ["0", "2"])
def test_push_clone_fetch_tag_roundtrip(world, git, tmp_path, version):
    d = world
    name = f"roundtrip-v{version}"
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": name, "visibility": "private"})
    proto = ["-c", f"protocol.version={version}"]
    work = git.new_repo(tmp_path / "w", {"README.md": "hello\n", "weights/params.txt": "1 2 3\n"})
    git.run(*proto, "push", "-q", d.git_url(f"acme/{name}.git", "alice"), "main", cwd=work)

    # Clone works with and without the .git suffix.
    clone = tmp_path / "c"
    git.run(*proto, "clone", "-q", d.git_url(f"acme/{name}", "rob"), str(clone))
    assert (clone / "weights/params.txt").read_text() == "1 2 3\n"

    head2 = git.commit(work, {"README.md": "hello again\n"}, "second")
    git.run("tag", "-a", "v1.0", "-m", "first release", cwd=work)
    git.run(*proto, "push", "-q", "--follow-tags", d.git_url(f"acme/{name}.git", "alice"), "main", cwd=work)

    git.run(*proto, "fetch", "-q", "--tags", "origin", cwd=clone)
    assert git.out("rev-parse", "origin/main", cwd=clone) == head2
    assert git.out("rev-parse", "v1.0^{commit}", cwd=clone) == head2
    ls = git.out(*proto, "ls-remote", d.git_url(f"acme/{name}.git", "rob"))
    assert f"{head2}\trefs/heads/main" in ls and "refs/tags/v1.0" in ls

    refs = d.ok("GET", f"/api/v1/models/acme/{name}/refs", token="rob")
    assert refs["branches"] == [{"name": "main", "commit": head2, "date": refs["branches"][0]["date"]}]
    (tag,) = refs["tags"]
    assert tag["name"] == "v1.0" and tag["commit"] == head2 and tag["annotated"]
    assert tag["message"] == "first release\n" and tag["tagger"]["name"] == "Tester"


def test_protocol_v2_is_spoken(world, git, tmp_path):
    _ = world
    r = http("GET", world.url + "/acme/public.git/info/refs?service=git-upload-pack",
             headers={"Git-Protocol": "version=2"})
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/x-git-upload-pack-advertisement"
    assert r.body.startswith(b"000eversion 2\n")  # no "# service=" preamble in v2
    assert "no-cache" in r.headers["Cache-Control"]
    r0 = http("GET", world.url + "/acme/public.git/info/refs?service=git-upload-pack")
    assert r0.body.startswith(b"001e# service=git-upload-pack\n0000")


def test_gzip_request_body(world, git, tmp_path):
    d = world
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "gz", "visibility": "public"})
    work = git.new_repo(tmp_path / "w", {"a.txt": "gzip me\n"})
    git.run("push", "-q", d.git_url("acme/gz.git", "alice"), "main", cwd=work)
    head = git.out("rev-parse", "HEAD", cwd=work)

    def pkt(s: str) -> bytes:
        return b"%04x" % (len(s) + 4) + s.encode()

    body = pkt(f"want {head} ofs-delta\n") + b"0000" + pkt("done\n")
    r = http("POST", d.url + "/acme/gz.git/git-upload-pack", raw=gzip.compress(body),
             headers={"Content-Type": "application/x-git-upload-pack-request", "Content-Encoding": "gzip"})
    assert r.status == 200, r.body
    assert r.headers["Content-Type"] == "application/x-git-upload-pack-result"
    assert r.body.startswith(b"0008NAK\n") and b"PACK" in r.body[:64]

    # And git's own gzipped negotiation works end to end: git gzips upload-pack requests over
    # 1 KiB, so give it 40 distinct branch tips to want.
    for i in range(40):
        git.commit(work, {"a.txt": f"gzip me {i}\n"}, f"c{i}")
        git.run("branch", f"b{i}", cwd=work)
    git.run("push", "-q", d.git_url("acme/gz.git", "alice"), "--all", cwd=work)
    trace = git.run("-c", "protocol.version=0", "clone", "-q", d.git_url("acme/gz"), str(tmp_path / "c"),
                    env={"GIT_TRACE_CURL": "1", "GIT_TRACE_CURL_NO_DATA": "1"}).stderr.decode()
    assert "Content-Encoding: gzip" in trace
    assert (tmp_path / "c/a.txt").read_text() == "gzip me 39\n"


def test_shallow_and_partial_clone(world, git, tmp_path):
    d = world
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "hist", "visibility": "public"})
    work = git.new_repo(tmp_path / "w", {"f.txt": "v1\n", "old.bin.txt": "old\n"})
    old_blob = git.out("rev-parse", "HEAD:old.bin.txt", cwd=work)
    git.run("rm", "-q", "old.bin.txt", cwd=work)
    for i in range(2, 5):
        git.commit(work, {"f.txt": f"v{i}\n"}, f"v{i}")
    git.run("push", "-q", d.git_url("acme/hist.git", "alice"), "main", cwd=work)

    for version in ("0", "2"):
        shallow = tmp_path / f"shallow{version}"
        git.run("-c", f"protocol.version={version}", "clone", "-q", "--depth", "1", d.git_url("acme/hist"),
                str(shallow))
        assert git.out("rev-list", "--count", "HEAD", cwd=shallow) == "1"
        git.run("-c", f"protocol.version={version}", "fetch", "-q", "--deepen", "2", cwd=shallow)
        assert git.out("rev-list", "--count", "HEAD", cwd=shallow) == "3"

    partial = tmp_path / "partial"
    git.run("clone", "-q", "--filter=blob:none", d.git_url("acme/hist"), str(partial))
    assert (partial / "f.txt").read_text() == "v4\n"
    missing = git.out("rev-list", "--objects", "--all", "--missing=print", cwd=partial)
    assert f"?{old_blob}" in missing.splitlines()
    # Lazy fetch of a blob the filter left out.
    assert git.out("cat-file", "-p", old_blob, cwd=partial) == "old"


# -- access ------------------------------------------------------------------------------------

CLONE_EXPECTED = {
    # identity: (private, shared, public)
    None: (False, False, True),
    "eve": (False, True, True),
    "rob": (True, True, True),
    "alice": (True, True, True),
}
PUSH_ALLOWED = {None: False, "eve": False, "rob": False, "alice": True, "ada": True}


@pytest.mark.parametrize("who", list(CLONE_EXPECTED))
def test_clone_access_matrix(world, git, tmp_path, who):
    d = world
    for vis, allowed in zip(("private", "shared", "public"), CLONE_EXPECTED[who]):
        target = tmp_path / f"{vis}"
        proc = git.run("clone", "-q", d.git_url(f"acme/{vis}.git", who), str(target), check=False)
        assert (proc.returncode == 0) == allowed, (who, vis, proc.stderr)
        if not allowed:
            err = proc.stderr.decode()
            # Anonymous gets asked for credentials (401); an outsider is told "not found" (404).
            assert ("could not read Username" in err) if who is None else ("not found" in err), err


@pytest.mark.parametrize("who", list(PUSH_ALLOWED))
def test_push_access(world, git, tmp_path, who):
    d = world
    work = git.new_repo(tmp_path / "w", {"x.txt": f"{who}\n"})
    for vis in ("private", "public"):
        proc = git.run("push", "-q", d.git_url(f"acme/{vis}.git", who), f"main:refs/heads/{who}-{vis}",
                       cwd=work, check=False)
        expected = PUSH_ALLOWED[who]
        assert (proc.returncode == 0) == expected, (who, vis, proc.stderr)


def test_push_needs_write_scope(world, git, tmp_path):
    d = world
    read_token = d.ok("POST", "/api/v1/users/alice/tokens", token="alice", body={"scopes": ["read"]})["token"]
    work = git.new_repo(tmp_path / "w", {"x.txt": "x\n"})
    url = f"http://alice:{read_token}@127.0.0.1:{d.port}/acme/private.git"
    proc = git.run("push", "-q", url, "main:refs/heads/readscope", cwd=work, check=False)
    assert proc.returncode != 0 and "403" in proc.stderr.decode()
    git.run("clone", "-q", url, str(tmp_path / "c"))  # but it reads


def test_private_is_indistinguishable_from_missing(world):
    d = world
    for path in ("/acme/private.git/info/refs?service=git-upload-pack", "/api/v1/models/acme/private",
                 "/api/v1/models/acme/private/refs"):
        missing = path.replace("private", "nosuchmodel")
        a, b = d.api("GET", path, token="eve"), d.api("GET", missing, token="eve")
        assert a.status == b.status == 404
        assert a.body == b.body
        assert {k: v for k, v in a.headers.items() if k not in ("Date", "X-Request-Id")} == \
               {k: v for k, v in b.headers.items() if k not in ("Date", "X-Request-Id")}
        # Anonymous: 401 with a Basic challenge for both, so git prompts.
        a, b = d.api("GET", path, token=None), d.api("GET", missing, token=None)
        assert a.status == b.status == 401 and a.body == b.body
        assert a.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_bad_credentials(world, git, tmp_path):
    d = world
    for header in ("Bearer mr_not-a-real-token", "Basic Ym9ndXM=", "Basic !!!", "Digest abc"):
        r = http("GET", d.url + "/acme/public.git/info/refs?service=git-upload-pack", headers={"Authorization": header})
        assert r.status == 401, header
        assert r.json()["error"]["code"] == "unauthenticated"
    # Right token, wrong user name in Basic auth.
    r = http("GET", d.url + "/api/v1/user", basic=("rob", d.tokens["alice"]))
    assert r.status == 401
    # git sends credentials only after a 401 challenge, so use a model that challenges.
    proc = git.run("clone", "-q", f"http://alice:wrong@127.0.0.1:{d.port}/acme/private.git", str(tmp_path / "c"),
                   check=False)
    assert proc.returncode != 0 and "Authentication failed" in proc.stderr.decode()


@pytest.mark.parametrize("path", [
    "/%2e%2e/%2e%2e/info/refs?service=git-upload-pack",
    "/acme/..%2f..%2fetc/info/refs?service=git-upload-pack",
    "/acme/%2e%2e/info/refs?service=git-upload-pack",
    "/..%2fdata/catalog.db/info/refs?service=git-upload-pack",
    "/acme/public.git.git/info/refs?service=git-upload-pack",
    "/acme/.hidden/info/refs?service=git-upload-pack",
    "/acme/public.git/../../etc/passwd",
    "/acme/public.git/HEAD",
    "/acme/public.git/objects/info/packs",
    "/acme/public.git/config",
])
def test_traversal_and_dumb_paths_never_touch_files(world, path):
    r = http("GET", world.url + path, token=world.admin_token)
    assert r.status in (400, 403, 404), (path, r.status)
    assert b"root:" not in r.body and b"[core]" not in r.body


def test_dumb_protocol_and_bad_rpc_content_type(world):
    d = world
    r = http("GET", d.url + "/acme/public.git/info/refs")
    assert r.status == 403
    r = http("POST", d.url + "/acme/public.git/git-upload-pack", raw=b"0000",
             headers={"Content-Type": "application/octet-stream"})
    assert r.status == 415
    r = http("GET", d.url + "/acme/public.git/info/refs?service=git-frobnicate")
    assert r.status == 403


def test_push_outside_daemon_is_refused(world, git, tmp_path):
    """A push straight into the repository directory runs our hook without a daemon session."""
    d = world
    bare = d.data / "repos" / "acme" / "public.git"
    work = git.new_repo(tmp_path / "w", {"sneaky.txt": "x\n"})
    proc = git.run("push", str(bare), "main:refs/heads/sneaky", cwd=work, check=False)
    assert proc.returncode != 0
    assert "pushes must go through the modelrepo server" in proc.stderr.decode()
    assert "refs/heads/sneaky" not in git.out("ls-remote", str(bare))


def test_concurrent_clones(world, git, tmp_path):
    d = world
    _seed(git, tmp_path, d, "acme/shared.git")
    procs = [subprocess.Popen(["git", "clone", "-q", d.git_url("acme/shared.git", "eve"), str(tmp_path / f"c{i}")],
                              env=git.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(16)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), results
