"""What is inside pushed weights, end to end: real git + git-lfs pushes of files made here with the
real libraries, the push policy, the API, huggingface_hub, the deploy gate and the backfill.

Every test that pushes a malicious pickle checks its canary is still absent (the daemon lists
imports, it never unpickles)."""

import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import save

from ..helpers import MODELREPO, Git, catalog_sql, operator_env, start_daemon
from ..weights import SHARDED_PARAMETERS, evil_pickle, gguf_bytes, sharded_model, torch_zip
from .test_hooks_webhooks import CARD, push, refused
from .test_hub import hf

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
LFS_TRACK = ("*.safetensors", "*.gguf", "*.pkl", "*.bin", "*.pt")


def new_work(git, tmp_path, files: dict, name="w"):
    work = git.new_repo(tmp_path / name)
    git.run("lfs", "track", *LFS_TRACK, cwd=work)
    git.commit(work, {"README.md": CARD, **files}, "weights")
    return work


def start(**env):
    d = start_daemon(extra_env=env)
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    d.user("alice", scope="admin")
    d.ok("PUT", "/api/v1/namespaces/acme/members/alice", body={"role": "admin"})
    return d


@pytest.fixture(scope="module")
def d():
    d = start()
    yield d
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


@pytest.fixture
def git(tmp_path):
    return Git(tmp_path / "home")


def inspections_rows(d) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in catalog_sql(d.data, "select oid, kind, status, bytes_read from inspections")}


def test_pushed_weights_show_parameters_gguf_and_a_safe_verdict(d, git, tmp_path):
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "tiny"})
    files = {**sharded_model(), "tiny.gguf": gguf_bytes(tmp_path), "training_args.pkl": pickle.dumps({"lr": 0.1}),
             "tokenizer.pickle": pickle.dumps(["a", "b"])}  # *.pickle is no weight pattern: a plain blob
    work = new_work(git, tmp_path, files)
    assert push(git, d, work, "acme/tiny").returncode == 0
    info = d.ok("GET", "/api/v1/models/acme/tiny")
    assert info["safetensors"] == {"parameters": SHARDED_PARAMETERS, "total": 1802}
    assert info["gguf"]["total"] == 64 * 8 + 8 and info["gguf"]["architecture"] == "llama"
    assert info["gguf"]["context_length"] == 2048 and info["gguf"]["file_type"] == "MOSTLY_F16"
    assert info["security"]["status"] == "safe"
    assert {(f["path"], f["status"]) for f in info["security"]["files"]} == {
        ("training_args.pkl", "safe"), ("tokenizer.pickle", "safe")}
    assert info["inspections"]["model-00002-of-00002.safetensors"] == {
        "kind": "safetensors", "status": "safe", "parameters": {"F16": 160, "F32": 10}, "total": 170}
    assert info["inspections"]["tiny.gguf"]["file_type"] == "MOSTLY_F16"
    blob = next(f["blob_id"] for f in info["files"] if f["path"] == "tokenizer.pickle")
    assert inspections_rows(d)[blob][:2] == ("pickle", "safe")  # keyed by the git blob id


def test_dangerous_pickles_are_refused_naming_file_member_and_callable(d, git, tmp_path):
    canary = tmp_path / "pwned"
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "evil"})
    work = new_work(git, tmp_path, {"model.safetensors": save({"w": np.ones((2, 2), np.float32)})})
    assert push(git, d, work, "acme/evil").returncode == 0
    git.commit(work, {"optimizer.pt": evil_pickle(canary), "ckpt/pytorch_model.bin": torch_zip(evil_pickle(canary))},
               "pickles")
    err = refused(push(git, d, work, "acme/evil"),
                  "optimizer.pt: imports posix.system, which runs code when the file is loaded (pickle). "
                  "Refused by push.pickle_policy=refuse. Fix: convert to safetensors",
                  "ckpt/pytorch_model.bin: archive/data.pkl imports posix.system",
                  "save_file(torch.load('optimizer.pt', weights_only=True), 'optimizer.safetensors')")
    assert "git rm ckpt/pytorch_model.bin" in err
    info = d.ok("GET", "/api/v1/models/acme/evil")
    assert [f["path"] for f in info["files"]] == [".gitattributes", "README.md", "model.safetensors"]
    assert info["safetensors"] == {"parameters": {"F32": 4}, "total": 4}
    assert not canary.exists()


