"""Worker processes (``serve --workers 2``): a real supervisor, two real workers on one port, the
real git client and its hooks, signals and a real NOTIFY_SOCKET.

Which worker served a request is read from the access log: every line of a worker carries its
``worker`` index and ``pid``. Connections are spread by the kernel (SO_REUSEPORT hashes the
client's address and port), so a few dozen fresh connections reach both workers.
"""

from http.client import HTTPConnection
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from ..helpers import Daemon, Git, http, short_tmpdir, start_daemon, wait_until
from .test_production import metric, wait_metric

CREDENTIALS = struct.Struct("3i")


def log_lines(d: Daemon, event: str | None = None) -> list[dict]:
    lines = []
    for raw in d.log().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and (event is None or line.get("event") == event):
            lines.append(line)
    return lines


def wait_for(predicate, timeout: float = 60, what: str = "", d: Daemon | None = None):
    return wait_until(predicate, what, timeout, detail=(lambda: d.log()[-4000:]) if d else None)


def live_workers(d: Daemon) -> dict[int, int]:
    """worker index -> pid of the workers that serve now (their latest worker_ready, still alive)."""
    ready: dict[int, int] = {}
    for line in log_lines(d, "worker_ready"):
        ready[line["worker"]] = line["pid"]
    return {i: pid for i, pid in ready.items() if psutil.pid_exists(pid)
            and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}


def start_workers(data: Path | None = None, **kw) -> Daemon:
    """A supervisor with two workers, once both serve. Start-up is two interpreter starts in a row
    (the supervisor's, then the workers'), so on a loaded machine it takes longer than a single
    daemon's: the wait is for the supervisor's own word, bounded by 120 s."""
    d = start_daemon(data, args=["--workers", "2", *kw.pop("args", [])], wait=False, **kw)
    try:
        wait_for(lambda: d.proc.poll() is not None or log_lines(d, "workers_ready"), timeout=120,
                 what="both workers", d=d)
        assert d.proc.poll() is None and len(live_workers(d)) == 2, d.log()
    except BaseException:
        d.stop(signal.SIGKILL)
        raise
    d.admin_token = d.tokens["admin"] = (d.data / "admin.token").read_text().strip()
    return d


def served_by(d: Daemon, path: str, method: str = "GET") -> set[int]:
    return {line["pid"] for line in log_lines(d, "request") if line.get("path") == path
            and line.get("method") == method}


@pytest.fixture(scope="module")
def workers():
    tmp = short_tmpdir()
    cfg = tmp / "c.yaml"
    cfg.write_text("log:\n  level: info\n")
    d = start_workers(tmp / "data", args=["--config", str(cfg)], extra_env={"MODELREPO_AUTH__MAX_FAILURES": "1000"})
    d.config = cfg
    yield d
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def test_requests_land_on_both_workers_and_metrics_sum_across_them(workers):
    d = workers
    d.ok("POST", "/api/v1/namespaces", body={"name": "spread"})
    d.ok("POST", "/api/v1/models", body={"namespace": "spread", "name": "m"})
    route = "/api/v1/models/{ns}/{name}"
    before = metric(d, "modelrepo_http_requests_total", route=route, method="GET", status="200")
    for _ in range(40):  # urllib opens a new connection (a new source port) per request
        d.ok("GET", "/api/v1/models/spread/m")
    pids = served_by(d, "/api/v1/models/spread/m")
    assert pids == set(live_workers(d).values()), pids
    # Each worker counted only its own requests; /metrics, answered by either, has them all.
    assert wait_metric(d, "modelrepo_http_requests_total", before + 40, route=route, method="GET",
                       status="200") == before + 40


