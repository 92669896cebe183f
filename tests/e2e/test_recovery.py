"""Crashes, and what the next start, fsck and gc make of them: a real daemon SIGKILLed at chosen
moments (from a hook the test writes into the repository, so the product is unchanged), real git
and git-lfs, the CLI as an operator runs it, and the state a crash leaves built by hand where no
moment can be chosen (a ref moved while the daemon is down)."""

import json
import socket
from urllib.parse import urlsplit

import pytest

from ..helpers import catalog_env, catalog_sql, start_daemon
from .test_hooks_webhooks import Receiver
from .test_lfs import blob, lfs_batch, lfs_repo, new_model
from .test_ops import backdate, cli, gc_line, ops_daemon, oid_of, push_weights, server_repo, wait_for

__all__ = ["ops_daemon"]  # the fixture: a fresh daemon per test, local and S3 (proxy)
LOCAL = pytest.mark.parametrize("ops_daemon", ["local"], indirect=True)


def restart(d) -> None:
    """Start the daemon again on the same data directory and store (after it was killed)."""
    if d.proc.poll() is None:
        d.stop()
    new = start_daemon(d.data, extra_env=d.env)
    d.proc, d.port, d.log_path = new.proc, new.port, new.log_path


def catalog_row(d, repo: str) -> dict:
    ns, name = repo.split("/")
    ((model_id, head, size),) = catalog_sql(
        d.data, "SELECT m.id, m.head_commit, m.total_size FROM models m JOIN namespaces n "
        "ON n.id = m.namespace_id WHERE n.name = :ns AND m.name = :name", ns=ns, name=name)
    refs = {(kind, ref): commit for kind, ref, commit in catalog_sql(
        d.data, "SELECT kind, name, \"commit\" FROM model_refs WHERE model_id = :id", id=model_id)}
    files = sorted(r[0] for r in catalog_sql(d.data, "SELECT path FROM model_files WHERE model_id = :id", id=model_id))
    events = [json.loads(r[0]) for r in catalog_sql(d.data, "SELECT payload FROM deliveries ORDER BY created_at, id")]
    return {"head": head, "size": size, "refs": refs, "files": files, "events": events}


def repo_ref(git, d, repo: str, ref: str) -> str:
    return git.out("--git-dir", str(server_repo(d, repo)), "rev-parse", ref)


def replace_hook(d, repo: str, name: str, script: str) -> bytes:
    """Swap one of the repository's hooks for ``script``; return the original (the daemon
    re-installs its own at start-up anyway)."""
    path = server_repo(d, repo) / "hooks" / name
    original = path.read_bytes()
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return original


# -- issue 15.7: the catalog converges to the repositories ---------------------------------------------