def test_huggingface_hub_sees_safetensors_and_security(d, git, tmp_path):
    canary = tmp_path / "pwned"
    d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "hubbed", "visibility": "public"})
    work = new_work(git, tmp_path, sharded_model())
    assert push(git, d, work, "acme/hubbed").returncode == 0
    (tmp_path / "evil.pkl").write_bytes(evil_pickle(canary))
    out = hf(d, d.tokens["alice"], """
        api = HfApi()
        info = api.model_info("acme/hubbed", securityStatus=True)
        meta = get_safetensors_metadata("acme/hubbed")
        try:
            api.upload_file(path_or_fileobj="evil.pkl", path_in_repo="evil.pkl", repo_id="acme/hubbed")
            refusal = None
        except HfHubHTTPError as exc:
            refusal = str(exc)
        print(json.dumps({"total": info.safetensors.total, "parameters": info.safetensors.parameters,
                          "security": info.security_repo_status, "sharded": meta.sharded,
                          "count": meta.parameter_count, "refusal": refusal}))
    """, tmp_path)
    assert out["total"] == 1802 and out["parameters"] == SHARDED_PARAMETERS
    assert out["security"] == {"scansDone": True, "filesWithIssues": []}
    assert out["sharded"] is True and out["count"] == SHARDED_PARAMETERS
    assert "evil.pkl: imports posix.system" in out["refusal"]
    assert not canary.exists()


def test_warn_policy_deploy_gate_api_tag_and_backfill(git, tmp_path):
    """warn accepts and flags; deployments refuse dangerous pickles (and, with require_safe_weights,
    any pickle); after a restart under refuse an API tag of that commit is refused; the backfill
    finds what was stored before inspections existed."""
    canary = tmp_path / "pwned"
    d = start(MODELREPO_PUSH__PICKLE_POLICY="warn", MODELREPO_DEPLOY__REQUIRE_SAFE_WEIGHTS="true")
    try:
        for name in ("risky", "benign", "clean"):
            d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": name})
        risky = new_work(git, tmp_path, {"pytorch_model.bin": torch_zip(evil_pickle(canary))}, "risky")
        benign = new_work(git, tmp_path, {"training_args.pkl": pickle.dumps({"lr": 0.1})}, "benign")
        clean = new_work(git, tmp_path, {"model.safetensors": save({"w": np.ones(3, np.float32)})}, "clean")
        for work, name in ((risky, "risky"), (benign, "benign"), (clean, "clean")):
            git.run("tag", "-a", "v1", "-m", "release", cwd=work)
            pushed = push(git, d, work, f"acme/{name}", "main", "v1")
            assert pushed.returncode == 0, pushed.stderr
            warned = "modelrepo: warning: pytorch_model.bin: archive/data.pkl imports posix.system" in \
                pushed.stderr.decode()
            assert warned == (name == "risky"), pushed.stderr
        sec = d.ok("GET", "/api/v1/models/acme/risky")["security"]
        assert sec["status"] == "dangerous"
        [entry] = sec["files"]
        assert entry["path"] == "pytorch_model.bin" and entry["pickles"][0]["member"] == "archive/data.pkl"
        assert {"module": "posix", "name": "system", "severity": "dangerous"} in entry["pickles"][0]["globals"]
        assert "dangerous_pickle_accepted" in d.log()

        r = d.api("POST", "/api/v1/models/acme/risky/deployments", body={"name": "prod", "revision": "v1"})
        assert r.status == 422, r.body
        err = r.json()["error"]
        assert err["code"] == "unsafe_weights" and "pytorch_model.bin: archive/data.pkl imports posix.system" \
            in err["message"]
        assert err["details"]["findings"][0]["inspection"]["status"] == "dangerous"
        r = d.api("POST", "/api/v1/models/acme/benign/deployments", body={"name": "prod", "revision": "v1"})
        assert r.status == 422 and "deploy.require_safe_weights is true" in r.json()["error"]["message"]
        assert d.api("POST", "/api/v1/models/acme/clean/deployments",
                     body={"name": "prod", "revision": "v1"}).status == 201
    finally:
        assert d.stop() == 0, d.log()[-3000:]

    # As if stored before this feature: no inspections at all. Restart under the default policy.
    catalog_sql(d.data, "delete from inspections")
    d2 = start_daemon(d.data)
    try:
        assert d2.ok("GET", "/api/v1/models/acme/risky")["security"]["status"] == "unscanned"
        r = d2.api("POST", "/api/v1/models/acme/risky/tags", body={"name": "v2", "revision": "main",
                                                                        "message": "again"})
        assert r.status == 422 and r.json()["error"]["code"] == "dangerous_pickle", r.body
        catalog_sql(d.data, "delete from inspections")
        out = subprocess.run([MODELREPO, "inspect", "--data", str(d.data)], capture_output=True, text=True,
                             timeout=120, env=operator_env(d.data))
        assert out.returncode == 0, out.stderr
        assert "3 file(s) in 3 model(s); 3 to inspect" in out.stderr
        assert "acme/risky\tdangerous" in out.stdout and "  dangerous\tpytorch_model.bin" in out.stdout
        assert "acme/clean\tsafe" in out.stdout
        assert d2.ok("GET", "/api/v1/models/acme/risky")["security"]["status"] == "dangerous"
        again = subprocess.run([MODELREPO, "inspect", "acme/risky", "--data", str(d.data)], capture_output=True,
                               text=True, timeout=120, env=operator_env(d.data))
        assert "1 file(s) in 1 model(s); 0 to inspect" in again.stderr
    finally:
        assert d2.stop() == 0, d2.log()[-3000:]
        shutil.rmtree(d.data.parent, ignore_errors=True)
    assert not canary.exists()


