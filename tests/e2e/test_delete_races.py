"""A model deleted while it is read: every door answers 2xx (it was still there) or the 404 of a
model that never existed, never a 5xx, and the daemon logs no exception for it.

Two real workers share one data directory, so a delete served by one worker removes the repository
under a read that the other is serving: the race a replicated deployment has every day. Readers are
plain HTTP clients hammering every read door (Hub API, REST, UI pages, git smart HTTP, LFS) while
the model is deleted; then the model is recreated under the same name and nothing of the old one
may show through it.
"""

import base64
import hashlib
import json
import os
import random
import re
import shutil
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from modelrepo.xet.hashes import to_hex

from ..helpers import Git, http, short_tmpdir, wait_until
from ..xet_build import serialize_xorb, upload_shard
from .test_workers import log_lines, start_workers

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")

NS, NAME = "racing", "racy"
REPO = f"{NS}/{NAME}"
ROUNDS = 4
LATER = "at a later step,"
CARD = "---\nlicense: mit\ntags: [racing]\n---\n# Racy\n\nA model deleted while it is read.\n"


def answer(r) -> tuple[int, str | None]:
    """The status, and for a 404 what it said (the error code header and the body, request ids
    left out): a model deleted under a read must say exactly what a missing model says."""
    if r.status != 404:
        return r.status, None
    body = re.sub(rb'"request_id": "[0-9a-f]+"', b"", r.body).decode(errors="replace")
    return 404, f"{r.headers.get('X-Error-Code')} {body}"


def pkt(line: str) -> bytes:
    data = line.encode()
    return f"{len(data) + 4:04x}".encode() + data