def test_workers_sharing_one_log_stream_never_glue_lines(workers):
    """Every process writes its log lines to the one stream the service manager gave it (journald's
    socket, a file): each line must go out in one write, or two workers' lines glue into one that
    no JSON reader can parse — and the events in them are lost."""
    d = workers
    with ThreadPoolExecutor(8) as pool:
        assert {r.status for r in pool.map(lambda _: d.api("GET", "/healthz"), range(1000))} == {200}
    lines = d.log().splitlines()
    broken = [line for line in lines if not line.startswith("modelrepo: ") and not _json_object(line)]
    assert not broken, broken[:3]


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_pushes_with_hooks_succeed_whichever_worker_serves_them(workers, git, tmp_path):
    d = workers
    d.ok("POST", "/api/v1/namespaces", body={"name": "hooks"})
    d.ok("POST", "/api/v1/models", body={"namespace": "hooks", "name": "m"})
    url = d.git_url("hooks/m.git", "admin")
    work = git.new_repo(tmp_path / "w", {"README.md": "# m\n"})
    git.run("push", "-q", url, "main", cwd=work)

    def push(i: int) -> subprocess.CompletedProcess:
        clone = tmp_path / f"c{i}"
        git.run("clone", "-q", url, str(clone))
        git.run("checkout", "-q", "-b", f"b{i}", cwd=clone)
        git.commit(clone, {f"f{i}.txt": f"{i}\n"}, f"change {i}")
        return git.run("push", url, f"b{i}", cwd=clone, check=False)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(push, range(16)))
    for r in results:
        assert r.returncode == 0, r.stderr.decode()
    # Both workers received pushes, and each push's hooks reached the worker holding its session:
    # post-receive brought every branch into the catalog.
    assert served_by(d, "/hooks/m.git/git-receive-pack", "POST") == set(live_workers(d).values())
    branches = {b["name"] for b in d.ok("GET", "/api/v1/models/hooks/m/refs")["branches"]}
    assert branches == {"main", *(f"b{i}" for i in range(16))}
    # pre-receive judged them too: a refused push is refused, with the daemon's reason, on either worker.
    for i in range(6):
        clone = tmp_path / f"c{i}"
        git.commit(clone, {f"big{i}.bin": os.urandom(64)}, "weights without LFS")
        r = git.run("push", url, f"b{i}", cwd=clone, check=False)
        assert r.returncode != 0 and "modelrepo: push refused" in r.stderr.decode(), r.stderr.decode()
    # Each worker has its own hook socket, named for it.
    sockets = {p.name for p in (d.data / "run").glob("hooks-*.sock")}
    assert sockets == {f"hooks-{i}-{pid}.sock" for i, pid in live_workers(d).items()}


def test_sighup_reaches_every_worker(workers):
    d = workers
    seen = len(log_lines(d, "reloaded"))
    pids = set(live_workers(d).values())
    d.proc.send_signal(signal.SIGHUP)
    reloaded = wait_for(lambda: (lines := log_lines(d, "reloaded")[seen:]) and {x["pid"] for x in lines} == pids,
                        what="both workers reloading", d=d)
    assert reloaded
    assert http("GET", d.url + "/healthz").status == 200


def test_a_killed_worker_is_restarted_and_service_continues(workers):
    d = workers
    route = "/healthz"
    before = metric(d, "modelrepo_http_requests_total", route=route, method="GET", status="200")
    victim_index, victim = sorted(live_workers(d).items())[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: any(line["pid"] == victim for line in log_lines(d, "worker_exited")), what="worker_exited", d=d)
    new = wait_for(lambda: (w := live_workers(d)).get(victim_index) not in (None, victim) and w,
                   timeout=60, what="restart", d=d)
    assert len(new) == 2 and victim not in new.values()
    assert not (d.data / "run" / f"hooks-{victim_index}-{victim}.sock").exists()
    for _ in range(30):
        assert http("GET", d.url + "/healthz").status == 200
    assert served_by(d, "/healthz") >= set(new.values())
    # The dead worker's counts stay in the sum: counters never go back.
    assert metric(d, "modelrepo_http_requests_total", route=route, method="GET", status="200") >= before + 30
    assert d.proc.poll() is None


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _receive_pack_body(git: Git, work: Path) -> tuple[str, bytes]:
    new = git.out("rev-parse", "HEAD", cwd=work)
    pack = git.run("pack-objects", "--stdout", "--revs", "-q", cwd=work, input=f"{new}\n".encode()).stdout
    command = f"{'0' * 40} {new} refs/heads/main\0report-status\n".encode()
    return new, f"{len(command) + 4:04x}".encode() + command + b"0000" + pack