@LOCAL  # the catalog and the repositories do not depend on the store: once is enough
def test_sigkill_between_ref_update_and_post_receive(ops_daemon, git, tmp_path):
    d = ops_daemon
    repo = new_model(d, "crashy")
    with Receiver() as rx:
        d.ok("POST", f"/api/v1/models/{repo}/webhooks", body={"url": rx.url, "secret": "k",
                                                                "events": ["push", "tag.created"]})
        work = push_weights(d, git, tmp_path / "w", repo, {"a.bin": blob(1, 10_000)})
        first = git.out("rev-parse", "HEAD", cwd=work)
        rx.wait(1)
        # post-receive is where the daemon would rebuild the catalog: git has moved the refs when it
        # runs. Kill the daemon right there, as a power cut would.
        replace_hook(d, repo, "post-receive", f"kill -9 {d.proc.pid}\n")
        second = git.commit(work, {"b.bin": blob(2, 20_000), "config.json": "{}\n"}, "second")
        git.run("tag", "-a", "v1", "-m", "release", cwd=work)
        git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", "v1", cwd=work, check=False)
        assert d.proc.wait(30) == -9
        assert repo_ref(git, d, repo, "refs/heads/main") == second  # git moved...
        stale = catalog_row(d, repo)
        assert stale["head"] == first and ("tag", "v1") not in stale["refs"]  # ...the catalog did not
        assert "b.bin" not in stale["files"]

        r = cli(d, "fsck")
        assert r.returncode == 1, r.stdout + r.stderr
        assert (f"acme/crashy: catalog out of step with the repository: refs/heads/main is {second[:12]} in "
                f"the repository, {first[:12]} in the catalog; refs/tags/v1 is {second[:12]} in the repository, "
                f"absent in the catalog") in r.stdout

        restart(d)  # start-up converges before the daemon listens
        model = d.ok("GET", f"/api/v1/models/{repo}", token="alice")
        assert model["head_commit"] == second and model["total_size"] > stale["size"] + 20_000
        refs = d.ok("GET", f"/api/v1/models/{repo}/refs", token="alice")
        assert [t["name"] for t in refs["tags"]] == ["v1"]
        assert {"b.bin", "config.json"} <= set(catalog_row(d, repo)["files"])
        # The events the crash swallowed go out now, as post-receive would have sent them.
        rx.wait(3)
        assert [e["updates"] for e in rx.events("push")][-1] == [
            {"ref": "refs/heads/main", "before": first, "after": second}]
        assert rx.events("tag.created")[0]["tag"] == "v1" and rx.events("tag.created")[0]["commit"] == second
        assert '"event": "catalog_drift_repaired"' in d.log()
        assert cli(d, "fsck").returncode == 0

        # The hooks are the daemon's again: the next push lands and is mirrored as usual.
        third = git.commit(work, {"c.txt": "three\n"}, "third")
        git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
        assert d.ok("GET", f"/api/v1/models/{repo}", token="alice")["head_commit"] == third


@LOCAL
def test_fsck_repair_converges_a_ref_moved_behind_the_catalog(ops_daemon, git, tmp_path):
    """What a SIGKILL leaves, made while the daemon is down: refs moved with plain git (fetch into
    the bare repository runs no hooks), the catalog untouched."""
    d = ops_daemon
    repo = new_model(d, "moved")
    work = push_weights(d, git, tmp_path / "w", repo, {"a.bin": blob(3, 5_000)})
    first = git.out("rev-parse", "HEAD", cwd=work)
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main:dev", cwd=work)
    d.ok("POST", f"/api/v1/models/{repo}/webhooks", body={"url": "http://127.0.0.1:9/hook", "secret": "k",
                                                            "events": ["push"]})
    assert d.stop() == 0
    bare = str(server_repo(d, repo))
    second = git.commit(work, {"notes.txt": "moved by hand\n"}, "second")
    git.run("--git-dir", bare, "fetch", "-q", str(work), "+main:refs/heads/main")
    git.run("--git-dir", bare, "update-ref", "-d", "refs/heads/dev")
    before = catalog_row(d, repo)
    assert before["head"] == first and ("branch", "dev") in before["refs"]

    r = cli(d, "fsck", repo)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"refs/heads/dev is absent in the repository, {first[:12]} in the catalog" in r.stdout
    assert f"refs/heads/main is {second[:12]} in the repository, {first[:12]} in the catalog" in r.stdout
    r = cli(d, "fsck", "--repair")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("fsck: clean") and "repaired: acme/moved: catalog out of step" in r.stdout
    after = catalog_row(d, repo)
    assert after["head"] == second and after["refs"] == {("branch", "main"): second}
    assert "notes.txt" in after["files"]
    assert after["events"] == before["events"]  # a repair is quiet: a live daemon may announce it itself
    r = cli(d, "fsck")
    assert r.returncode == 0 and "repaired" not in r.stdout, r.stdout

    # Moved again while down, and this time the daemon's start finds it: converged and announced.
    third = git.commit(work, {"notes.txt": "again\n"}, "third")
    git.run("--git-dir", bare, "fetch", "-q", str(work), "+main:refs/heads/main")
    restart(d)
    assert d.ok("GET", f"/api/v1/models/{repo}", token="alice")["head_commit"] == third
    pushes = [e for e in catalog_row(d, repo)["events"] if e["event"] == "push"]
    assert pushes[-1]["updates"] == [{"ref": "refs/heads/main", "before": second, "after": third}]


# -- issue 15.8: leftovers after crashes -----------------------------------------------------------------