class Model:
    """What a populated model holds, to read it through every door."""

    def __init__(self, d, git: Git, work: Path, *, files: dict, tag: str | None) -> None:
        self.d = d
        r = d.api("POST", "/api/v1/models", body={"namespace": NS, "name": NAME, "visibility": "public"})
        assert r.status == 201, r.body
        git.new_repo(work)
        git.run("lfs", "track", "*.bin", cwd=work)
        shas = []
        for i, (path, content) in enumerate(files.items()):
            shas.append(git.commit(work, {path: content}, f"commit {i}"))
        git.run("push", "-q", d.git_url(f"{REPO}.git", "admin"), "main", cwd=work)
        self.head = shas[-1]
        self.shas = shas
        self.lfs = {p: (hashlib.sha256(c).hexdigest(), len(c)) for p, c in files.items() if p.endswith(".bin")}
        if tag:
            d.ok("POST", f"/api/v1/models/{REPO}/tags", body={"name": tag, "revision": "main", "message": "release"})

    def reads(self) -> list:
        """(door, callable -> (status, what a 404 said)) for every read door, and five writes;
        admin's token where the door reads one (the UI reads only its session cookie: the model is
        public)."""
        d, head = self.d, self.head
        tok = d.tokens["admin"]
        oid, size = next(iter(self.lfs.values()))

        def get(path: str, token: str | None = tok):
            return lambda: answer(http("GET", d.url + path, token=token))

        def upload_pack():
            body = pkt(f"want {head} side-band-64k ofs-delta\n") + b"0000" + pkt("done\n")
            return answer(http("POST", f"{d.url}/{REPO}.git/git-upload-pack", token=tok, raw=body,
                               headers={"Content-Type": "application/x-git-upload-pack-request"}))

        def lfs_download():
            r = http("POST", f"{d.url}/{REPO}.git/info/lfs/objects/batch", token=tok,
                     raw=json.dumps({"operation": "download", "objects": [{"oid": oid, "size": size}]}).encode(),
                     headers={"Content-Type": "application/vnd.git-lfs+json", "Accept": "application/vnd.git-lfs+json"})
            if r.status != 200:
                return answer(r)
            obj = r.json()["objects"][0]
            if "actions" not in obj:  # the model was there, its object not (any more)
                return obj["error"]["code"], f"batch object error: {obj['error']}"
            action = obj["actions"]["download"]
            return answer(http("GET", action["href"], headers=action.get("header", {})))

        one_commit_at_a_time = threading.Lock()

        def hub_commit():
            """What ``HfApi.upload_file`` and ``create_commit`` send: a plain file and a link to the
            model's LFS object (which the judge checks against the LFS links a delete removes)."""
            tag = uuid.uuid4().hex[:12]
            lines = [{"key": "header", "value": {"summary": f"racing {tag}"}},
                     {"key": "file", "value": {"path": f"notes/{tag}.txt", "encoding": "base64",
                                               "content": base64.b64encode(b"racing\n").decode()}},
                     {"key": "lfsFile", "value": {"path": f"lfs/{tag}.bin", "algo": "sha256", "oid": oid, "size": size}}]
            with one_commit_at_a_time:  # racing the delete, not each other (test_hub covers that)
                return answer(http("POST", f"{d.url}/api/models/{REPO}/commit/main", token=tok,
                                   raw=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
                                   headers={"Content-Type": "application/x-ndjson"}))

        def later(step: str, r) -> tuple[int, str | None]:
            """A later step of a door that takes several: a 404 there must be the missing model's
            (its token's model was deleted after the first step), in that endpoint's own shape."""
            status, said = answer(r)
            return status, (f"{LATER} {step}: {said}" if status == 404 else said)

        def lfs_upload():
            """git-lfs pushing a new object: batch, PUT, verify."""
            data = os.urandom(2048)
            obj = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}
            r = http("POST", f"{d.url}/{REPO}.git/info/lfs/objects/batch", token=tok,
                     raw=json.dumps({"operation": "upload", "transfers": ["basic"], "objects": [obj]}).encode(),
                     headers={"Content-Type": "application/vnd.git-lfs+json", "Accept": "application/vnd.git-lfs+json"})
            if r.status != 200:
                return answer(r)
            actions = r.json()["objects"][0]["actions"]
            put = http("PUT", actions["upload"]["href"], raw=data,
                       headers={**actions["upload"].get("header", {}), "Content-Type": "application/octet-stream"})
            if not 200 <= put.status < 300 or "verify" not in actions:
                return later("PUT", put)
            return later("verify", http("POST", actions["verify"]["href"], raw=json.dumps(obj).encode(),
                                        headers={**actions["verify"].get("header", {}),
                                                 "Content-Type": "application/vnd.git-lfs+json"}))

        def xet_upload():
            """hf_xet uploading a file: a write token, a xorb, the shard that registers the file."""
            r = http("GET", f"{d.url}/api/models/{REPO}/xet-write-token/main", token=tok)
            if r.status != 200:
                return answer(r)
            cas, xet_token = r.json()["casUrl"], r.json()["accessToken"]
            chunks = [os.urandom(3000)]
            h, data = serialize_xorb(chunks)
            r = http("POST", f"{cas}/v1/xorbs/default/{to_hex(h)}", token=xet_token, raw=data)
            if r.status != 200:
                return later("xorb", r)
            shard = upload_shard([([(h, 0, 1, chunks)], b"".join(chunks))], [(h, chunks)])
            return later("shard", http("POST", f"{cas}/v1/shards", token=xet_token, raw=shard))

        return [
            ("hub info", get(f"/api/models/{REPO}")),
            ("hub revision", get(f"/api/models/{REPO}/revision/v1")),
            ("hub tree", get(f"/api/models/{REPO}/tree/main?recursive=true")),
            ("hub refs", get(f"/api/models/{REPO}/refs")),
            ("hub resolve", get(f"/{REPO}/resolve/main/README.md")),
            ("hub resolve lfs", get(f"/{REPO}/resolve/v1/weights.bin")),
            ("rest model", get(f"/api/v1/models/{REPO}")),
            ("rest refs", get(f"/api/v1/models/{REPO}/refs")),
            ("ui model", get(f"/{REPO}", None)),
            ("ui tree", get(f"/{REPO}/tree/main", None)),
            ("ui blob", get(f"/{REPO}/blob/main/README.md", None)),
            ("ui commits", get(f"/{REPO}/commits/main", None)),
            ("ui commit", get(f"/{REPO}/commit/{head}", None)),
            ("ui tags", get(f"/{REPO}/tags", None)),
            ("git info/refs", get(f"/{REPO}.git/info/refs?service=git-upload-pack")),
            ("git upload-pack", upload_pack),
            ("lfs download", lfs_download),
            # Writes that read the repository first (the revision to point at, the judge's facts).
            ("rest create tag", lambda: answer(http("POST", f"{d.url}/api/v1/models/{REPO}/tags", token=tok, body={
                "name": f"t-{uuid.uuid4().hex[:12]}", "revision": "main", "message": "racing"}))),
            ("hub create branch", lambda: answer(http(
                "POST", f"{d.url}/api/models/{REPO}/branch/b-{uuid.uuid4().hex[:12]}", token=tok, body={}))),
            ("hub commit", hub_commit),
            ("lfs upload", lfs_upload),
            ("xet upload", xet_upload),
        ]


def race_round(d, reads: list, seen: Counter, bad: list, said_404: dict) -> None:
    """Readers loop over the doors (each from a random starting point) while the model is deleted;
    they stop once each has seen the model gone at every door."""
    stop = threading.Event()
    missing: dict[str, str] = {}
    answered: set[str] = set()
    said_404.clear()

    def reader(first: int) -> None:
        order = reads[first:] + reads[:first]
        gone: set[str] = set()
        while not stop.is_set() and len(gone) < len(order):
            for door, call in order:
                try:
                    status, said = call()
                except Exception as exc:  # noqa: BLE001 - a broken answer is a finding, not a crash of the test
                    status, said = f"{type(exc).__name__}: {exc}", None
                seen[(door, status)] += 1
                if isinstance(status, int) and 200 <= status < 300:
                    answered.add(door)
                if status == 404:
                    gone.add(door)
                    said_404[door].add(said)
                elif not (isinstance(status, int) and 200 <= status < 300):
                    bad.append((door, status))

    # One reader starting at each door, so that every door is read in the moment of the delete.
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(reads))]
    for t in threads:
        t.start()
    # Every door answered once (some take several requests), then the delete at a random moment.
    wait_until(lambda: len(answered) == len(reads), "every door answering before the delete",
               detail=lambda: sorted({door for door, _ in reads} - answered))
    time.sleep(random.uniform(0, 0.5))
    r = d.api("DELETE", f"/api/v1/models/{REPO}")
    assert r.status == 204, r.body
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(60)
    for door, call in reads:  # the model is gone for good: what every door says of a missing model
        status, said = call()
        assert status == 404, (door, status)
        missing[door] = said
    for door, said in said_404.items():
        bad += [(door, f"404 saying {other!r}, not {missing[door]!r}") for other in said - {missing[door]}
                if not (other.startswith(LATER) and "model not found" in other)]


