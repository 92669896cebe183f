"""Operator commands end to end: ``modelrepo gc``, ``fsck``, ``backup`` and ``restore`` run as an
operator runs them (the CLI, in a subprocess) against the data directory of a running daemon, after
real git/git-lfs pushes. gc and fsck run on local disk and on S3 (SeaweedFS, proxy mode)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..helpers import MODELREPO, catalog_env, catalog_sql, cli_in_process, short_tmpdir, start_daemon, wait_until
from .conftest import BUCKET, StoreProbe, s3_client
from .test_lfs import blob, lfs_repo, new_model

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
MiB = 1024 * 1024


def oid_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3-proxy"])
def ops_daemon(request):
    """A fresh daemon per test (gc and fsck work on the whole data directory), with what the CLI
    needs to reach the same store: ``d.env``, and a probe to look at (and damage) the store."""
    mode = request.param
    env, probe_args = {}, {}
    if mode != "local":
        server = request.getfixturevalue("s3_server")
        prefix = f"ops{time.time_ns()}/"
        env = {"MODELREPO_LFS__STORAGE": "s3", "MODELREPO_LFS__S3__BUCKET": BUCKET,
               "MODELREPO_LFS__S3__PREFIX": prefix, "MODELREPO_LFS__S3__ENDPOINT_URL": server.endpoint,
               "MODELREPO_LFS__S3__ACCESS_KEY_ID": server.access_key,
               "MODELREPO_LFS__S3__SECRET_ACCESS_KEY": server.secret_key,
               "MODELREPO_LFS__S3__REGION": server.region, "MODELREPO_LFS__S3__MODE": "proxy"}
        probe_args = {"s3": s3_client(server), "bucket": BUCKET, "prefix": prefix}
    d = start_daemon(extra_env=env)
    d.mode, d.env, d.probe = mode, env, StoreProbe(d, mode, **probe_args)
    d.stored = d.probe.stored
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    d.user("alice")
    d.ok("PUT", "/api/v1/namespaces/acme/members/alice", body={"role": "writer"})
    yield d
    assert d.stop(signal.SIGTERM) == 0, d.log()[-4000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


def cli(d, *args: str, env: dict | None = None, data: Path | None = None) -> subprocess.CompletedProcess:
    """``modelrepo ARGS --data DATA`` with the daemon's store settings, as an operator runs it; in
    this process (the commands' work is the point here: tests/e2e/test_cli.py runs gc, fsck, backup
    and restore as the real executable, and the tests below that call MODELREPO themselves do too)."""
    return cli_in_process(*args, "--data", str(data or d.data),
                          env={**catalog_env(data or d.data), **getattr(d, "env", {}), **(env or {})})


def push_weights(d, git, work: Path, repo: str, files: dict[str, bytes]) -> Path:
    lfs_repo(git, work, {"README.md": b"# model\n", **files})
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "main", cwd=work)
    return work


def catalog_oids(d) -> set[str]:
    return {row[0] for row in catalog_sql(d.data, "SELECT oid FROM lfs_objects")}


def gc_line(out: str, label: str) -> list[str]:
    line = next(line for line in out.splitlines() if line.strip().startswith(label))
    return line.split()[len(label.split()):]


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    wait_until(predicate, what, timeout)


def server_repo(d, repo: str) -> Path:
    return d.data / "repos" / f"{repo}.git"


def count_objects(git, path: Path) -> dict[str, int]:
    out = git.out("count-objects", "-v", cwd=path)
    return {k: int(v) for k, v in (line.split(": ") for line in out.splitlines()) if v.isdigit()}


# -- gc ------------------------------------------------------------------------------------------

def backdate(path: Path, seconds: float = 7200) -> None:
    when = time.time() - seconds
    os.utime(path, (when, when))


def make_leftovers(d) -> tuple[str, str]:
    """An orphaned store object (no catalog row), a stale partial upload and the directory of a
    model deletion that crashed half-way, as a crash leaves them."""
    orphan = blob(900, 1000)
    oid = oid_of(orphan)
    (d.data / "repos/acme/.deleted.crashed.git.1").mkdir()
    backdate(d.data / "repos/acme/.deleted.crashed.git.1")
    (d.data / "repos/acme/.creating.git.x").mkdir()  # young: a model being created right now
    if d.mode == "local":
        path = d.data / "lfs/objects" / oid[:2] / oid[2:4] / oid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orphan)
        stale = d.data / "lfs/tmp" / "0123456789abcdef.crashed"
        stale.write_bytes(b"half an upload")
        backdate(stale)
        (d.data / "lfs/tmp" / "fedcba9876543210.inflight").write_bytes(b"being written right now")
        return oid, stale.name
    d.probe.s3.put_object(Bucket=BUCKET, Key=d.probe._key(oid), Body=orphan)
    upload = d.probe.s3.create_multipart_upload(Bucket=BUCKET, Key=d.probe._key("ab" * 32))
    return oid, upload["UploadId"]


def partial_uploads(d) -> list[str]:
    if d.mode == "local":
        return sorted(p.name for p in (d.data / "lfs/tmp").iterdir())
    uploads = d.probe.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=d.probe.prefix).get("Uploads", [])
    return [u["UploadId"] for u in uploads]


def test_gc_removes_only_unlinked_old_objects(ops_daemon, git, tmp_path):
    d = ops_daemon
    shared, kept, doomed, pending = blob(1, 300_000), blob(2, 200_000), blob(3, 400_000), blob(4, 100_000)
    keep, gone, later = new_model(d, "keep"), new_model(d, "gone"), new_model(d, "later")
    keep_work = push_weights(d, git, tmp_path / "keep", keep, {"shared.bin": shared, "kept.bin": kept})
    push_weights(d, git, tmp_path / "gone", gone, {"shared.bin": shared, "doomed.bin": doomed})
    # Uploaded with git lfs push, never pushed with git: linked, so it must survive (Gitea's race).
    later_work = lfs_repo(git, tmp_path / "later", {"README.md": b"# later\n", "pending.bin": pending})
    git.run("lfs", "push", d.git_url(f"{later}.git", "alice"), "main", cwd=later_work)
    # Two small pushes land as loose objects (under receive.unpackLimit): enough for a repack.
    git.commit(keep_work, {f"configs/c{i}.json": f'{{"i": {i}}}\n' for i in range(95)}, "configs")
    git.run("push", "-q", d.git_url(f"{keep}.git", "alice"), "main", cwd=keep_work)
    assert count_objects(git, server_repo(d, keep))["count"] >= 100
    d.ok("DELETE", f"/api/v1/models/{gone}")
    orphan, stale = make_leftovers(d)
    everything = [shared, kept, doomed, pending]

    # --dry-run says what would go and changes nothing.
    r = cli(d, "gc", "--grace", "0", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "gc (dry run): would free" in r.stdout and "(of 2 checked)" in r.stdout
    assert gc_line(r.stdout, "unlinked LFS objects") == ["1", *_human(len(doomed))]
    assert gc_line(r.stdout, "orphaned store objects")[0] == "1"
    assert gc_line(r.stdout, "repositories repacked")[0] == "1"
    assert all(d.stored(oid_of(b)) for b in everything) and d.stored(orphan)
    assert oid_of(doomed) in catalog_oids(d)
    assert count_objects(git, server_repo(d, keep))["count"] >= 100
    assert stale in partial_uploads(d)

    # Default grace (24h): every object is young, none goes; the repository is repacked.
    r = cli(d, "gc")
    assert r.returncode == 0, r.stderr
    assert gc_line(r.stdout, "unlinked LFS objects") == ["0", "0", "B"]
    assert gc_line(r.stdout, "orphaned store objects")[0] == "0"
    assert "kept 1 unlinked object(s)" in r.stdout
    assert gc_line(r.stdout, "repositories repacked")[0] == "1"
    assert all(d.stored(oid_of(b)) for b in everything) and d.stored(orphan)
    counts = count_objects(git, server_repo(d, keep))
    assert counts["count"] == 0 and counts["packs"] == 1

    r = cli(d, "gc", "--grace", "0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gc_line(r.stdout, "unlinked LFS objects") == ["1", *_human(len(doomed))]
    assert gc_line(r.stdout, "orphaned store objects")[0] == "1"
    assert gc_line(r.stdout, "repository leftovers")[0] == "1"
    assert gc_line(r.stdout, "repositories repacked")[0] == "0"
    assert sorted(p.name for p in (d.data / "repos/acme").glob(".*")) == [".creating.git.x"]
    assert d.stored(oid_of(doomed)) is None and oid_of(doomed) not in catalog_oids(d)
    assert d.stored(orphan) is None
    for data in (shared, kept, pending):  # linked: by keep (shared with the deleted model), and by later
        assert d.stored(oid_of(data)) == len(data)

    # Partial uploads: the stale one goes, the one being written stays (max(grace, action expiry)).
    if d.mode == "local":
        assert partial_uploads(d) == ["fedcba9876543210.inflight"]
    else:  # S3 records only when a multipart upload started: kept until the action expiry has passed
        assert stale in partial_uploads(d)
        r = cli(d, "gc", "--grace", "0", env={"MODELREPO_LFS__ACTION_EXPIRY": "0"})
        assert r.returncode == 0 and gc_line(r.stdout, "partial uploads")[0] == "1", r.stdout + r.stderr
        assert stale not in partial_uploads(d)

    # The survivors work: the kept model clones with its weights, the pending upload can be pushed.
    git.run("push", "-q", d.git_url(f"{later}.git", "alice"), "main", cwd=later_work)
    for repo, name, data in ((keep, "shared.bin", shared), (later, "pending.bin", pending)):
        clone = tmp_path / f"clone-{repo.replace('/', '-')}"
        git.run("clone", "-q", d.git_url(repo, "alice"), str(clone))
        assert (clone / name).read_bytes() == data
    assert cli(d, "fsck").returncode == 0


def _human(n: int) -> list[str]:
    from modelrepo.push.rules import human

    return human(n).split()


def test_gc_refuses_a_bad_grace(tmp_path):
    r = subprocess.run([MODELREPO, "gc", "--grace", "soon", "--data", str(tmp_path)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 2 and "Invalid value for '--grace'" in r.stderr


# -- fsck ---------------------------------------------------------------------------------------

def damage(d, oid: str, data: bytes | None) -> None:
    """Overwrite an object's bytes in the store (same size), or delete it (data=None)."""
    if d.mode == "local":
        path = d.data / "lfs/objects" / oid[:2] / oid[2:4] / oid
        path.unlink() if data is None else path.write_bytes(data)
    elif data is None:
        d.probe.s3.delete_object(Bucket=BUCKET, Key=d.probe._key(oid))
    else:
        d.probe.s3.put_object(Bucket=BUCKET, Key=d.probe._key(oid), Body=data)


