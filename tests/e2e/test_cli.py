"""The admin CLI and `modelrepo serve` start-up, as an operator runs them."""

import json
import os
import stat
import subprocess
import time

from ..helpers import MODELREPO, free_port, http, short_tmpdir, start_daemon


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    return subprocess.run([MODELREPO, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=60)


def test_admin_cli_while_daemon_runs(daemon, git, tmp_path):
    d = daemon
    data = str(d.data)
    assert stat.S_IMODE((d.data / "admin.token").stat().st_mode) == 0o600
    assert cli("user", "create", "carol", "--data", data).returncode == 0
    r = cli("user", "create", "Carol", "--data", data)
    assert r.returncode == 1 and "already exists" in r.stderr
    token = cli("token", "create", "carol", "--scope", "write", "--name", "laptop", "--data", data).stdout.strip()
    assert token.startswith("mr_")
    assert cli("namespace", "create", "lab", "--data", data).returncode == 0
    r = cli("namespace", "add-member", "lab", "carol", "--role", "writer", "--data", data)
    assert r.returncode == 0 and "carol is writer of lab" in r.stdout
    r = cli("model", "create", "lab/llm", "--visibility", "shared", "--description", "tiny", "--data", data)
    assert r.returncode == 0 and f"{d.url}/lab/llm.git" not in r.stdout  # CLI does not know the daemon's port
    assert "lab/llm.git" in r.stdout
    r = cli("model", "create", "lab/../x", "--data", data)
    assert r.returncode == 1 and "invalid model name" in r.stderr
    r = cli("model", "create", "nons/x", "--data", data)
    assert r.returncode == 1 and "namespace 'nons' not found" in r.stderr
    listing = cli("model", "list", "--data", data).stdout
    assert "lab/llm\tshared\ttiny" in listing

    # The running daemon sees all of it at once: the token works and the model takes a push.
    d.tokens["carol"] = token
    assert d.ok("GET", "/api/v1/user", token="carol")["name"] == "carol"
    work = git.new_repo(tmp_path / "w", {"README.md": "hi\n"})
    git.run("push", "-q", d.git_url("lab/llm.git", "carol"), "main", cwd=work)
    assert d.ok("GET", "/api/v1/models/lab/llm/refs", token="carol")["branches"][0]["name"] == "main"


def test_request_log_lines_are_json(daemon):
    d = daemon
    http("GET", d.url + "/api/v1/models", token=d.admin_token)
    deadline = time.time() + 10
    while True:  # the access line is written just after the response is sent
        lines = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
        access = [e for e in lines if e.get("event") == "request" and e["path"] == "/api/v1/models"]
        if access or time.time() > deadline:
            break
        time.sleep(0.05)
    assert access, d.log()
    entry = access[-1]
    for key in ("method", "path", "status", "bytes_out", "duration_ms", "user", "request_id", "timestamp"):
        assert key in entry, key
    assert entry["user"] == "admin" and entry["status"] == 200 and len(entry["request_id"]) == 32


def test_serve_refuses_bad_config(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  listen: 127.0.0.1:8080\n  threads: 4\n")
    r = cli("serve", "--config", str(cfg), "--data", str(tmp_path / "d"))
    assert r.returncode != 0 and "threads" in r.stderr
    r = cli("serve", "--data", str(tmp_path / "d"), env={"MODELREPO_LOG__LEVEL": "chatty"})
    assert r.returncode != 0 and "log.level" in r.stderr
    r = cli("serve", "--data", str(tmp_path / "d"), "--listen", "localhost")
    assert r.returncode != 0 and "server.listen" in r.stderr
    assert not (tmp_path / "d").exists(), "a refused start must not create the data dir"


def test_serve_with_config_file_and_flags(git):
    tmp = short_tmpdir()
    port = free_port()
    cfg = tmp / "c.yaml"
    cfg.write_text(f"data_dir: {tmp / 'data'}\nserver:\n  listen: 127.0.0.1:1\n  public_url: https://models.example.com\n")
    # --listen (given by start_daemon) beats the file's listen; the file's public_url applies.
    d = start_daemon(tmp / "data", args=["--config", str(cfg)], port=port,
                     extra_env={"MODELREPO_AUTH__ALLOW_ANONYMOUS_READ": "false"})
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": "n"})
        created = d.ok("POST", "/api/v1/models", body={"namespace": "n", "name": "m", "visibility": "public"})
        assert created["clone_url"] == "https://models.example.com/n/m.git"
        # The env switch took effect: even a public model needs a token now.
        assert d.api("GET", "/api/v1/models/n/m", token=None).status == 401
        assert d.api("GET", "/n/m.git/info/refs?service=git-upload-pack", token=None).status == 401
        assert d.api("GET", "/healthz", token=None).status == 200
    finally:
        d.stop()