def test_reads_racing_a_delete_answer_2xx_or_404_at_every_door_and_nothing_old_leaks():
    root = short_tmpdir("mrrace")
    d = start_workers(root / "data")
    git = Git(root / "home")
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": NS})
        seen: Counter = Counter()
        said_404: dict = defaultdict(set)
        bad: list = []
        old = None
        for i in range(ROUNDS):
            old = Model(d, git, root / f"work{i}", tag="v1", files={
                "README.md": CARD.encode(), "weights.bin": b"old weights %d " % i * 5000,
                "config.json": b'{"round": %d}' % i, "src/model.py": b"print('old')\n"})
            oid, size = next(iter(old.lfs.values()))
            batch = http("POST", f"{d.url}/{REPO}.git/info/lfs/objects/batch", token=d.tokens["admin"],
                         raw=json.dumps({"operation": "download", "objects": [{"oid": oid, "size": size}]}).encode(),
                         headers={"Content-Type": "application/vnd.git-lfs+json"})
            old_action = batch.json()["objects"][0]["actions"]["download"]  # signed for the old model
            race_round(d, old.reads(), seen, bad, said_404)
        tracebacks = [line for line in log_lines(d) if line.get("level") in ("error", "critical")
                      and line.get("event") not in ("git_rpc_stderr",)]
        print(json.dumps(sorted((door, str(s), n) for (door, s), n in seen.items())))
        for line in tracebacks:
            print(line.get("path"), line.get("exception", line))
        assert not bad, Counter(bad)
        assert not tracebacks, tracebacks[:5]
        for door, _ in old.reads():
            assert seen[(door, 404)], f"{door}: the delete was never seen ({seen})"
            assert any(200 <= s < 300 for (dd, s) in seen if dd == door and isinstance(s, int)), \
                f"{door}: never read before the delete ({seen})"

        # The same name again, one commit, no tag, no LFS file: nothing of the old model shows.
        new = root / "new"
        assert d.api("POST", "/api/v1/models", body={"namespace": NS, "name": NAME, "visibility": "public"}).status == 201
        git.new_repo(new)
        fresh = git.commit(new, {"README.md": "# New\n"}, "new model")
        git.run("push", "-q", d.git_url(f"{REPO}.git", "admin"), "main", cwd=new)
        tok = d.tokens["admin"]
        refs = d.ok("GET", f"/api/v1/models/{REPO}/refs")
        assert refs["tags"] == [] and [b["commit"] for b in refs["branches"]] == [fresh], refs
        info = d.ok("GET", f"/api/models/{REPO}")
        assert [s["rfilename"] for s in info["siblings"]] == ["README.md"] and info["sha"] == fresh, info
        assert [f["path"] for f in d.ok("GET", f"/api/v1/models/{REPO}")["files"]] == ["README.md"]
        for path in (f"/api/models/{REPO}/revision/v1", f"/api/models/{REPO}/revision/{old.head}",
                     f"/{REPO}/resolve/{old.head}/weights.bin", f"/{REPO}/resolve/main/weights.bin",
                     f"/{REPO}/commit/{old.head}", f"/{REPO}/tree/v1"):
            assert http("GET", d.url + path, token=tok).status == 404, path
        oid, size = next(iter(old.lfs.values()))
        r = http("POST", f"{d.url}/{REPO}.git/info/lfs/objects/batch", token=tok,
                 raw=json.dumps({"operation": "download", "objects": [{"oid": oid, "size": size}]}).encode(),
                 headers={"Content-Type": "application/vnd.git-lfs+json"})
        assert r.status == 200 and r.json()["objects"][0]["error"]["code"] == 404, r.body
        # A download token signed for the old model, used after the new one took its name: the old
        # model is gone, so it is that model's 404, not its bytes and not the new model's.
        r = http("GET", old_action["href"], headers=old_action.get("header", {}))
        assert r.status == 404 and b"model not found" in r.body, (r.status, r.body[:200])
        assert "# Racy" not in http("GET", f"{d.url}/{REPO}").body.decode()  # no cached card of the old model
        clone = root / "clone"
        git.run("clone", "-q", d.git_url(f"{REPO}.git", "admin"), str(clone))
        assert git.run("cat-file", "-e", old.head, cwd=clone, check=False).returncode != 0
        assert git.run("fetch", "-q", "origin", old.head, cwd=clone, check=False).returncode != 0
    finally:
        d.stop(signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