def start_upload(d, repo: str, data: bytes, sent: int) -> socket.socket:
    """An LFS upload whose client has sent ``sent`` bytes of the body and is still sending."""
    _, body, _ = lfs_batch(d, repo, "upload", [{"oid": oid_of(data), "size": len(data)}])
    action = body["objects"][0]["actions"]["upload"]
    parts = urlsplit(action["href"])
    s = socket.create_connection((parts.hostname, parts.port))
    head = (f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(data)}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in action["header"].items()) + "\r\n")
    s.sendall(head.encode() + data[:sent])
    return s


def test_partial_upload_of_a_killed_daemon_is_cleared_at_start(ops_daemon, git, tmp_path):
    d = ops_daemon
    if catalog_env(d.data):
        pytest.skip("on a shared (PostgreSQL) catalog another replica may own a partial upload: "
                    "start-up leaves them to gc's age limit")
    repo = new_model(d, "halfway")
    data = blob(4, 12 * 1024 * 1024)  # more than one S3 part: a multipart upload
    with start_upload(d, repo, data, 2 * 1024 * 1024):
        wait_for(lambda: d.probe.temp_files(), "the upload's temp file / multipart upload")
        if d.mode == "local":
            # While its upload lives, nothing removes the temp file, however old and whatever gc says.
            (partial,) = d.probe.temp_files()
            backdate(partial)
            r = cli(d, "gc", "--grace", "0", env={"MODELREPO_LFS__ACTION_EXPIRY": "0"})
            assert r.returncode == 0 and gc_line(r.stdout, "partial uploads")[0] == "0", r.stdout + r.stderr
            assert partial.exists()
        d.stop(9)
    assert d.proc.returncode == -9
    left = d.probe.temp_files()
    assert left, "the crash left nothing behind: the test proves nothing"
    restart(d)
    assert d.probe.temp_files() == []  # no live upload owns it: gone at start, not an hour later
    cleared = [json.loads(line) for line in d.log().splitlines() if '"partial_uploads_cleared"' in line]
    assert [e["count"] for e in cleared] == [1]
    # The client tries again and the object lands.
    work = lfs_repo(git, tmp_path / "w", {"w.bin": data})
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
    assert d.stored(oid_of(data)) == len(data)
    assert d.probe.temp_files() == []


@LOCAL
def test_push_quarantine_left_by_a_crash(ops_daemon, git, tmp_path):
    """receive-pack killed while the hooks judge the push: its quarantine directory stays behind.
    fsck mentions it once it is old, gc removes it then, and a young one (a push in flight) stays."""
    d = ops_daemon
    repo = new_model(d, "quarantined")
    work = push_weights(d, git, tmp_path / "w", repo, {"a.bin": blob(5, 1_000)})
    original = replace_hook(d, repo, "pre-receive", "kill -9 $PPID\n")  # receive-pack dies mid-push
    git.commit(work, {f"f{i}.txt": f"{i}\n" for i in range(10)}, "second")
    r = git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work, check=False)
    assert r.returncode != 0
    objects = server_repo(d, repo) / "objects"
    (left,) = list(objects.glob("tmp_objdir-incoming-*"))
    (server_repo(d, repo) / "hooks/pre-receive").write_bytes(original)

    r = cli(d, "fsck")
    assert r.returncode == 0 and "quarantine" not in r.stdout, r.stdout  # young: maybe a push in flight
    for path in [left, *left.rglob("*")]:
        backdate(path)
    young = objects / "tmp_objdir-incoming-inflight"
    (young / "pack").mkdir(parents=True)
    r = cli(d, "fsck")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"note: acme/quarantined: 1 push quarantine directory left by interrupted pushes ({left.name}); "
            f"gc removes it") in r.stdout
    r = cli(d, "gc", "--grace", "0", "--dry-run")
    assert gc_line(r.stdout, "push quarantines")[0] == "1" and left.exists()
    r = cli(d, "gc", "--grace", "0")
    assert r.returncode == 0 and gc_line(r.stdout, "push quarantines")[0] == "1", r.stdout + r.stderr
    assert sorted(p.name for p in objects.glob("tmp_objdir-incoming-*")) == [young.name]
    assert "quarantine" not in cli(d, "fsck").stdout
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)  # the repository is fine
