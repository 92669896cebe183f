"""Running it in production: metrics, readiness, quotas, brute-force guard, SIGHUP reload,
sd_notify, and SIGTERM during an LFS upload — against a real daemon, git and git-lfs."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from ..helpers import free_port, http, short_tmpdir, start_daemon

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
MiB = 1024 * 1024


def metric(d, name: str, **labels) -> float:
    text = http("GET", d.url + "/metrics").body.decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not m:
            continue
        got = ",".join(sorted((m.group(1) or "").split(","))) if m.group(1) else ""
        if all(f"{k}=\"{v}\"" in (m.group(1) or "") for k, v in labels.items()) or got == want:
            total += float(m.group(2))
    return total


def wait_metric(d, name: str, expected: float, timeout: float = 60, **labels) -> float:
    """Metrics are recorded when the access log line is written, just after the response: poll."""
    deadline = time.time() + timeout
    while True:
        value = metric(d, name, **labels)
        if value >= expected or time.time() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def daemon_each(request):
    d = start_daemon(extra_env=getattr(request, "param", {}))
    yield d
    d.stop(signal.SIGKILL)
    shutil.rmtree(d.data.parent, ignore_errors=True)


def test_metrics_change_as_requests_happen(daemon, git, tmp_path):
    d = daemon
    d.ok("POST", "/api/v1/namespaces", body={"name": "m"})
    d.ok("POST", "/api/v1/models", body={"namespace": "m", "name": "x"})
    route = "/api/v1/models/{ns}/{name}"
    before = metric(d, "modelrepo_http_requests_total", route=route, method="GET", status="200")
    for _ in range(3):
        d.ok("GET", "/api/v1/models/m/x")
    assert wait_metric(d, "modelrepo_http_requests_total", before + 3, route=route, method="GET",
                       status="200") == before + 3
    assert wait_metric(d, "modelrepo_http_request_duration_seconds_count", 3, route=route, method="GET") >= 3

    git_in = metric(d, "modelrepo_bytes_in_total", protocol="git")
    lfs_in = metric(d, "modelrepo_bytes_in_total", protocol="lfs")
    accepted = metric(d, "modelrepo_pushes_total", outcome="accepted")
    refused = metric(d, "modelrepo_pushes_total", outcome="refused", reason="lfs_required")
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.bin", cwd=work)
    git.commit(work, {"w.bin": os.urandom(MiB), "README.md": "hi\n"}, "lfs")
    git.run("push", "-q", d.git_url("m/x.git", "admin"), "main", cwd=work)
    bad = git.new_repo(tmp_path / "bad", {"w.safetensors": b"\x00" * 100})
    assert git.run("push", d.git_url("m/x.git", "admin"), "main:refs/heads/bad", cwd=bad, check=False).returncode
    assert wait_metric(d, "modelrepo_bytes_in_total", git_in + 1, protocol="git") > git_in
    assert wait_metric(d, "modelrepo_bytes_in_total", lfs_in + MiB, protocol="lfs") >= lfs_in + MiB
    assert metric(d, "modelrepo_pushes_total", outcome="accepted") == accepted + 1
    assert metric(d, "modelrepo_pushes_total", outcome="refused", reason="lfs_required") == refused + 1
    assert "modelrepo_webhook_queue_depth" in http("GET", d.url + "/metrics").body.decode()
    assert http("GET", d.url + "/readyz").json()["status"] == "ready"


def test_readyz_fails_when_the_store_is_unreachable(tmp_path):
    dead = free_port()  # nothing listens here
    d = start_daemon(extra_env={"MODELREPO_LFS__STORAGE": "s3", "MODELREPO_LFS__S3__BUCKET": "b",
                                "MODELREPO_LFS__S3__ENDPOINT_URL": f"http://127.0.0.1:{dead}",
                                "MODELREPO_LFS__S3__ACCESS_KEY_ID": "k", "MODELREPO_LFS__S3__SECRET_ACCESS_KEY": "s"})
    try:
        r = http("GET", d.url + "/readyz")
        assert r.status == 503
        body = r.json()
        assert body["status"] == "not ready" and body["checks"]["object_store"] != "ok"
        assert body["checks"]["catalog"] == "ok" and body["checks"]["data_dir"] == "ok"
        assert http("GET", d.url + "/healthz").status == 200  # liveness is not readiness
    finally:
        d.stop()
        shutil.rmtree(d.data.parent, ignore_errors=True)


def test_lfs_quota_refusal_through_the_real_client(daemon, git, tmp_path):
    d = daemon
    d.ok("POST", "/api/v1/namespaces", body={"name": "tight"})
    d.ok("POST", "/api/v1/models", body={"namespace": "tight", "name": "a"})
    d.ok("PUT", "/api/v1/namespaces/tight/quota", body={"bytes": 3 * MiB, "models": 2})
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.bin", cwd=work)
    git.commit(work, {"one.bin": os.urandom(2 * MiB)}, "fits")
    git.run("push", "-q", d.git_url("tight/a.git", "admin"), "main", cwd=work)
    ns = d.ok("GET", "/api/v1/namespaces/tight")
    assert ns["usage"] == {"bytes": 2 * MiB, "models": 1} and ns["quota"] == {"bytes": 3 * MiB, "models": 2}

    git.commit(work, {"two.bin": os.urandom(2 * MiB)}, "too much")
    proc = git.run("push", d.git_url("tight/a.git", "admin"), "main", cwd=work, check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert "LFS quota exceeded: 2 MiB used of 3 MiB, this push needs 2 MiB more" in err, err
    # The same object in a second model of the namespace costs nothing more: stored once.
    d.ok("POST", "/api/v1/models", body={"namespace": "tight", "name": "b"})
    git.run("reset", "-q", "--hard", "HEAD~1", cwd=work)
    git.run("push", "-q", d.git_url("tight/b.git", "admin"), "main", cwd=work)
    assert d.ok("GET", "/api/v1/namespaces/tight")["usage"]["bytes"] == 2 * MiB
    r = d.api("POST", "/api/v1/models", body={"namespace": "tight", "name": "c"})
    assert r.status == 403 and "quota of 2 models" in r.json()["error"]["message"]
    d.ok("PUT", "/api/v1/namespaces/tight/quota", body={"bytes": None, "models": None})
    d.ok("POST", "/api/v1/models", body={"namespace": "tight", "name": "c"})


def test_429_after_repeated_bad_tokens(daemon_each):
    d = daemon_each
    url = d.url + "/api/v1/user"
    statuses = [http("GET", url, token=f"mr_wrong{i}").status for i in range(20)]
    assert statuses == [401] * 20
    r = http("GET", url, token="mr_wrong-again")
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    # While blocked even a good token from that address waits; other clients are unaffected
    # (the daemon only sees 127.0.0.1 here, so this checks the block itself).
    assert http("GET", url, token=d.admin_token).status == 429
    assert http("GET", d.url + "/healthz").status == 200
    assert '"auth_rate_limited"' in d.log()


@pytest.mark.parametrize("daemon_each", [{"MODELREPO_LIMITS__MAX_PUSH_SIZE": "1 MiB"}], indirect=True)
def test_push_size_limit(daemon_each, git, tmp_path):
    d = daemon_each
    d.ok("POST", "/api/v1/namespaces", body={"name": "l"})
    d.ok("POST", "/api/v1/models", body={"namespace": "l", "name": "m"})
    work = git.new_repo(tmp_path / "w", {"small.txt": "fits\n"})
    git.run("push", "-q", d.git_url("l/m.git", "admin"), "main", cwd=work)
    git.commit(work, {"data.txt": os.urandom(2 * MiB).hex()}, "too big")
    proc = git.run("push", d.git_url("l/m.git", "admin"), "main", cwd=work, check=False)
    assert proc.returncode != 0 and "413" in proc.stderr.decode(), proc.stderr
    assert d.ok("GET", "/api/v1/models/l/m/refs")["branches"][0]["commit"] != git.out("rev-parse", "HEAD", cwd=work)


@pytest.mark.parametrize("daemon_each", [{"MODELREPO_AUTH__MAX_FAILURES": "1000"}], indirect=True)
def test_sigterm_during_lfs_upload_lets_it_finish(daemon_each, git, tmp_path):
    d = daemon_each
    d.ok("POST", "/api/v1/namespaces", body={"name": "t"})
    d.ok("POST", "/api/v1/models", body={"namespace": "t", "name": "m"})
    work = git.new_repo(tmp_path / "w")
    git.run("lfs", "track", "*.bin", cwd=work)
    payload = os.urandom(48 * MiB)
    git.commit(work, {"big.bin": payload}, "big")
    push = subprocess.Popen(["git", "lfs", "push", "--all", d.git_url("t/m.git", "admin")], cwd=work, env=git.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Wait until the PUT is in flight, then ask the daemon to stop.
    deadline = time.time() + 30
    while metric(d, "modelrepo_active_transfers", protocol="lfs") < 1:
        assert time.time() < deadline and push.poll() is None, push.stderr.read() if push.poll() is not None else ""
        time.sleep(0.005)
    d.proc.send_signal(signal.SIGTERM)
    push.wait(120)
    assert d.proc.wait(60) == 0
    # The PUT in flight finished (200, stored whole, linked); git-lfs's follow-up verify call may
    # then meet a daemon that no longer accepts connections, which is what draining means.
    puts = [line for line in d.log().splitlines() if '"method": "PUT"' in line and "/info/lfs/objects/" in line]
    assert puts and '"status": 200' in puts[-1], d.log()[-2000:]
    oid = hashlib.sha256(payload).hexdigest()
    assert (d.data / "lfs/objects" / oid[:2] / oid[2:4] / oid).read_bytes() == payload


def test_sighup_reloads_log_level(tmp_path):
    tmp = short_tmpdir()
    cfg = tmp / "c.yaml"
    cfg.write_text("log:\n  level: warning\n")
    d = start_daemon(tmp / "data", args=["--config", str(cfg)])
    try:
        http("GET", d.url + "/healthz")
        time.sleep(0.3)
        assert '"path": "/healthz"' not in d.log()
        cfg.write_text("log:\n  level: info\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60  # bounds a hang only: a loaded machine is slow
        while '"reloaded"' not in d.log():
            assert time.time() < deadline, d.log()
            time.sleep(0.05)
        http("GET", d.url + "/healthz")
        deadline = time.time() + 60  # bounds a hang only: a loaded machine is slow
        while '"path": "/healthz"' not in d.log():
            assert time.time() < deadline, d.log()
            time.sleep(0.05)
        cfg.write_text("log:\n  level: chatty\n")  # a bad reload is refused, the daemon keeps going
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 60  # bounds a hang only: a loaded machine is slow
        while '"reload_failed"' not in d.log():
            assert time.time() < deadline, d.log()
            time.sleep(0.05)
        assert http("GET", d.url + "/healthz").status == 200
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_sd_notify_ready_watchdog_stopping():
    tmp = short_tmpdir()
    sock_path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    d = start_daemon(tmp / "data", extra_env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
    try:
        messages = []
        while not any(m.startswith("WATCHDOG=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1")
        d.proc.send_signal(signal.SIGTERM)
        while not any(m.startswith("STOPPING=1") for m in messages):
            messages.append(sock.recv(4096).decode())
        assert d.proc.wait(30) == 0
    finally:
        sock.close()
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
