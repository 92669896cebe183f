"""The unmodified huggingface_hub client (and transformers) against the daemon, with
HF_ENDPOINT=http://127.0.0.1:PORT. Each client call runs in its own process, as a notebook would."""

import asyncio
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ..helpers import free_port, http, start_daemon
from .test_hooks_webhooks import CARD, Receiver

pytest.importorskip("huggingface_hub")
pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
MiB = 1024 * 1024


def hf(d, token: str | None, code: str, tmp: Path, endpoint: str | None = None, *,
       without_xet: bool = False) -> dict:
    """Run ``code`` with huggingface_hub configured for our server, as installed (hf_xet on); it
    must print one JSON line. ``without_xet`` only for the one test of a client that does not
    speak Xet (HF_HUB_DISABLE_XET, as HF documents for proxies that block it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": endpoint or d.url, "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_HOME": str(tmp / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                "TRANSFORMERS_VERBOSITY": "error"})
    if without_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    if token:
        env["HF_TOKEN"] = token
    prelude = "import json, sys\nfrom huggingface_hub import *\nfrom huggingface_hub.errors import *\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp)
    assert proc.returncode == 0, f"client failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = start_daemon(extra_env={"MODELREPO_WEBHOOKS__BACKOFF_BASE": "0.2"})
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    d.ok("POST", "/api/v1/namespaces", body={"name": "evil"})
    for user, ns, role, scope in (("alice", "acme", "admin", "admin"), ("eve", "evil", "admin", "admin")):
        d.user(user, scope=scope)
        d.ok("PUT", f"/api/v1/namespaces/{ns}/members/{user}", body={"role": role})
    yield d
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def pushed(hub, tmp_path_factory):
    """acme/bert (private): README card, config.json, a 12 MiB LFS weight, a nested file; tag v1
    on the first commit, main one commit later."""
    from ..helpers import Git

    tmp = tmp_path_factory.mktemp("pushed")
    git = Git(tmp / "home")
    d = hub
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "bert"})
    work = git.new_repo(tmp / "w")
    git.run("lfs", "track", "*.safetensors", cwd=work)
    weights = os.urandom(12 * MiB)
    v1 = git.commit(work, {"README.md": CARD, "config.json": '{"model_type": "bert", "hidden_size": 32}\n',
                           "model.safetensors": weights, "sub/dir/notes.txt": "v1 notes\n"}, "v1")
    git.run("tag", "-a", "v1", "-m", "first", cwd=work)
    head = git.commit(work, {"sub/dir/notes.txt": "v2 notes\n"}, "v2")
    git.run("push", "-q", d.git_url("acme/bert.git", "alice"), "main", "v1", cwd=work)
    return {"weights": weights, "v1": v1, "head": head}


def test_snapshot_download_branch_tag_sha(hub, pushed, tmp_path):
    d = hub
    for rev, notes, sha in (("main", "v2 notes\n", pushed["head"]), ("v1", "v1 notes\n", pushed["v1"]),
                            (pushed["v1"], "v1 notes\n", pushed["v1"])):
        out = hf(d, d.tokens["alice"], f"""
            p = snapshot_download("acme/bert", revision={rev!r})
            print(json.dumps({{"path": p}}))""", tmp_path)
        root = Path(out["path"])
        assert root.name == sha
        assert (root / "model.safetensors").read_bytes() == pushed["weights"]
        assert (root / "sub/dir/notes.txt").read_text() == notes
        assert (root / "README.md").read_text() == CARD
    info = hf(d, d.tokens["alice"], """
        i = model_info("acme/bert", files_metadata=True)
        print(json.dumps({"sha": i.sha, "private": i.private, "pipeline_tag": i.pipeline_tag,
                          "library": i.library_name, "card": i.card_data.to_dict() if i.card_data else {},
                          "siblings": {s.rfilename: [s.size, s.lfs.sha256 if s.lfs else None] for s in i.siblings},
                          "refs": [b.name for b in list_repo_refs("acme/bert").branches],
                          "tags": [t.name for t in list_repo_refs("acme/bert").tags],
                          "files": sorted(list_repo_files("acme/bert"))}))""", tmp_path)
    assert info["sha"] == pushed["head"] and info["private"] is True
    assert info["pipeline_tag"] == "text-classification" and info["library"] == "transformers"
    assert info["card"]["license"] == "apache-2.0"
    assert info["siblings"]["model.safetensors"] == [12 * MiB, hashlib.sha256(pushed["weights"]).hexdigest()]
    assert info["refs"] == ["main"] and info["tags"] == ["v1"]
    assert info["files"] == [".gitattributes", "README.md", "config.json", "model.safetensors", "sub/dir/notes.txt"]


def test_errors_are_the_clients_own_exceptions(hub, pushed, tmp_path):
    d = hub
    out = hf(d, d.tokens["alice"], """
        res = {}
        for name, call in (("entry", lambda: hf_hub_download("acme/bert", "nope.txt")),
                           ("revision", lambda: hf_hub_download("acme/bert", "config.json", revision="nope")),
                           ("repo", lambda: hf_hub_download("acme/nope", "config.json")),
                           ("snapshot_rev", lambda: snapshot_download("acme/bert", revision="v9"))):
            try:
                call(); res[name] = "no error"
            except Exception as exc:
                res[name] = type(exc).__name__
        res["exists"] = [file_exists("acme/bert", "config.json"), file_exists("acme/bert", "x"),
                         repo_exists("acme/bert"), repo_exists("acme/nope")]
        print(json.dumps(res))""", tmp_path)
    assert out["entry"] == "RemoteEntryNotFoundError"
    assert out["revision"] == "RevisionNotFoundError"
    assert out["repo"] == "RepositoryNotFoundError"
    assert out["snapshot_rev"] == "RevisionNotFoundError"
    assert out["exists"] == [True, False, True, False]


def test_private_model_invisible_to_another_tenant(hub, pushed, tmp_path):
    d = hub
    for token in (d.tokens["eve"], None):
        out = hf(d, token, """
            res = {}
            calls = {"info": lambda: model_info("acme/bert"), "tree": lambda: list_repo_files("acme/bert"),
                     "refs": lambda: list_repo_refs("acme/bert"),
                     "download": lambda: hf_hub_download("acme/bert", "config.json"),
                     "snapshot": lambda: snapshot_download("acme/bert"),
                     "exists": lambda: repo_exists("acme/bert")}
            for name, call in calls.items():
                try:
                    res[name] = repr(call())[:40]
                except Exception as exc:
                    res[name] = type(exc).__name__
            res["listed"] = [m.id for m in list_models()]
            print(json.dumps(res))""", tmp_path)
        assert out["exists"] == "False"
        for key in ("info", "tree", "refs", "download", "snapshot"):
            assert out[key] == "RepositoryNotFoundError", (token is None, key, out[key])
        assert "acme/bert" not in out["listed"]


def test_upload_folder_then_git_sees_lfs_pointers_and_tag_webhook(hub, tmp_path):
    d = hub
    folder = tmp_path / "folder"
    (folder / "nested").mkdir(parents=True)
    weights = os.urandom(11 * MiB)
    (folder / "pytorch_model.bin").write_bytes(weights)
    (folder / "config.json").write_text('{"model_type": "gpt2"}\n')
    (folder / "README.md").write_text(CARD)
    (folder / "nested" / "vocab.txt").write_text("a\nb\n")
    with Receiver() as rx:
        d.ok("POST", "/api/v1/namespaces/acme/webhooks", token="alice",
             body={"url": rx.url, "secret": "hub", "events": ["tag.created"]})
        out = hf(d, d.tokens["alice"], f"""
            url = create_repo("acme/uploaded", private=True)
            again = create_repo("acme/uploaded", private=True, exist_ok=True)
            info = upload_folder(repo_id="acme/uploaded", folder_path={str(folder)!r}, commit_message="initial upload")
            create_tag("acme/uploaded", tag="v1.0", tag_message="Release")
            create_branch("acme/uploaded", branch="exp")
            try:
                create_tag("acme/uploaded", tag="v1.0")
                dup = "no error"
            except HfHubHTTPError as exc:
                dup = exc.response.status_code
            print(json.dumps({{"url": str(url), "again": str(again), "oid": info.oid, "dup": dup,
                              "private": model_info("acme/uploaded").private}}))""", tmp_path)
        assert out["url"].endswith("/acme/uploaded") and out["again"] == out["url"] and out["private"]
        assert out["dup"] == 409
        (req,) = [r for r in rx.wait(1) if json.loads(r["body"])["model"] == "uploaded"]
        payload = json.loads(req["body"])
        assert payload["tag"] == "v1.0" and payload["commit"] == out["oid"]
        assert payload["lfs_files"] == [{"path": "pytorch_model.bin", "oid": hashlib.sha256(weights).hexdigest(),
                                         "size": len(weights)}]

    from ..helpers import Git

    git = Git(tmp_path / "home")
    clone = tmp_path / "clone"
    git.run("clone", "-q", d.git_url("acme/uploaded", "alice"), str(clone), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    pointer = (clone / "pytorch_model.bin").read_text()
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    assert f"oid sha256:{hashlib.sha256(weights).hexdigest()}" in pointer
    assert "*.bin filter=lfs diff=lfs merge=lfs -text" in (clone / ".gitattributes").read_text()
    assert (clone / "nested/vocab.txt").read_text() == "a\nb\n"
    assert "v1.0" in git.out("tag", cwd=clone)
    assert git.out("log", "-1", "--format=%s", cwd=clone) == "initial upload"
    git.run("lfs", "pull", cwd=clone)
    assert (clone / "pytorch_model.bin").read_bytes() == weights


def test_concurrent_commits_without_a_parent_all_land_and_with_a_stale_parent_get_412(hub, tmp_path):
    """Eight notebooks calling upload_file on one branch at once (huggingface_hub as installed,
    hf_xet included): on the Hub each lands on top of the others; none may be lost or refused
    because another moved the branch meanwhile. A commit that names its parentCommit asks for
    exactly that parent, and a moved branch is then the Hub's 412."""
    d = hub
    out = hf(d, d.tokens["alice"], """
        from concurrent.futures import ThreadPoolExecutor
        api = HfApi()
        api.create_repo("acme/busy", private=True)
        first = api.upload_file(path_or_fileobj=b"start\\n", path_in_repo="start.txt", repo_id="acme/busy").oid

        def upload(i):
            return api.upload_file(path_or_fileobj=b"note %d\\n" % i, path_in_repo=f"notes/{i}.txt",
                                   repo_id="acme/busy", commit_message=f"note {i}").oid

        with ThreadPoolExecutor(8) as pool:
            oids = list(pool.map(upload, range(8)))
        try:
            api.create_commit("acme/busy", operations=[CommitOperationAdd("late.txt", b"late\\n")],
                              commit_message="late", parent_commit=first)
            stale = "no error"
        except HfHubHTTPError as exc:
            stale = exc.response.status_code
        files = sorted(api.list_repo_files("acme/busy"))
        commits = [c.commit_id for c in api.list_repo_commits("acme/busy")]
        print(json.dumps({"oids": oids, "files": files, "commits": commits, "stale": stale}))""",
             tmp_path)
    assert [f for f in out["files"] if f != ".gitattributes"] == [f"notes/{i}.txt" for i in range(8)] + ["start.txt"]
    assert len(set(out["oids"])) == 8 and set(out["oids"]) <= set(out["commits"]), out
    assert out["stale"] == 412