def test_fsck_finds_corrupt_missing_and_unlinked(ops_daemon, git, tmp_path):
    d = ops_daemon
    sound, broken = new_model(d, "sound"), new_model(d, "broken")
    push_weights(d, git, tmp_path / "sound", sound, {"w.bin": blob(10, 150_000)})
    good, bad, gone = blob(11, 120_000), blob(12, 130_000), blob(13, 140_000)
    work = push_weights(d, git, tmp_path / "broken", broken, {"good.bin": good, "bad.bin": bad, "dir/gone.bin": gone})
    git.run("tag", "v1", cwd=work)
    git.run("push", "-q", d.git_url(f"{broken}.git", "alice"), "v1", cwd=work)

    r = cli(d, "fsck")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("fsck: clean: 4 LFS object(s)") and "2 repositories" in r.stdout
    assert "4 LFS pointer(s) on 3 ref(s)" in r.stdout

    damage(d, oid_of(bad), blob(99, len(bad)))
    damage(d, oid_of(gone), None)
    catalog_sql(d.data, "DELETE FROM lfs_links WHERE oid = :oid", oid=oid_of(good))  # as if never linked
    r = cli(d, "fsck")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "fsck: 3 problem(s)" in out, out
    assert f"corrupt LFS object {oid_of(bad)}" in out and f"hash to {oid_of(blob(99, len(bad)))}" in out
    assert f"missing LFS object {oid_of(gone)}" in out and "linked by acme/broken" in out
    assert "used at acme/broken refs/heads/main:dir/gone.bin" in out
    assert f"acme/broken refs/heads/main:good.bin: LFS object {oid_of(good)}" in out
    assert "never received by acme/broken" in out

    # Scoped to a healthy model: clean; to an unknown one: an error naming it.
    r = cli(d, "fsck", "acme/sound")
    assert r.returncode == 0 and "fsck: clean: 1 LFS object(s)" in r.stdout, r.stdout + r.stderr
    r = cli(d, "fsck", "acme/nope")
    assert r.returncode == 1 and "model 'acme/nope' not found" in r.stderr

    if d.mode == "local":  # (b) git fsck: damage a loose object of the repository
        loose = next(p for p in (server_repo(d, sound) / "objects").glob("??/*"))
        loose.chmod(0o644)
        loose.write_bytes(b"not zlib at all")
        r = cli(d, "fsck", "acme/sound")
        assert r.returncode == 1 and "acme/sound: git fsck failed" in r.stdout, r.stdout + r.stderr


