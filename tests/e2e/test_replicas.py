"""Replicas behind the front door: nginx with the shipped config (TLS) in front of modelrepo daemons
that share one catalog (PostgreSQL), one object store (SeaweedFS S3) and one data directory (the
"shared filesystem" of the repositories), each with its own run directory and worker processes.
Everything goes through the real git and git-lfs clients over TLS, a real webhook receiver, and
the catalog and the bucket looked at from outside the daemons."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ..helpers import Daemon, Git, free_port, http, short_tmpdir
from ..nginxserver import start_nginx
from .conftest import BUCKET, s3_client
from .test_hooks_webhooks import Receiver
from .test_workers import start_workers

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None or not os.access("/usr/sbin/nginx", os.X_OK),
                                reason="needs git-lfs and nginx (apt-get install git-lfs nginx-light)")
MiB = 1024 * 1024
FAST_RETRIES = {"MODELREPO_WEBHOOKS__BACKOFF_BASE": "0.2", "MODELREPO_WEBHOOKS__BACKOFF_MAX": "1"}


@dataclass
class Cluster:
    replicas: list[Daemon]
    proxy: object
    data: Path
    s3: object
    prefix: str
    catalog_url: str
    pg: object
    tokens: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proxy.url

    def api(self, method: str, path: str, token: str = "admin", body=None, base: str | None = None):
        return http(method, (base or self.url) + path, token=self.tokens[token], body=body,
                    context=self.proxy.ssl_context())

    def ok(self, method: str, path: str, token: str = "admin", body=None, base: str | None = None):
        r = self.api(method, path, token, body, base)
        assert 200 <= r.status < 300, (method, path, r.status, r.body)
        return r.json() if r.body else None

    def git_url(self, repo: str, user: str = "alice", base: str | None = None) -> str:
        """Through the proxy by default; ``base`` names one replica directly."""
        parts = urlsplit(base or self.url)
        return f"{parts.scheme}://{user}:{self.tokens[user]}@{parts.netloc}/{repo}.git"

    def git(self, home: Path) -> Git:
        g = Git(home)
        g.env["GIT_SSL_CAINFO"] = self.proxy.ca_file  # git and git-lfs trust the proxy's certificate
        return g

    def s3_objects(self) -> list[dict]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=self.prefix)
        return [o for page in pages for o in page.get("Contents", [])]

    def catalog_rows(self, sql: str) -> list[tuple]:
        """Read the catalog from outside the daemons, as an operator would."""
        db = urlsplit(self.catalog_url).path.lstrip("/")
        return [tuple(line.split("|")) for line in self.pg.psql(sql, db).splitlines() if line]

    def upload_parts(self, oid: str) -> int:
        """Parts S3 holds of unfinished multipart uploads of ``oid`` (invisible as objects)."""
        uploads = self.s3.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix).get("Uploads", [])
        return sum(len(self.s3.list_parts(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", []))
                   for u in uploads if u["Key"].endswith(oid))


def _lfs_transfers(d: Daemon) -> float:
    """LFS transfers in progress on one replica (all its workers), from its own /metrics."""
    text = http("GET", d.url + "/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('modelrepo_active_transfers{') and 'protocol="lfs"' in line)


@pytest.fixture(scope="module")
def cluster(pg_server, s3_server):
    pg, catalog_url = pg_server, pg_server.url()
    root = short_tmpdir("mrrep")
    data = root / "data"
    prefix = f"rep{int(time.time() * 1000)}/"
    ports = [free_port() for _ in range(2)]
    https_port = free_port()
    env = {"MODELREPO_SERVER__PUBLIC_URL": f"https://127.0.0.1:{https_port}",
           "MODELREPO_LFS__STORAGE": "s3", "MODELREPO_LFS__S3__BUCKET": BUCKET, "MODELREPO_LFS__S3__PREFIX": prefix,
           "MODELREPO_LFS__S3__ENDPOINT_URL": s3_server.endpoint, "MODELREPO_LFS__S3__REGION": s3_server.region,
           "MODELREPO_LFS__S3__ACCESS_KEY_ID": s3_server.access_key,
           "MODELREPO_LFS__S3__SECRET_ACCESS_KEY": s3_server.secret_key, **FAST_RETRIES,
           # nginx connects from 127.0.0.1; its X-Forwarded-For names the client.
           "MODELREPO_SERVER__TRUSTED_PROXIES": "[127.0.0.1]", "MODELREPO_AUTH__MAX_FAILURES": "3",
           "MODELREPO_CATALOG__URL": catalog_url}
    replicas: list[Daemon] = []
    proxy = None
    try:
        for i, port in enumerate(ports):
            # Each replica its own run directory (on one machine here; on its own host in production).
            extra = {**env, "MODELREPO_SERVER__RUN_DIR": str(root / f"run{i}")}
            replicas.append(start_workers(data, port=port, extra_env=extra))
        proxy = start_nginx([f"127.0.0.1:{p}" for p in ports], https_port=https_port)
        c = Cluster(replicas=replicas, proxy=proxy, data=data, s3=s3_client(s3_server), prefix=prefix,
                    catalog_url=catalog_url, pg=pg, tokens={"admin": replicas[0].admin_token})
        c.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
        for user in ("alice", "ada"):
            c.ok("POST", "/api/v1/users", body={"name": user})
            c.tokens[user] = c.ok("POST", f"/api/v1/users/{user}/tokens",
                                  body={"scopes": ["admin" if user == "ada" else "write"], "name": "t"})["token"]
        c.ok("PUT", "/api/v1/namespaces/acme/members/alice", body={"role": "writer"})
        c.ok("PUT", "/api/v1/namespaces/acme/members/ada", body={"role": "admin"})
        yield c
    finally:
        if proxy is not None:
            proxy.stop()
        for d in replicas:
            if d.proc.poll() is None:
                rc = d.stop(signal.SIGTERM)
                assert rc == 0, f"replica on {d.port} exited with {rc} on SIGTERM:\n{d.log()[-4000:]}"
        shutil.rmtree(root, ignore_errors=True)


CATALOG_REFS = ('SELECT r.kind, r.name, r."commit" FROM model_refs r JOIN models m ON m.id = r.model_id '
                "WHERE m.name = '{name}' ORDER BY r.kind, r.name")


def new_model(c: Cluster, name: str, base: str | None = None) -> str:
    c.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": name, "visibility": "private"}, base=base)
    return f"acme/{name}"


def test_http_is_redirected_to_https_and_urls_name_the_front_door(cluster):
    c = cluster
    conn = HTTPConnection("127.0.0.1", c.proxy.http_port, timeout=30)
    conn.request("GET", "/acme/anything.git/info/refs?service=git-upload-pack")
    resp = conn.getresponse()
    assert resp.status == 301
    assert resp.getheader("Location") == "https://127.0.0.1/acme/anything.git/info/refs?service=git-upload-pack"
    conn.close()
    # Clone URLs are built from server.public_url, whichever replica answers.
    repo = new_model(c, "urls")
    for d in c.replicas:
        assert c.ok("GET", f"/api/v1/models/{repo}", base=d.url)["clone_url"] == f"{c.url}/{repo}.git"
    # Private stays private through the proxy: same 404 as a model that does not exist.
    missing = c.api("GET", "/api/v1/models/acme/nope", token="alice")
    assert c.api("GET", f"/api/v1/models/{repo}", token="ada").status == 200
    c.ok("POST", "/api/v1/users", body={"name": "mallory"})
    c.tokens["mallory"] = c.ok("POST", "/api/v1/users/mallory/tokens", body={"scopes": ["read"], "name": "t"})["token"]
    hidden = c.api("GET", f"/api/v1/models/{repo}", token="mallory")
    assert (hidden.status, hidden.body) == (404, c.api("GET", "/api/v1/models/acme/nope", token="mallory").body)
    assert missing.status == 404


def test_git_and_lfs_through_tls(cluster, tmp_path):
    """Clone, push and an LFS object through nginx with TLS; LFS hrefs point at the front door."""
    c = cluster
    repo = new_model(c, "tls")
    git = c.git(tmp_path / "home")
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.safetensors", cwd=work)
    weights = os.urandom(3 * MiB)
    git.commit(work, {"config.json": "{}", "model.safetensors": weights}, "weights")
    git.run("push", c.git_url(repo), "main", cwd=work)
    clone = tmp_path / "clone"
    git.run("clone", c.git_url(repo), str(clone))
    assert (clone / "model.safetensors").read_bytes() == weights
    git.run("fsck", "--full", cwd=clone)
    served = [(s.request.split()[0], s.request.split()[1], s.status) for s in c.proxy.access_log()]
    assert ("POST", "/acme/tls.git/git-receive-pack", 200) in served
    assert ("PUT", f"/acme/tls.git/info/lfs/objects/{hashlib.sha256(weights).hexdigest()}", 200) in served


def _get_from(c: Cluster, source: str, path: str, token: str, forwarded_for: str | None = None):
    """A request to the front door from the loopback address ``source`` (any 127.x is ours)."""
    conn = HTTPSConnection("127.0.0.1", c.proxy.https_port, timeout=30, source_address=(source, 0),
                           context=c.proxy.ssl_context())
    headers = {"Authorization": f"Bearer {token}", **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_the_brute_force_guard_sees_clients_not_the_proxy(cluster):
    """Behind nginx every request comes from the proxy; the replicas trust its X-Forwarded-For, so
    one client guessing tokens is locked out alone, and cannot pass itself off as another."""
    c = cluster
    statuses = []
    for _ in range(40):  # each worker process keeps its own count unless the guard is shared
        status, body = _get_from(c, "127.0.0.2", "/api/v1/user", "mr_wrong", forwarded_for="127.0.0.3")
        statuses.append(status)
        if status == 429:
            assert b"from 127.0.0.2;" in body, body  # the address nginx saw, not the one claimed
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}, statuses
    for _ in range(6):
        assert _get_from(c, "127.0.0.3", "/api/v1/user", c.tokens["alice"])[0] == 200


def test_a_model_created_on_one_replica_is_visible_on_the_other(cluster):
    c = cluster
    first, second = c.replicas
    repo = new_model(c, "seen", base=first.url)
    assert c.ok("GET", f"/api/v1/models/{repo}", base=second.url)["name"] == "seen"
    c.ok("DELETE", f"/api/v1/models/{repo}", base=second.url)
    assert c.api("GET", f"/api/v1/models/{repo}", base=first.url).status == 404


def test_racing_pushes_one_winner_each_round(cluster, tmp_path):
    """8 clients push different commits on the same tip to one branch, through the proxy (so
    through every replica): git's ref locking on the shared filesystem lets exactly one win."""
    c = cluster
    repo = new_model(c, "race")
    git = c.git(tmp_path / "home")
    seed = git.new_repo(tmp_path / "seed", {"README.md": "# race\n"})
    git.run("push", c.git_url(repo), "main", cwd=seed)
    clients = []
    for i in range(8):
        work = tmp_path / f"c{i}"
        git.run("clone", "-q", c.git_url(repo), str(work))
        clients.append(work)
    before = len(c.proxy.access_log())
    for rnd in range(3):
        tips = []
        for i, work in enumerate(clients):
            git.run("fetch", "-q", "origin", cwd=work)
            git.run("reset", "-q", "--hard", "origin/main", cwd=work)
            tips.append(git.commit(work, {f"round{rnd}/client{i}.txt": f"{rnd}:{i}\n"}, f"round {rnd} client {i}"))
        results: list = [None] * len(clients)
        start = threading.Barrier(len(clients))

        def push(i: int) -> None:
            start.wait()
            results[i] = git.run("push", "-q", "origin", "main", cwd=clients[i], check=False)

        threads = [threading.Thread(target=push, args=(i,)) for i in range(len(clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        winners = [i for i, r in enumerate(results) if r.returncode == 0]
        assert len(winners) == 1, [(r.returncode, r.stderr.decode(errors="replace")[-300:]) for r in results]
        tip = git.out("ls-remote", c.git_url(repo), "refs/heads/main").split()[0]
        assert tip == tips[winners[0]]
        # The catalog says what the repository says (post-receive ran before the winner's push returned).
        assert c.catalog_rows(CATALOG_REFS.format(name="race")) == [("branch", "main", tip)]
        for d in c.replicas:
            assert c.ok("GET", f"/api/v1/models/{repo}/refs", base=d.url)["branches"][0]["commit"] == tip
    bare = c.data / "repos" / "acme" / "race.git"
    git.run("fsck", "--full", "--strict", cwd=bare)
    pushes = [s for s in c.proxy.access_log()[before:] if s.request.startswith("POST /acme/race.git/git-receive-pack")]
    # (A loser that read the moved tip in info/refs is refused by git itself, without a POST.)
    assert {s.upstreams[-1] for s in pushes} == {f"127.0.0.1:{d.port}" for d in c.replicas}, pushes


def test_lfs_object_pushed_through_one_replica_clones_through_the_other(cluster, tmp_path):
    c = cluster
    first, second = c.replicas
    repo = new_model(c, "shared-lfs")
    git = c.git(tmp_path / "home")
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.bin", cwd=work)
    weights = os.urandom(5 * MiB)
    git.commit(work, {"pytorch_model.bin": weights}, "weights")
    git.run("push", c.git_url(repo, base=first.url), "main", cwd=work)
    for base in (second.url, c.url):
        clone = tmp_path / f"clone{urlsplit(base).port}"
        git.run("clone", c.git_url(repo, base=base), str(clone))
        assert (clone / "pytorch_model.bin").read_bytes() == weights


def test_tag_events_delivered_exactly_once(cluster, tmp_path):
    """Every replica's every worker delivers from the one outbox: each tag event arrives once."""
    c = cluster
    repo = new_model(c, "released")
    git = c.git(tmp_path / "home")
    work = git.new_repo(tmp_path / "w", {"README.md": "# released\n"})
    git.run("push", c.git_url(repo), "main", cwd=work)
    tags = [f"v{i}" for i in range(6)]
    with Receiver() as rx:
        c.ok("POST", f"/api/v1/models/{repo}/webhooks", token="ada",
             body={"url": rx.url, "secret": "s", "events": ["tag.created"]})
        for tag in tags:
            git.run("tag", "-a", tag, "-m", tag, cwd=work)
            git.run("push", "-q", c.git_url(repo), tag, cwd=work)
        rx.wait(len(tags))
        time.sleep(3)  # time for a second delivery, were there going to be one
        ids = [r["headers"]["X-Modelrepo-Delivery"] for r in rx.requests]
        assert len(ids) == len(set(ids)) == len(tags), ids
        assert {r["headers"]["X-Modelrepo-Attempt"] for r in rx.requests} == {"1"}
        assert sorted(json.loads(r["body"])["tag"] for r in rx.requests) == tags


@pytest.mark.slow
def test_sigkill_of_a_replica_mid_upload(cluster, tmp_path):
    """The replica receiving a big LFS object dies (SIGKILL, all its processes): git-lfs retries the
    upload through the front door, nginx finds the dead replica refusing connections and passes it
    to the other one, and the push succeeds. At no moment is anything partial visible: an object
    under the OID's key is whole, and the catalog knows the OID only once it is."""
    c = cluster
    repo = new_model(c, "crash")
    git = c.git(tmp_path / "home")
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.safetensors", cwd=work)
    size = 192 * MiB
    weights = os.urandom(size)
    git.commit(work, {"model.safetensors": weights}, "big weights")
    oid = hashlib.sha256(weights).hexdigest()
    del weights
    log_start = len(c.proxy.access_log())
    pusher = subprocess.Popen(["git", "push", c.git_url(repo), "main"], cwd=work, env=git.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Mid-upload: S3 holds parts of the object's multipart upload, and one replica reports an LFS
    # transfer in progress. That replica dies.
    deadline = time.time() + 120
    while not c.upload_parts(oid):
        assert pusher.poll() is None, "the upload finished before a replica could be killed"
        assert time.time() < deadline, "the upload never reached S3"
        time.sleep(0.02)
    (victim,) = [d for d in c.replicas if _lfs_transfers(d) > 0]
    os.killpg(victim.proc.pid, signal.SIGKILL)  # the replica's whole process group: the machine died
    victim.proc.wait(30)
    survivor = next(d for d in c.replicas if d is not victim)
    while True:  # watch the catalog and the store while the client retries
        done = pusher.poll() is not None
        # Looked at in the order things become visible, so each look holds for the next one.
        branch = c.catalog_rows(CATALOG_REFS.format(name="crash"))
        known = c.catalog_rows(f"SELECT oid FROM lfs_objects WHERE oid = '{oid}'")
        sizes = [o["Size"] for o in c.s3_objects() if oid in o["Key"]]
        assert sizes in ([], [size]), sizes  # never a partial object
        assert not known or sizes == [size]  # the catalog never knows an object the store lacks
        assert not branch or known  # no ref to an object the catalog does not know
        if done:
            break
        time.sleep(0.05)
    assert pusher.returncode == 0, pusher.stderr.read().decode(errors="replace")
    assert c.catalog_rows(f"SELECT oid, size FROM lfs_objects WHERE oid = '{oid}'") == [(oid, str(size))]
    # nginx's log: the PUT the victim was receiving failed back to the client (never replayed:
    # its body had started), and a retry went to the survivor, which stored the object.
    puts = [s for s in c.proxy.access_log()[log_start:] if s.request.startswith(f"PUT /acme/crash.git/info/lfs/objects/{oid}")]
    assert puts[0].status == 502 and puts[0].upstreams == [f"127.0.0.1:{victim.port}"], puts
    assert [s.upstreams[-1] for s in puts if s.status == 200] == [f"127.0.0.1:{survivor.port}"], puts
    clone = tmp_path / "clone"
    git.run("clone", c.git_url(repo), str(clone))
    assert hashlib.sha256((clone / "model.safetensors").read_bytes()).hexdigest() == oid