def test_sigterm_drains_an_in_flight_push_and_exits_0(git, tmp_path):
    tmp = short_tmpdir()
    d = start_workers(tmp / "data")
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": "drain"})
        d.ok("POST", "/api/v1/models", body={"namespace": "drain", "name": "m"})
        work = git.new_repo(tmp_path / "w", {"README.md": "# m\n", "data.txt": os.urandom(2_000_000).hex()})
        new, body = _receive_pack_body(git, work)
        conn = HTTPConnection("127.0.0.1", d.port, timeout=60)
        conn.putrequest("POST", "/drain/m.git/git-receive-pack")
        conn.putheader("Authorization", "Bearer " + d.admin_token)
        conn.putheader("Content-Type", "application/x-git-receive-pack-request")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        half = len(body) // 2

        def send(part: bytes) -> None:
            conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")

        send(body[:half])
        # git is running and reading the push: it is in flight in one of the workers.
        wait_for(lambda: metric(d, "modelrepo_active_transfers", protocol="git") >= 1, what="push in flight", d=d)
        d.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: len(log_lines(d, "stopping")) >= 3, what="supervisor and workers stopping", d=d)
        wait_for(lambda: refused(d.port), what="no worker accepting connections", d=d)
        time.sleep(0.5)
        send(body[half:])
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        answer = resp.read()
        assert resp.status == 200 and b"unpack ok" in answer and b"ok refs/heads/main" in answer, answer
        assert d.proc.wait(60) == 0, d.log()[-3000:]
        repo = d.data / "repos/drain/m.git"
        assert git.out("--git-dir", str(repo), "rev-parse", "refs/heads/main") == new
        assert not list((d.data / "run").glob("hooks-*.sock")) and not list((d.data / "run").glob("metrics-*"))
        assert all(not psutil.pid_exists(line["pid"]) for line in log_lines(d, "worker_started"))
    finally:
        d.stop(signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def test_ready_only_once_both_serve_watchdog_and_stopping():
    tmp = short_tmpdir()
    sock_path = tmp / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    messages: list[tuple[int, str]] = []  # (sender pid, message), read as promptly as systemd does
    done = threading.Event()

    def listen() -> None:
        while not done.is_set():
            try:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(CREDENTIALS.size))
            except TimeoutError:
                continue
            messages.append((CREDENTIALS.unpack(ancillary[0][2][:CREDENTIALS.size])[0], data.decode()))

    listener = threading.Thread(target=listen)
    listener.start()
    d = start_daemon(tmp / "data", args=["--workers", "2"], wait=False,
                     extra_env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"})

    def heard(prefix: str) -> int:
        return wait_for(lambda: next((i + 1 for i, (_, m) in enumerate(messages) if m.startswith(prefix)), 0),
                        timeout=120, what=prefix, d=d)

    try:
        heard("READY=1")
        # Only the supervisor talks to systemd, and READY=1 came first, once both workers listened.
        assert messages[0][1].startswith("READY=1") and f"MAINPID={d.proc.pid}" in messages[0][1], messages
        assert {line["worker"] for line in log_lines(d, "listening")} == {0, 1}, d.log()
        assert http("GET", d.url + "/healthz").status == 200
        heard("WATCHDOG=1")
        # A worker whose event loop stops turning (here: stopped) is killed and replaced.
        index, stuck = sorted(live_workers(d).items())[0]
        os.kill(stuck, signal.SIGSTOP)
        wait_for(lambda: any(line["pid"] == stuck for line in log_lines(d, "worker_hung")), what="worker_hung", d=d)
        wait_for(lambda: live_workers(d).get(index) not in (None, stuck), timeout=60, what="replacement", d=d)
        d.proc.send_signal(signal.SIGTERM)
        heard("STOPPING=1")
        assert d.proc.wait(30) == 0, d.log()[-3000:]
        assert {pid for pid, _ in messages} == {d.proc.pid}, messages
    finally:
        done.set()
        listener.join()
        sock.close()
        d.stop(signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_port_in_use_fails_start_up_at_once():
    """The supervisor binds the port before starting anything: no workers crash-looping on it."""
    tmp = short_tmpdir()
    try:
        blocker = socket.socket()  # the port is taken (without SO_REUSEPORT): nobody can share it
        blocker.bind(("127.0.0.1", 0))
        port = blocker.getsockname()[1]
        blocker.listen()
        d = start_daemon(tmp / "data", args=["--workers", "2"], port=port, wait=False)
        assert d.proc.wait(60) != 0
        assert "address already in use" in d.log().lower() and not log_lines(d, "worker_started"), d.log()
        blocker.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
