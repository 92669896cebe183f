"""The catalog on PostgreSQL, end to end: a real daemon whose catalog.url is a throw-away PostgreSQL
(tests/pgserver.py), driven by the real git and git-lfs clients, the admin CLI and the operator
commands with the same environment; backup/restore through pg_dump/pg_restore; and
``modelrepo catalog migrate-to`` from a used SQLite catalog to PostgreSQL."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from ..helpers import MODELREPO, http, short_tmpdir, start_daemon
from .test_hooks_webhooks import CARD, FAST_RETRIES, Receiver
from .test_lfs import blob, lfs_repo

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
URL_KEY = "MODELREPO_CATALOG__URL"
MiB = 1024 * 1024


def cli(env: dict, data, *args: str) -> subprocess.CompletedProcess:
    """``modelrepo ARGS --data DATA`` as an operator runs it, with the daemon's catalog URL."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    return subprocess.run([MODELREPO, *args, "--data", str(data)], capture_output=True, text=True, check=False,
                          env={**base, **env}, timeout=300)


def setup_tenants(d) -> None:
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    for user, role in (("alice", "writer"), ("rob", "reader")):
        d.user(user)
        d.ok("PUT", f"/api/v1/namespaces/acme/members/{user}", body={"role": role})


@pytest.fixture(scope="module")
def pgd(pg_server):
    url = pg_server.url()
    d = start_daemon(extra_env={URL_KEY: url, **FAST_RETRIES})
    d.env = {URL_KEY: url}
    setup_tenants(d)
    yield d
    assert d.stop(signal.SIGTERM) == 0, d.log()[-4000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


def test_catalog_is_postgresql_not_a_file(pgd, pg_server):
    assert not (pgd.data / "catalog.db").exists()
    db = pgd.env[URL_KEY].rsplit("/", 1)[1]
    assert pg_server.psql("SELECT name FROM users ORDER BY id", db=db).split() == ["admin", "alice", "rob"]


def test_push_lfs_tag_webhook_and_search(pgd, git, tmp_path):
    d = pgd
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "bert", "visibility": "public"})
    with Receiver() as rx:
        d.ok("POST", "/api/v1/namespaces/acme/webhooks", body={"url": rx.url, "secret": "k", "events": ["tag.created"]})
        weights = blob(1, 2 * MiB)
        work = lfs_repo(git, tmp_path / "w", {"README.md": CARD.encode(), "model.safetensors": weights})
        git.run("tag", "-a", "v1", "-m", "first", cwd=work)
        git.run("push", "-q", d.git_url("acme/bert.git", "alice"), "main", "v1", cwd=work)
        (event,) = [json.loads(r["body"]) for r in rx.wait(1)]
        assert event["event"] == "tag.created" and event["model"] == "bert" and event["tag"] == "v1"
        assert event["lfs_files"][0]["size"] == len(weights)
        hook = d.ok("GET", "/api/v1/namespaces/acme/webhooks")[0]
        deadline = time.time() + 30  # the worker records the outcome just after the receiver answered
        while (deliveries := d.ok("GET", f"/api/v1/namespaces/acme/webhooks/{hook['id']}/deliveries"))[0]["status"] \
                != "delivered" and time.time() < deadline:
            time.sleep(0.1)
        assert [x["status"] for x in deliveries] == ["delivered"]
        assert len(rx.requests) == 1

    clone = tmp_path / "clone"
    git.run("clone", "-q", d.git_url("acme/bert", "rob"), str(clone))
    assert (clone / "model.safetensors").read_bytes() == weights
    info = d.ok("GET", "/api/v1/models/acme/bert", token="rob")
    assert info["library_name"] == "transformers" and info["total_size"] >= 2 * MiB
    assert "v1" in json.dumps(d.ok("GET", "/api/v1/models/acme/bert/refs", token="rob"))
    # The card's license, read from the JSON column (json_extract on SQLite, ->> here).
    assert b"acme/bert" in http("GET", f"{d.url}/?license=apache-2.0").body
    assert b"acme/bert" not in http("GET", f"{d.url}/?license=mit").body
    assert d.ok("GET", "/api/v1/models?search=BER", token="rob")[0]["id"] == "acme/bert"