def test_list_repo_commits_pages_through_the_whole_history(hub, tmp_path):
    """More commits than one page (50): the client follows the Link header to the end, newest
    first, exactly git's history; a title and body are split as on the Hub; a private model's
    history is missing for another tenant."""
    from ..helpers import Git

    d = hub
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "long"})
    git = Git(tmp_path / "home")
    work = git.new_repo(tmp_path / "w", {"README.md": CARD}, "first")
    for i in range(119):
        git.run("commit", "-q", "--allow-empty", "-m", f"step {i}\n\nwhy {i}", cwd=work)
    git.run("push", "-q", d.git_url("acme/long.git", "alice"), "main", cwd=work)
    history = git.out("rev-list", "main", cwd=work).split()
    out = hf(d, d.tokens["alice"], """
        commits = list_repo_commits("acme/long")
        print(json.dumps({"ids": [c.commit_id for c in commits], "top": [commits[0].title, commits[0].message],
                          "authors": commits[0].authors, "date": commits[0].created_at.isoformat()}))""", tmp_path)
    assert len(history) == 120 and out["ids"] == history
    assert out["top"] == ["step 118", "why 118"] and out["authors"] == ["Tester"]
    assert out["date"].endswith("+00:00")
    eve = hf(d, d.tokens["eve"], """
        try:
            list_repo_commits("acme/long")
            print(json.dumps("no error"))
        except RepositoryNotFoundError:
            print(json.dumps("missing"))""", tmp_path)
    assert eve == "missing"