# -- backup and restore ---------------------------------------------------------------------------

@pytest.mark.parametrize("ops_daemon", ["local"], indirect=True)
def test_backup_during_push_restores_what_it_captured(ops_daemon, git, tmp_path):
    d = ops_daemon
    repo = new_model(d, "live")
    first = {"w1.bin": blob(20, MiB)}
    work = push_weights(d, git, tmp_path / "live", repo, first)
    git.run("tag", "-a", "v1", "-m", "release", cwd=work)
    git.run("push", "-q", d.git_url(f"{repo}.git", "alice"), "v1", cwd=work)
    old_head = git.out("rev-parse", "HEAD", cwd=work)
    second = {f"shard-{i}.bin": blob(30 + i, 2 * MiB) for i in range(3)}
    new_head = git.commit(work, second, "more weights")
    # The LFS upload happens in pre-push; the hook then holds the push in flight until the backup
    # is done (a file the test creates), however long a loaded machine takes for it.
    hook = work / ".git/hooks/pre-push"
    release = tmp_path / "backup-done"
    hook.write_text(f'#!/bin/sh\ngit lfs pre-push "$@" || exit 1\n'
                    f'for i in $(seq 1200); do [ -e {release} ] && exit 0; sleep 0.1; done\nexit 1\n')
    hook.chmod(0o755)

    dest = tmp_path / "backup"
    push = subprocess.Popen(["git", "push", "-q", d.git_url(f"{repo}.git", "alice"), "main"], cwd=work, env=git.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        uploaded = {oid_of(data) for data in second.values()}
        wait_for(lambda: uploaded <= catalog_oids(d), "the push's LFS uploads")
        assert push.poll() is None, "the push finished before the backup started"
        r = cli(d, "backup", str(dest))
        assert push.poll() is None, "the backup did not overlap the push"
    finally:
        release.touch()
        push_out = push.communicate(timeout=60)[0]
    assert push.returncode == 0, push_out
    assert r.returncode == 0, r.stdout + r.stderr
    assert "backup written to" in r.stdout and "1 model(s), 2 ref(s)" in r.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []  # no half-made backup

    manifest = json.loads((dest / "manifest.json").read_text())
    captured = manifest["repositories"]["acme/live.git"]["refs"]
    assert captured["refs/heads/main"] == old_head  # the ref had not moved yet...
    # ...but the new objects were uploaded and linked already: the backup has them too.
    assert manifest["counts"]["lfs_objects"] == 4 and manifest["store"] == {"kind": "local"}
    assert cli(d, "backup", str(dest)).returncode == 1  # never over an existing backup
    r = cli(d, "backup", str(d.data / "backups/today"))
    assert r.returncode == 1 and "inside the data directory" in r.stderr

    restored = short_tmpdir() / "data"
    try:
        r = cli(d, "restore", str(dest), data=restored)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "restored" in r.stdout and "1 model(s), 2 ref(s), 4 LFS object(s)" in r.stdout
        r = cli(d, "restore", str(dest), data=restored)
        assert r.returncode == 1 and "is not empty" in r.stderr
        git.run("--git-dir", str(restored / "repos/acme/live.git"), "fsck", "--no-dangling")

        d2 = start_daemon(restored)
        try:
            d2.tokens["alice"] = d.tokens["alice"]  # same catalog, same tokens
            refs = d2.ok("GET", f"/api/v1/models/{repo}/refs", token="alice")
            assert refs["branches"][0]["commit"] == old_head and refs["tags"][0]["commit"] == old_head
            model = d2.ok("GET", f"/api/v1/models/{repo}", token="alice")
            assert model["head_commit"] == old_head  # the catalog mirror was rebuilt from the repository
            clone = tmp_path / "clone"
            git.run("clone", "-q", d2.git_url(repo, "alice"), str(clone))
            assert git.out("rev-parse", "HEAD", cwd=clone) == old_head
            assert (clone / "w1.bin").read_bytes() == first["w1.bin"]
            # The objects uploaded during the backup are linked in the restored catalog: the push
            # that was in flight can be replayed against the restored server.
            hook.unlink()
            git.run("push", "-q", d2.git_url(f"{repo}.git", "alice"), "main", cwd=work)
            git.run("pull", "-q", "origin", "main", cwd=clone)
            assert git.out("rev-parse", "HEAD", cwd=clone) == new_head
            assert all((clone / name).read_bytes() == data for name, data in second.items())
        finally:
            assert d2.stop() == 0, d2.log()[-4000:]
    finally:
        shutil.rmtree(restored.parent, ignore_errors=True)


@pytest.mark.parametrize("ops_daemon", ["s3-proxy"], indirect=True)
def test_backup_with_s3_says_objects_are_not_included(ops_daemon, git, tmp_path):
    d = ops_daemon
    repo = new_model(d, "remote")
    push_weights(d, git, tmp_path / "w", repo, {"w.bin": blob(40, 100_000)})
    dest = tmp_path / "b"
    r = cli(d, "backup", str(dest))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LFS objects NOT included (they are in S3)" in r.stdout and "NOT in this backup" in r.stderr
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["store"]["kind"] == "s3" and not manifest["lfs_objects_included"]
    assert not (dest / "lfs").exists()

    # Restoring needs the same bucket: refused with local storage, verified with the S3 settings.
    restored = short_tmpdir() / "data"
    try:
        r = subprocess.run([MODELREPO, "restore", str(dest), "--data", str(restored)], capture_output=True, text=True,
                           check=False, env={k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")})
        assert r.returncode == 1 and "configure lfs.storage: s3" in r.stderr
        r = cli(d, "restore", str(dest), data=restored)
        assert r.returncode == 0 and "warning" not in r.stdout, r.stdout + r.stderr
    finally:
        shutil.rmtree(restored.parent, ignore_errors=True)


def test_restore_refuses_what_is_not_a_backup(tmp_path):
    not_backup = tmp_path / "x"
    not_backup.mkdir()
    r = subprocess.run([MODELREPO, "restore", str(not_backup), "--data", str(tmp_path / "data")],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 1 and "no manifest.json: not a complete modelrepo backup" in r.stderr
    assert not (tmp_path / "data").exists()


def test_backup_copy_survives_a_concurrent_repack(git, tmp_path, monkeypatch):
    """A repack replaces the packs while a repository is being copied: the copy misses objects,
    git fsck --connectivity-only notices, and the next attempt completes the copy."""
    from modelrepo.ops import backup as backups

    src = tmp_path / "src.git"
    git.run("init", "-q", "--bare", str(src))
    work = git.new_repo(tmp_path / "w")
    for n in range(3):  # three pushes of 100+ objects: three packs
        git.commit(work, {f"d{n}/f{i}.txt": f"{n} {i}\n" for i in range(120)}, f"c{n}")
        git.run("push", "-q", str(src), "main", cwd=work)
    assert count_objects(git, src)["packs"] == 3
    head = git.out("rev-parse", "HEAD", cwd=work)

    original_copy, original_git = backups._copy_pack, backups.git_sync
    checks = []

    def copy_during_repack(idx, dst_dir):
        if not checks and not getattr(copy_during_repack, "done", False):
            git.run("-C", str(src), "repack", "-a", "-d", "-q")  # the listed packs are gone now
            copy_during_repack.done = True
        original_copy(idx, dst_dir)

    def recording_git(*args):
        result = original_git(*args)
        checks.append(result.ok)
        return result

    monkeypatch.setattr(backups, "_copy_pack", copy_during_repack)
    monkeypatch.setattr(backups, "git_sync", recording_git)
    warnings: list[str] = []
    copy = tmp_path / "copy.git"
    backups.copy_repository(src, copy, backups.RepoSnapshot("acme/src.git", {"refs/heads/main": head}), "main",
                            "git", warnings)
    assert checks == [False, True] and warnings == []
    git.run("--git-dir", str(copy), "fsck", "--no-dangling")
    assert git.out("--git-dir", str(copy), "rev-parse", "refs/heads/main") == head


def test_backup_and_restore_a_model_nobody_pushed_to(tmp_path):
    """A model created and never pushed to has an empty repository (no object files): the backup
    must still take it for a repository, and the restore must bring it back."""
    d = start_daemon()
    restored = short_tmpdir() / "data"
    d.env = {}
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
        new_model(d, "empty")
        dest = tmp_path / "b"
        r = cli(d, "backup", str(dest))
        assert r.returncode == 0, r.stdout + r.stderr
        r = cli(d, "restore", str(dest), data=restored)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (restored / "repos" / "acme" / "empty.git" / "objects").is_dir()
    finally:
        d.stop()
        shutil.rmtree(restored.parent, ignore_errors=True)