def test_nul_in_text_is_a_400_and_changes_nothing(pgd):
    """PostgreSQL text cannot hold U+0000 (SQLite can): such input is the client's error in words,
    at a write and at a search, never a 500, and nothing is half-made."""
    d = pgd
    r = d.api("POST", "/api/v1/models", body={"namespace": "acme", "name": "nul", "description": "a\u0000b"})
    assert r.status == 400 and "NUL" in r.body.decode(), (r.status, r.body)
    assert d.api("GET", "/api/v1/models/acme/nul").status == 404
    assert not (d.data / "repos" / "acme" / "nul.git").exists()
    r = d.api("GET", "/api/v1/models?search=a%00b")
    assert r.status == 400 and "NUL" in r.body.decode(), (r.status, r.body)


def test_deployment_refuses_delete_and_lfs_locks(pgd, git, tmp_path):
    d = pgd
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "served"})
    work = lfs_repo(git, tmp_path / "w", {"README.md": CARD.encode(), "a.bin": blob(2, 1000)})
    git.run("tag", "-a", "v1", "-m", "release", cwd=work)
    git.run("remote", "add", "origin", d.git_url("acme/served.git", "alice"), cwd=work)
    git.run("push", "-q", "origin", "main", "v1", cwd=work)
    dep = d.ok("POST", "/api/v1/models/acme/served/deployments", token="alice", body={"name": "prod", "revision": "v1"})
    r = d.api("DELETE", "/api/v1/models/acme/served")
    assert r.status == 409 and "prod (id" in r.json()["error"]["message"]

    assert "Locked a.bin" in git.out("lfs", "lock", "a.bin", cwd=work)
    again = git.run("lfs", "lock", "a.bin", cwd=work, check=False)
    assert again.returncode != 0 and "already created lock" in (again.stdout + again.stderr).decode()
    assert "a.bin" in git.out("lfs", "locks", cwd=work)
    git.run("lfs", "unlock", "a.bin", cwd=work)

    d.ok("PATCH", f"/api/v1/deployments/{dep['id']}", token="alice", body={"status": "stopped"})
    assert d.api("DELETE", "/api/v1/models/acme/served").status == 204
    assert not (d.data / "repos/acme/served.git").exists()


def test_quotas(pgd, git, tmp_path):
    d = pgd
    d.ok("POST", "/api/v1/namespaces", body={"name": "tight"})
    d.ok("POST", "/api/v1/models", body={"namespace": "tight", "name": "a"})
    d.ok("PUT", "/api/v1/namespaces/tight/quota", body={"bytes": 3 * MiB, "models": 1})
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.bin", cwd=work)
    git.commit(work, {"one.bin": blob(3, 2 * MiB)}, "fits")
    git.run("push", "-q", d.git_url("tight/a.git", "admin"), "main", cwd=work)
    ns = d.ok("GET", "/api/v1/namespaces/tight")
    assert ns["usage"] == {"bytes": 2 * MiB, "models": 1}  # an int, not PostgreSQL's numeric SUM
    git.commit(work, {"two.bin": blob(4, 2 * MiB)}, "too much")
    proc = git.run("push", d.git_url("tight/a.git", "admin"), "main", cwd=work, check=False)
    assert proc.returncode != 0 and "LFS quota exceeded" in proc.stderr.decode()
    r = d.api("POST", "/api/v1/models", body={"namespace": "tight", "name": "b"})
    assert r.status == 403 and "quota of 1 models" in r.json()["error"]["message"]