def test_commit_is_judged_like_a_push(hub, tmp_path):
    d = hub
    out = hf(d, d.tokens["alice"], """
        create_repo("acme/strict")
        res = {}
        try:  # the client validates README front matter with the server first
            create_commit("acme/strict", [CommitOperationAdd("README.md", b"---\\ntags: nlp\\n---\\n")],
                          commit_message="bad card")
            res["bad_card"] = "no error"
        except ValueError as exc:
            res["bad_card"] = str(exc)[-200:]
        res["good"] = create_commit("acme/strict", [CommitOperationAdd("README.md", b"# fine\\n")],
                                    commit_message="good").oid
        try:
            create_commit("acme/strict", [CommitOperationAdd("x.txt", b"x")], commit_message="stale",
                          parent_commit="0" * 40)
            res["stale"] = "no error"
        except HfHubHTTPError as exc:
            res["stale"] = exc.response.status_code
        try:
            create_commit("acme/strict", [CommitOperationDelete("nope.txt")], commit_message="del")
            res["delete_missing"] = "no error"
        except Exception as exc:
            res["delete_missing"] = type(exc).__name__
        print(json.dumps(res))""", tmp_path)
    assert "tags: 'nlp' is not of type 'array'" in out["bad_card"]
    assert len(out["good"]) == 40
    assert out["stale"] == 412
    assert out["delete_missing"] == "RemoteEntryNotFoundError"

    # A client that skips the checks meets the push rules on the server.
    def raw_commit(*ops):
        lines = [{"key": "header", "value": {"summary": "raw", "description": ""}}, *ops]
        body = "".join(json.dumps(x) + "\n" for x in lines).encode()
        return http("POST", f"{d.url}/api/models/acme/strict/commit/main", raw=body, token=d.tokens["alice"],
                    headers={"Content-Type": "application/x-ndjson"})

    def file_op(path, data):
        return {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(),
                                         "encoding": "base64"}}

    r = raw_commit(file_op("README.md", b"---\ntags: nlp\n---\n"))
    assert r.status == 422 and "metadata field tags" in r.json()["error"]
    r = raw_commit(file_op("weights.safetensors", b"\x00" * 100))
    assert r.status == 422 and "must be stored with Git LFS" in r.json()["error"]
    r = raw_commit({"key": "lfsFile", "value": {"path": "m.bin", "algo": "sha256", "oid": "c" * 64, "size": 5}})
    assert r.status == 422 and "never uploaded to this repository" in r.json()["error"]
    for bad_path in ("../x", "/abs", "a/../../b", ".git/config"):
        assert raw_commit(file_op(bad_path, b"x")).status == 400, bad_path
    assert d.ok("GET", "/api/v1/models/acme/strict/refs", token="alice")["branches"][0]["commit"] == out["good"]