def test_inspection_reads_headers_through_s3(s3_server, git, tmp_path):
    """On S3 the readers range-read the store: a 16 MiB safetensors file and a PyTorch zip holding
    16 MiB of tensor data cost a few KiB each."""
    from .conftest import BUCKET

    canary = tmp_path / "pwned"
    d = start(MODELREPO_LFS__STORAGE="s3", MODELREPO_LFS__S3__BUCKET=BUCKET, MODELREPO_LFS__S3__PREFIX="inspect/",
              MODELREPO_LFS__S3__ENDPOINT_URL=s3_server.endpoint,
              MODELREPO_LFS__S3__ACCESS_KEY_ID=s3_server.access_key,
              MODELREPO_LFS__S3__SECRET_ACCESS_KEY=s3_server.secret_key, MODELREPO_LFS__S3__REGION=s3_server.region,
              MODELREPO_PUSH__PICKLE_POLICY="warn")
    try:
        d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "big"})
        weights = save({"w": np.zeros((4 * 1024 * 1024,), np.float32)})
        checkpoint = torch_zip(evil_pickle(canary), os.urandom(16 * 1024 * 1024))
        work = new_work(git, tmp_path, {"model.safetensors": weights, "pytorch_model.bin": checkpoint})
        assert push(git, d, work, "acme/big").returncode == 0
        info = d.ok("GET", "/api/v1/models/acme/big")
        assert info["safetensors"]["total"] == 4 * 1024 * 1024 and info["security"]["status"] == "dangerous"
        oids = {f["path"]: f["lfs_oid"] for f in info["files"] if "lfs_oid" in f}
        rows = inspections_rows(d)
        assert rows[oids["model.safetensors"]][2] < 256 * 1024
        assert rows[oids["pytorch_model.bin"]][2] < 256 * 1024
    finally:
        assert d.stop() == 0, d.log()[-3000:]
        shutil.rmtree(d.data.parent, ignore_errors=True)
    assert not canary.exists()
