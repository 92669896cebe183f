"""The admin CLI and `modelrepo serve` start-up, as an operator runs them."""

import json
import os
import pty
import re
import select
import stat
import subprocess
import time
from pathlib import Path

from ..helpers import MODELREPO, catalog_env, cli_in_process, free_port, http, short_tmpdir, start_daemon
from .test_hooks_webhooks import CARD, Receiver


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    if "--data" in args:  # a running daemon's data directory: its catalog, wherever the run put it
        base.update(catalog_env(Path(args[args.index("--data") + 1])))
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
    deadline = time.time() + 60  # bounds a hang only: a loaded machine is slow
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


def admin(d, *args: str) -> subprocess.CompletedProcess:
    """An admin command against the running daemon's data directory, run in this process.

    Every command group also runs as the real executable here: user, token, namespace and model
    in test_admin_cli_while_daemon_runs, deployment and webhook below (admin_process), gc, fsck,
    backup and restore in test_long_jobs_show_progress_on_a_tty_only."""
    return cli_in_process(*args, "--data", str(d.data), env=catalog_env(d.data))


def admin_process(d, *args: str) -> subprocess.CompletedProcess:
    """The same, as the real ``modelrepo`` executable."""
    return cli(*args, "--data", str(d.data))


def on_tty(*args: str) -> tuple[int, str, str]:
    """Run the real executable with stderr on a pseudo-terminal: (status, stdout, what the TTY got)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    proc = subprocess.Popen([MODELREPO, *args], stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            env=env)
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "no output on the TTY for 60 s"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read().decode()
    return proc.wait(60), out, seen.decode(errors="replace")


def test_help_lists_every_command_with_a_description():
    r = cli("--help")
    assert r.returncode == 0
    listed = r.stdout.split("Commands:")[1].strip().splitlines()
    assert {line.split()[0] for line in listed} >= {"serve", "user", "token", "namespace", "model", "deployment",
                                                   "webhook", "gc", "fsck", "backup", "restore"}
    assert all(len(line.split(None, 1)) == 2 for line in listed), listed
    r = cli("model", "--help")
    listed = r.stdout.split("Commands:")[1].strip().splitlines()
    lines = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in listed}
    assert set(lines) == {"create", "list", "show", "delete"}
    assert "refused while a deployment is live" in lines["delete"]


def test_user_list_disable_enable(daemon):
    d = daemon
    assert admin(d, "user", "create", "dora").returncode == 0
    token = admin(d, "token", "create", "dora", "--scope", "read").stdout.strip()
    d.tokens["dora"] = token
    assert d.ok("GET", "/api/v1/user", token="dora")["name"] == "dora"

    listing = admin(d, "user", "list").stdout.splitlines()
    assert listing[0].split("\t") == ["USER", "ADMIN", "DISABLED", "CREATED"]
    rows = {line.split("\t")[0]: line.split("\t") for line in listing[1:]}
    assert rows["admin"][1] == "yes" and rows["dora"][1:3] == ["no", "no"]

    r = admin(d, "user", "disable", "dora")
    assert r.returncode == 0 and "disabled user dora" in r.stdout
    assert d.api("GET", "/api/v1/models", token="dora").status == 401  # at once, in the running daemon
    assert d.api("GET", "/api/v1/user", token="dora").status == 401
    r = admin(d, "token", "create", "dora")
    assert r.returncode == 1 and "user 'dora' is disabled" in r.stderr and "modelrepo user enable dora" in r.stderr
    rows = {line.split("\t")[0]: line.split("\t") for line in admin(d, "user", "list").stdout.splitlines()[1:]}
    assert rows["dora"][2] != "no"
    # The API refuses a disabled user's token for a new token too (it no longer authenticates).
    assert d.api("POST", "/api/v1/users/dora/tokens", token="dora", body={"scopes": ["read"]}).status == 401

    assert admin(d, "user", "enable", "dora").returncode == 0
    assert d.ok("GET", "/api/v1/user", token="dora")["name"] == "dora"  # the same token works again
    r = admin(d, "user", "disable", "nobody")
    assert r.returncode == 1 and "user 'nobody' not found" in r.stderr


def test_token_list_and_revoke(daemon):
    d = daemon
    admin(d, "user", "create", "tess")
    first = admin(d, "token", "create", "tess", "--name", "laptop").stdout.strip()
    second = admin(d, "token", "create", "tess", "--scope", "read", "--name", "ci").stdout.strip()
    d.tokens.update(tess=first, tess_ci=second)
    d.ok("GET", "/api/v1/user", token="tess")  # used once: the listing says when

    listing = admin(d, "token", "list", "tess").stdout.splitlines()
    assert listing[0].split("\t") == ["ID", "NAME", "SCOPE", "CREATED", "LAST USED"]
    rows = {line.split("\t")[1]: line.split("\t") for line in listing[1:]}
    assert set(rows) == {"laptop", "ci"} and rows["laptop"][2] == "write" and rows["ci"][2] == "read"

    r = admin(d, "token", "revoke", "tess", rows["laptop"][0])
    assert r.returncode == 0, r.stderr
    assert d.api("GET", "/api/v1/models", token="tess").status == 401
    assert d.ok("GET", "/api/v1/user", token="tess_ci")["name"] == "tess"  # the other token still works
    assert [line.split("\t")[1] for line in admin(d, "token", "list", "tess").stdout.splitlines()[1:]] == ["ci"]
    r = admin(d, "token", "revoke", "tess", rows["laptop"][0])
    assert r.returncode == 1 and "token not found" in r.stderr
    # Another user's token id is not this user's to revoke.
    r = admin(d, "token", "revoke", "admin", rows["ci"][0])
    assert r.returncode == 1 and "token not found" in r.stderr
    assert d.ok("GET", "/api/v1/user", token="tess_ci")["name"] == "tess"
    for big in (2**31, 2**63):  # past PostgreSQL's INTEGER, past SQLite's: a usage error, not a crash
        r = admin(d, "token", "revoke", "tess", str(big))
        assert r.returncode == 2 and "Invalid value for 'ID'" in r.stderr, r.stderr


def test_namespace_list_members_and_remove_member(daemon, git, tmp_path):
    d = daemon
    admin(d, "user", "create", "nina")
    d.tokens["nina"] = admin(d, "token", "create", "nina").stdout.strip()
    assert admin(d, "namespace", "create", "vault", "--description", "secret things").returncode == 0
    assert admin(d, "namespace", "add-member", "vault", "nina", "--role", "reader").returncode == 0
    admin(d, "model", "create", "vault/weights")
    assert d.api("GET", "/api/v1/models/vault/weights", token="nina").status == 200

    assert "vault\tsecret things" in admin(d, "namespace", "list").stdout.splitlines()
    assert admin(d, "namespace", "members", "vault").stdout.splitlines()[1:] == ["nina\treader"]
    r = admin(d, "namespace", "remove-member", "vault", "nina")
    assert r.returncode == 0 and "removed nina from vault" in r.stdout
    # Private model, no membership: exactly the 404 of a missing model.
    assert d.api("GET", "/api/v1/models/vault/weights", token="nina").body == \
        d.api("GET", "/api/v1/models/vault/nothing", token="nina").body
    assert admin(d, "namespace", "members", "vault").stdout.splitlines()[1:] == []
    r = admin(d, "namespace", "remove-member", "vault", "nina")
    assert r.returncode == 1 and "nina is not a member of vault" in r.stderr


def test_model_show_and_delete_refused_while_deployed(daemon, git, tmp_path):
    d = daemon
    admin(d, "namespace", "create", "prod")
    admin(d, "model", "create", "prod/bert", "--visibility", "public", "--description", "tiny bert")
    work = git.new_repo(tmp_path / "w", {"README.md": CARD, "config.json": "{}\n"})
    git.run("tag", "-a", "v1", "-m", "first release", cwd=work)
    git.run("push", "-q", d.git_url("prod/bert.git", "admin"), "main", "v1", cwd=work)
    dep = d.ok("POST", "/api/v1/models/prod/bert/deployments", body={"name": "serving", "revision": "v1"})

    r = admin(d, "model", "show", "prod/bert")
    assert r.returncode == 0, r.stderr
    show = r.stdout
    for fragment in ("id:             prod/bert", "visibility:     public", "description:    tiny bert",
                     "library_name:   transformers", "pipeline_tag:   text-classification", "tags:           nlp, tiny",
                     "\n  main\t", "\n  v1\t", f"\n  {dep['id']}\tserving\tv1\trequested", "\n  README.md\t",
                     "\n  config.json\t3 B"):
        assert fragment in show, f"{fragment!r} not in:\n{show}"
    assert admin(d, "deployment", "list", "prod/bert").stdout.splitlines()[1].startswith(f"{dep['id']}\tserving\tv1\t")

    # No --yes and nobody to answer: nothing happens.
    r = admin(d, "model", "delete", "prod/bert")
    assert r.returncode == 1 and "Aborted" in r.stderr
    r = admin(d, "model", "delete", "prod/bert", "--yes")
    assert r.returncode == 1 and "used by deployments: serving" in r.stderr, r.stderr
    assert d.api("GET", "/api/v1/models/prod/bert").status == 200
    # The refusal says how to stop the deployment; its command runs as printed.
    command = re.search(r"`(modelrepo deployment stop [\d ]+)`", r.stderr).group(1).split()
    stopped = admin_process(d, *command[1:])
    assert stopped.returncode == 0 and f"stopped deployment {dep['id']} (serving of prod/bert at v1)" in stopped.stdout
    assert d.ok("GET", f"/api/v1/deployments/{dep['id']}")["status"] == "stopped"

    r = admin(d, "model", "delete", "prod/bert", "--yes")
    assert r.returncode == 0 and "deleted prod/bert" in r.stdout
    assert d.api("GET", "/api/v1/models/prod/bert").status == 404
    assert not (d.data / "repos" / "prod" / "bert.git").exists()
    r = admin(d, "model", "show", "prod/bert")
    assert r.returncode == 1 and "not found" in r.stderr
    r = admin(d, "model", "show", "no-slash")
    assert r.returncode == 2 and "expected NS/NAME" in r.stderr
    r = admin(d, "deployment", "stop", "987654")
    assert r.returncode == 1 and "deployment not found" in r.stderr


def test_webhook_list_deliveries_redeliver(daemon):
    d = daemon
    admin(d, "namespace", "create", "hooked")
    with Receiver() as receiver:
        hook = d.ok("POST", "/api/v1/namespaces/hooked/webhooks",
                    body={"url": receiver.url, "secret": "s3cret", "events": ["model.created"]})
        listing = admin_process(d, "webhook", "list", "hooked").stdout.splitlines()
        assert listing[1].split("\t") == [str(hook["id"]), receiver.url, "model.created", "yes"]
        admin(d, "model", "create", "hooked/m1")  # the event waits in the outbox for the daemon's worker
        first = receiver.wait(1)[0]
        delivery = first["headers"]["X-Modelrepo-Delivery"]
        deadline = time.time() + 60  # bounds a hang only: a loaded machine is slow
        while True:  # the worker records the outcome just after the receiver answered
            rows = admin(d, "webhook", "deliveries", "hooked", str(hook["id"])).stdout.splitlines()
            if rows[1].split("\t")[:3] == [delivery, "model.created", "delivered"] or time.time() > deadline:
                break
            time.sleep(0.2)
        assert rows[1].split("\t")[:4] == [delivery, "model.created", "delivered", "1"], rows

        r = admin(d, "webhook", "redeliver", "hooked", str(hook["id"]), delivery)
        assert r.returncode == 0, r.stderr
        again = receiver.wait(2)[1]
        assert again["headers"]["X-Modelrepo-Delivery"] == delivery and again["body"] == first["body"]
        assert again["headers"]["X-Modelrepo-Attempt"] == "2"

        r = admin(d, "webhook", "redeliver", "hooked", str(hook["id"]), "no-such-delivery")
        assert r.returncode == 1 and "delivery not found" in r.stderr
        r = admin(d, "webhook", "list", "hooked/m1")
        assert r.returncode == 0 and r.stdout.splitlines()[1:] == []  # the model has none of its own
        r = admin(d, "webhook", "list", "nowhere")
        assert r.returncode == 1 and "namespace 'nowhere' not found" in r.stderr


def test_long_jobs_show_progress_on_a_tty_only(tmp_path):
    data = str(tmp_path / "data")
    assert cli("namespace", "create", "ops", "--data", data).returncode == 0
    status, out, tty = on_tty("gc", "--dry-run", "--data", data)
    assert status == 0 and out.startswith("gc (dry run):")
    assert "\r\x1b[K" in tty and "gc: sweeping" in tty and re.search(r"\(\d+s\)", tty), repr(tty)
    r = cli("gc", "--dry-run", "--data", data)
    assert r.returncode == 0 and "\r" not in r.stderr and "sweeping" not in r.stderr

    status, out, tty = on_tty("fsck", "--data", data)
    assert status == 0 and "fsck: clean" in out, out + tty
    assert "fsck: checking" in tty and "\r\x1b[K" in tty

    dest = tmp_path / "backup"
    status, out, tty = on_tty("backup", str(dest), "--data", data)
    assert status == 0 and "backup written to" in out, out + tty
    assert re.search(r"\r\x1b\[K[|/\\-] backup \(\d+s\)", tty) and "copied the catalog" in tty, repr(tty)
    status, out, tty = on_tty("restore", str(dest), "--data", str(tmp_path / "restored"))
    assert status == 0 and "restored" in out, out + tty
    assert "\r\x1b[K" in tty and "restore (" in tty and "verified" in tty
    # Off a TTY: the steps as plain lines, no live line.
    r = cli("backup", str(tmp_path / "b2"), "--data", data)
    assert r.returncode == 0 and "copied the catalog" in r.stderr and "\r" not in r.stderr