class CuttingProxy:
    """A loopback TCP proxy that cuts the first download (GET) of a path containing ``marker``
    after ``cut`` bytes of its response, so the client has to resume with a Range request.
    Requests on a kept-alive connection are watched as they pass."""

    def __init__(self, target_port: int, marker: bytes, cut: int) -> None:
        self.port = free_port()
        self.target_port, self.marker, self.cut = target_port, marker, cut
        self.cuts = 0
        self.ranges: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    async def _handle(self, c_reader, c_writer):
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        state = {"down": 0, "armed_at": None}

        async def upstream():
            try:
                while data := await c_reader.read(65536):
                    for line in data.split(b"\r\n"):
                        if line.lower().startswith(b"range:"):
                            self.ranges.append(line.decode())
                        if line.startswith(b"GET ") and self.marker in line and self.cuts == 0:
                            self.cuts += 1
                            state["armed_at"] = state["down"]
                    s_writer.write(data)
                    await s_writer.drain()
            except ConnectionError:
                pass

        up = asyncio.ensure_future(upstream())
        try:
            while data := await s_reader.read(65536):
                if state["armed_at"] is not None and state["down"] + len(data) - state["armed_at"] > self.cut:
                    keep = self.cut - (state["down"] - state["armed_at"])
                    c_writer.write(data[:max(keep, 0)])
                    await c_writer.drain()
                    state["armed_at"] = None
                    break
                state["down"] += len(data)
                c_writer.write(data)
                await c_writer.drain()
        except ConnectionError:
            pass
        up.cancel()
        for w in (c_writer, s_writer):
            w.close()

    def _run(self):
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    def __enter__(self):
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_hf_hub_download_resumes_an_interrupted_transfer(hub, pushed, tmp_path):
    d = hub
    # The client writes in 10 MiB steps and resumes from the last full one: cut after 11 MiB.
    with CuttingProxy(d.port, b"/resolve/", 11 * MiB) as proxy:
        out = hf(d, d.tokens["alice"], """
            p = hf_hub_download("acme/bert", "model.safetensors")
            print(json.dumps({"path": p}))""", tmp_path, endpoint=f"http://127.0.0.1:{proxy.port}")
    assert proxy.cuts == 1
    assert any(r.lower().startswith("range: bytes=10485760-") for r in proxy.ranges), proxy.ranges
    assert Path(out["path"]).read_bytes() == pushed["weights"]


def test_transformers_autoconfig(hub, pushed, tmp_path):
    pytest.importorskip("transformers")
    d = hub
    out = hf(d, d.tokens["alice"], """
        from transformers import AutoConfig
        c = AutoConfig.from_pretrained("acme/bert")
        print(json.dumps({"type": c.model_type, "hidden": c.hidden_size}))""", tmp_path)
    assert out == {"type": "bert", "hidden": 32}