def test_admin_cli_gc_and_fsck(pgd):
    d = pgd
    r = cli(d.env, d.data, "user", "list")
    assert r.returncode == 0 and "alice" in r.stdout and "rob" in r.stdout, r.stderr
    r = cli(d.env, d.data, "user", "create", "carol")
    assert r.returncode == 0, r.stderr
    # The daemon sees the CLI's write at once (the same catalog): carol can be made a member.
    d.ok("PUT", "/api/v1/namespaces/acme/members/carol", body={"role": "reader"})
    r = cli(d.env, d.data, "gc", "--grace", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(d.env, d.data, "fsck")
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_with_an_unreachable_catalog_says_so(tmp_path):
    from ..helpers import free_port

    unreachable = {URL_KEY: f"postgresql://u:secret@127.0.0.1:{free_port()}/db"}
    for args in (("user", "list"), ("serve", "--listen", f"127.0.0.1:{free_port()}")):
        r = cli(unreachable, tmp_path / "data", *args)
        assert r.returncode == 1 and "cannot connect to the catalog at postgresql://u:***@127.0.0.1" in r.stderr
        assert "Traceback" not in r.stderr and "secret" not in r.stderr
    r = cli({URL_KEY: "mysql://u@h/db"}, tmp_path / "data", "user", "list")
    assert r.returncode != 0 and "catalog.url: unsupported database 'mysql'" in r.stderr


def test_backup_and_restore_through_pg_dump(pgd, pg_server, git, tmp_path):
    d = pgd
    dest = tmp_path / "backup"
    r = cli(d.env, d.data, "backup", str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (dest / "catalog.pgdump").is_file() and not (dest / "catalog.db").exists()
    assert json.loads((dest / "manifest.json").read_text())["catalog"] == "postgresql"

    restored = short_tmpdir() / "data"
    target = {URL_KEY: pg_server.url()}
    try:
        # Not into a database that holds a catalog: restore never overwrites.
        r = cli(d.env, restored, "restore", str(dest))
        assert r.returncode == 1 and "is not empty" in r.stderr and not restored.exists()
        # Not into SQLite: the backup's catalog is a PostgreSQL dump.
        r = cli({}, restored, "restore", str(dest))
        assert r.returncode == 1 and "PostgreSQL dump" in r.stderr
        # A backup that does not verify (a repository lost): refused, and the database is empty again.
        broken = tmp_path / "broken"
        shutil.copytree(dest, broken)
        shutil.rmtree(broken / "repos/acme/bert.git")
        r = cli(target, restored, "restore", str(broken))
        assert r.returncode == 1 and "acme/bert.git: the catalog has this model but the backup has no repository" \
            in r.stderr, r.stderr
        assert not restored.exists()
        db = target[URL_KEY].rsplit("/", 1)[1]
        assert pg_server.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db=db).strip() == "0"
        r = cli(target, restored, "restore", str(dest))
        assert r.returncode == 0, r.stdout + r.stderr
        d2 = start_daemon(restored, extra_env=target)
        try:
            d2.tokens.update(d.tokens)
            assert d2.ok("GET", "/api/v1/user", token="alice")["name"] == "alice"  # a token made before
            clone = tmp_path / "clone"
            git.run("clone", "-q", d2.git_url("acme/bert", "rob"), str(clone))
            assert (clone / "model.safetensors").read_bytes() == blob(1, 2 * MiB)
        finally:
            assert d2.stop() == 0, d2.log()[-3000:]
    finally:
        shutil.rmtree(restored.parent, ignore_errors=True)


def test_migrate_sqlite_catalog_to_postgresql(pg_server, git, tmp_path):
    d = start_daemon()  # the embedded SQLite default, used for real first
    try:
        setup_tenants(d)
        d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "moved"})
        work = lfs_repo(git, tmp_path / "w", {"README.md": CARD.encode(), "w.bin": blob(5, 100_000)})
        git.run("tag", "-a", "v1", "-m", "r", cwd=work)
        git.run("push", "-q", d.git_url("acme/moved.git", "alice"), "main", "v1", cwd=work)
        assert d.stop() == 0, d.log()[-3000:]

        url = pg_server.url()
        r = cli({}, d.data, "catalog", "migrate-to", url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "row counts verified" in r.stdout and pg_server.password not in r.stdout
        lines = dict(line.split()[:2] for line in r.stdout.splitlines() if line.endswith(" rows"))
        assert lines["users"] == "3" and lines["models"] == "1" and lines["lfs_objects"] == "1"
        # Into a catalog that has rows: refused in words, nothing changed.
        again = cli({}, d.data, "catalog", "migrate-to", url)
        assert again.returncode == 1 and "the target catalog is not empty: table " in again.stderr

        d2 = start_daemon(d.data, extra_env={URL_KEY: url})
        try:
            d2.tokens.update(d.tokens)
            assert d2.ok("GET", "/api/v1/user", token="alice")["name"] == "alice"
            assert [m["id"] for m in d2.ok("GET", "/api/v1/models", token="rob")] == ["acme/moved"]
            clone = tmp_path / "clone"
            git.run("clone", "-q", d2.git_url("acme/moved", "rob"), str(clone))
            assert (clone / "w.bin").read_bytes() == blob(5, 100_000)
            d2.user("dave")  # the id sequences moved past the copied ids: no duplicate key
            d2.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "new"})
        finally:
            assert d2.stop() == 0, d2.log()[-3000:]
    finally:
        d.stop()
        shutil.rmtree(d.data.parent, ignore_errors=True)
