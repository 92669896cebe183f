"""Hostile HTTP against a real daemon on loopback: bodies in small delayed TCP segments, malformed
pkt-lines and gzip, requests aiohttp's parser rejects, slowloris, stalled bodies, git process caps,
endless bodies, huge LFS batches, invalid UTF-8 and encoded traversal in every path part.

Each case must end in a clean 4xx (or 503 past a capacity cap) or a closed connection, while a
normal request is still served and memory stays bounded. The daemon runs with short timeouts
and small caps so every case is bounded in time: header_timeout 2 s, body_idle_timeout 2 s,
at most 4 git processes, 2 per client address.
"""

import gzip
from http import client as httpclient
import json
import re
import select
import shutil
import signal
import socket
import threading
import time

import psutil
import pytest

from ..helpers import Git, http, short_tmpdir, start_daemon, wait_until

TIMEOUT = 2  # header_timeout and body_idle_timeout of the daemon below
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def hd():
    env = {"MODELREPO_LIMITS__HEADER_TIMEOUT": str(TIMEOUT), "MODELREPO_LIMITS__BODY_IDLE_TIMEOUT": str(TIMEOUT),
           "MODELREPO_LIMITS__MAX_GIT_PROCESSES": "4", "MODELREPO_LIMITS__MAX_GIT_PROCESSES_PER_CLIENT": "2",
           "MODELREPO_LIMITS__MAX_UPLOAD_PACK_REQUEST": str(MiB), "MODELREPO_AUTH__MAX_FAILURES": "100000"}
    d = start_daemon(extra_env=env)
    d.ok("POST", "/api/v1/namespaces", body={"name": "h"})
    d.user("w")
    d.ok("PUT", "/api/v1/namespaces/h/members/w", body={"role": "writer"})
    d.ok("POST", "/api/v1/models", body={"namespace": "h", "name": "pub", "visibility": "public"})
    tmp = short_tmpdir()
    git = Git(tmp / "home")
    work = git.new_repo(tmp / "w", {"README.md": "# pub\n"})
    git.run("push", "-q", d.git_url("h/pub.git", "w"), "main", cwd=work)
    d.git, d.tmp = git, tmp
    d.rss_start = d.rss()
    yield d
    growth = (d.rss() - d.rss_start) / MiB
    print(f"\nhostile-http: daemon RSS {d.rss_start / MiB:.0f} MiB -> {d.rss() / MiB:.0f} MiB (+{growth:.0f})")
    assert growth < 100, f"memory grew by {growth:.0f} MiB"
    assert "Traceback" not in d.log() and "AssertionError" not in d.log(), d.log()[-4000:]
    assert d.stop(signal.SIGTERM) == 0, d.log()[-4000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)


# -- raw HTTP ---------------------------------------------------------------------------------

def connect(d, source: str = "127.0.0.1", timeout: float = 20) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def head(method: str, path: str, headers: dict, length: int | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(s: socket.socket) -> tuple[int, dict, bytes]:
    r = httpclient.HTTPResponse(s)
    r.begin()
    return r.status, dict(r.getheaders()), r.read()


def send_split(d, method: str, path: str, body: bytes, headers: dict, segment: int,
               delay: float) -> tuple[int, dict, bytes]:
    """``body`` in ``segment``-byte TCP segments, ``delay`` seconds apart, as a real network does."""
    with connect(d) as s:
        s.sendall(head(method, path, headers, len(body)))
        for i in range(0, len(body), segment):
            time.sleep(delay)
            s.sendall(body[i:i + segment])
        return response(s)


def closed_by_server(s: socket.socket, within: float) -> bool:
    """True when the server closes (EOF or reset) within ``within`` seconds."""
    deadline = time.time() + within
    while time.time() < deadline:
        ready, _, _ = select.select([s], [], [], 0.2)
        if ready:
            try:
                if s.recv(65536) == b"":
                    return True
            except (ConnectionResetError, TimeoutError):
                return True
    return False


def git_children(d) -> int:
    return sum(1 for p in psutil.Process(d.proc.pid).children(recursive=True) if p.name().startswith("git"))


def normal_request_ok(d) -> None:
    started = time.time()
    assert http("GET", d.url + "/api/v1/models/h/pub").status == 200
    assert time.time() - started < 2, "a normal request waited on the hostile ones"


def auth(d, who: str = "admin") -> dict:
    return {"Authorization": f"Bearer {d.tokens[who]}"}


JSON = {"Content-Type": "application/json"}
LFS = {"Content-Type": "application/vnd.git-lfs+json", "Accept": "application/vnd.git-lfs+json"}


# -- bodies in segments -------------------------------------------------------------------------

def test_json_bodies_in_small_delayed_segments_on_every_door(hd):
    d = hd
    doors = [
        ("POST", "/api/v1/namespaces", {"name": "split-one"}, {**JSON, **auth(d)}, 201),
        ("POST", "/api/repos/create", {"name": "split-repo", "organization": "h", "private": True},
         {**JSON, **auth(d, "w")}, 200),
        ("POST", "/api/models/h/pub/tag/main", {"tag": "split-tag", "message": "in pieces"}, {**JSON, **auth(d, "w")},
         200),
        ("POST", "/h/pub.git/info/lfs/locks", {"path": "split.bin"}, {**LFS, **auth(d, "w")}, 201),
        ("POST", "/h/pub.git/info/lfs/objects/batch",
         {"operation": "download", "objects": [{"oid": f"{i:064x}", "size": 1} for i in range(1000)]},
         {**LFS, **auth(d, "w")}, 200),
    ]
    for method, path, body, headers, status in doors:
        raw = json.dumps(body).encode()
        got, _, text = send_split(d, method, path, raw, headers, segment=1460 if len(raw) > 10000 else 7, delay=0.02)
        assert got == status, (path, got, text[:300])
    assert len(json.loads(text)["objects"]) == 1000
    assert d.ok("GET", "/api/v1/namespaces/split-one")["name"] == "split-one"

    # A valid body followed by garbage in a later segment is not a valid body.
    raw = b'{"name": "split-two"}' + b" trailing garbage"
    got, _, _ = send_split(d, "POST", "/api/v1/namespaces", raw, {**JSON, **auth(d)}, segment=21, delay=0.3)
    assert got == 400
    assert d.api("GET", "/api/v1/namespaces/split-two").status == 404


# -- git bodies ---------------------------------------------------------------------------------

UPLOAD = {"Content-Type": "application/x-git-upload-pack-request"}
RECEIVE = {"Content-Type": "application/x-git-receive-pack-request"}
BAD_PKT_LINES = [b"zzzzhello", b"0003", b"0002", b"ffff" + b"x" * 10, b"fff0", b"0010abc", b"00", b"\x00\x01\x02\x03",
                 b"0009want\n0000zzzz", b"-001", b"0x10abcdefghijkl", b"0000" + b"g" * 8, b"\xff" * 64]


@pytest.mark.parametrize("body", BAD_PKT_LINES, ids=lambda b: repr(b[:12]))
def test_malformed_pkt_lines_are_400(hd, body):
    d = hd
    r = http("POST", d.url + "/h/pub.git/git-upload-pack", raw=body, headers=UPLOAD)
    assert r.status == 400, (body, r.status, r.body)
    assert b"malformed git request" in r.body
    r = http("POST", d.url + "/h/pub.git/git-receive-pack", raw=body, headers={**RECEIVE, **auth(d, "w")})
    assert r.status in (400, 200), (body, r.status, r.body)
    if body[:4] not in (b"0000",):  # framing broken before the first flush
        assert r.status == 400, (body, r.status, r.body)


@pytest.mark.parametrize("body", [
    b"0032want " + b"0" * 40 + b"\n00000009done\n",  # well framed, asks for an object that is not there
    b"0032want " + b"z" * 40 + b"\n00000009done\n",
    b"0014command=frobnicate0000",
    b"0009done\n",
    b"0001",
    b"",
])
def test_well_framed_nonsense_is_never_a_5xx(hd, body):
    d = hd
    r = http("POST", d.url + "/h/pub.git/git-upload-pack", raw=body, headers=UPLOAD)
    assert r.status < 500, (body, r.status, r.body)
    r = http("POST", d.url + "/h/pub.git/git-upload-pack", raw=body, headers={**UPLOAD, "Git-Protocol": "version=2"})
    assert r.status < 500, (body, r.status, r.body)


def test_invalid_gzip_is_400(hd):
    d = hd
    for path, headers in (("/h/pub.git/git-upload-pack", UPLOAD), ("/api/v1/namespaces", {**JSON, **auth(d)})):
        r = http("POST", d.url + path, raw=b"\x1f\x8b\x08\x00not really gzip",
                 headers={**headers, "Content-Encoding": "gzip"})
        assert r.status == 400, (path, r.status, r.body)
    r = http("POST", d.url + "/h/pub.git/git-upload-pack", raw=gzip.compress(b"zzzzhello"),
             headers={**UPLOAD, "Content-Encoding": "gzip"})
    assert r.status == 400


# -- what aiohttp's parser rejects ------------------------------------------------------------

def test_requests_the_parser_rejects_are_answered_and_logged(hd):
    d = hd
    cases = {
        "10,000 headers": head("GET", "/healthz", {f"X-H{i}": "v" for i in range(10000)}),
        "a 20 KB header": head("GET", "/healthz", {"X-Big": "v" * 20000}),
        "a 20 KB request line": head("GET", "/healthz?" + "q" * 20000, {}),
        "a bad chunk size": head("POST", "/api/v1/namespaces", {**JSON, "Transfer-Encoding": "chunked"})
                            + b"5\r\n{\"a\":\r\nzz\r\n",
        "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
    }
    for what, raw in cases.items():
        with connect(d) as s:
            try:
                s.sendall(raw)
                status, _, _ = response(s)
                assert 400 <= status < 500, (what, status)
            except (ConnectionResetError, BrokenPipeError, httpclient.RemoteDisconnected):
                pass  # a closed connection is a clean answer too
            assert closed_by_server(s, 5), what
        normal_request_ok(d)

    def rejected_line() -> bool:  # the access line is written just after the answer
        rejected = [json.loads(line) for line in d.log().splitlines() if '"route"' not in line and '"request"' in line]
        return any(e.get("status") == 400 and e.get("request_id") is None for e in rejected)
    wait_until(rejected_line, "an access line for a rejected request")
    assert 'route="rejected"' in http("GET", d.url + "/metrics").body.decode()


# -- slowloris, stalled bodies --------------------------------------------------------------------

def test_slowloris_connections_are_closed_after_the_header_timeout(hd):
    d = hd
    fds_before = psutil.Process(d.proc.pid).num_fds()
    socks = []
    for i in range(200):
        s = connect(d)
        s.sendall(b"GET /api/v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    trickler = connect(d)
    trickler.sendall(b"GET /healthz HTTP/1.1\r\n")
    peak = psutil.Process(d.proc.pid).num_fds()
    normal_request_ok(d)
    started = time.time()
    for _ in range(6):  # one header byte every 0.5 s does not keep the connection open
        time.sleep(0.5)
        try:
            trickler.sendall(b"X")
        except OSError:
            break
    assert closed_by_server(trickler, TIMEOUT + 3)
    assert all(closed_by_server(s, 3) for s in socks), "a partial request head outlived the header timeout"
    print(f"\nslowloris: 201 stalled connections, daemon fds {fds_before} -> {peak}, all closed "
          f"{time.time() - started:.1f} s after the trickle began")
    for s in socks + [trickler]:
        s.close()
    normal_request_ok(d)
    assert git_children(d) == 0


def test_stalled_json_body_gets_408(hd):
    d = hd
    with connect(d) as s:
        s.sendall(head("POST", "/api/v1/namespaces", {**JSON, **auth(d)}, 100) + b'{"name": ')
        started = time.time()
        status, _, body = response(s)
        assert status == 408 and b"request_timeout" in body
        assert TIMEOUT - 0.5 < time.time() - started < TIMEOUT + 5


def test_stalled_upload_pack_holds_no_git_process_and_times_out(hd):
    d = hd
    with connect(d) as s:
        s.sendall(head("POST", "/h/pub.git/git-upload-pack", UPLOAD, 1000))
        time.sleep(1)
        assert git_children(d) == 0, "a client that sent no body started a git process"
        status, _, _ = response(s)
        assert status == 408
    with connect(d) as s:
        s.sendall(head("POST", "/h/pub.git/git-upload-pack", UPLOAD, 1000) + b"0032want ")
        wait_until(lambda: git_children(d) == 1, "git to start on the first body bytes")
        status, _, _ = response(s)
        assert status == 408
    wait_until(lambda: git_children(d) == 0, "the timed-out request's git to be gone")


def test_git_processes_are_capped_per_address_and_in_total(hd):
    d = hd

    def stalled(source: str) -> socket.socket:
        s = connect(d, source)
        s.sendall(head("POST", "/h/pub.git/git-upload-pack", UPLOAD, 1000) + b"0032want ")
        return s

    def refused(source: str) -> dict:
        with connect(d, source) as s:
            s.sendall(head("POST", "/h/pub.git/git-upload-pack", UPLOAD, 9) + b"0009done\n")
            status, headers, body = response(s)
        assert status == 503, (source, status, body)
        return headers

    # Each step waits until the held requests' git processes run (not for a fixed time): a cap is
    # only tested once the processes it counts exist. The held requests trickle one byte of their
    # want line every TIMEOUT/4 s, so a slow step on a busy machine never lets the body idle timeout
    # free a slot before the caps are checked; then they stall for good and get their 408.
    held: list[socket.socket] = []
    done = threading.Event()

    def trickle() -> None:
        for _ in range(40):  # the 40 hex digits of the want line: never a complete pkt-line
            if done.wait(TIMEOUT / 4):
                return
            for s in list(held):
                s.sendall(b"0")

    keepalive = threading.Thread(target=trickle, daemon=True)
    held += [stalled("127.0.0.1"), stalled("127.0.0.1")]
    keepalive.start()
    wait_until(lambda: git_children(d) == 2, "two git processes for 127.0.0.1")
    headers = refused("127.0.0.1")
    assert int(headers["Retry-After"]) > 0
    held += [stalled("127.0.0.2"), stalled("127.0.0.2")]
    wait_until(lambda: git_children(d) >= 4, "four git processes")
    peak = git_children(d)
    assert peak == 4
    refused("127.0.0.3")  # the total cap
    normal_request_ok(d)  # non-git requests are not affected
    done.set()
    keepalive.join()
    for s in held:
        assert response(s)[0] == 408
        s.close()
    print(f"\ngit caps: {peak} git processes at peak (cap 4, 2 per address); the 5th and a 3rd per address got 503")
    wait_until(lambda: git_children(d) == 0, "the held requests' git processes to be gone")
    d.git.run("clone", "-q", d.url + "/h/pub.git", str(d.tmp / "after-cap"))


def test_client_disconnect_is_logged_as_499(hd):
    d = hd
    s = connect(d)
    s.sendall(head("POST", "/h/pub.git/git-upload-pack", UPLOAD, 1000) + b"0032want ")
    wait_until(lambda: git_children(d) == 1, "the request to be handled (its git running)")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    s.close()

    def access_lines() -> list:
        lines = [json.loads(x) for x in d.log().splitlines() if x.startswith("{")]
        return lines if any(e.get("event") == "request" and e.get("status") == 499 for e in lines) else []
    lines = wait_until(access_lines, "a 499 access line for a client that went away", detail=lambda: d.log()[-3000:])
    assert not any(e.get("event") == "unhandled_error" for e in lines)
    assert not [e for e in lines if e.get("event") == "request" and e.get("status", 0) >= 500 and e["status"] != 503]


# -- endless and huge bodies ------------------------------------------------------------------

@pytest.mark.parametrize("path,headers", [("/api/v1/namespaces", JSON), ("/h/pub.git/git-upload-pack", UPLOAD),
                                          ("/h/pub.git/info/lfs/objects/batch", LFS)])
def test_endless_chunked_body_is_413_and_closed(hd, path, headers):
    d = hd
    with connect(d, timeout=5) as s:
        s.sendall(head("POST", path, {**headers, **auth(d), "Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n" % (64 * 1024) + b"0000" * (16 * 1024) + b"\r\n"
        sent, started, status = 0, time.time(), None
        while time.time() - started < 20:
            ready_r, ready_w, _ = select.select([s], [s], [], 1)
            if ready_r:
                try:
                    status, _, _ = response(s)
                except (ConnectionResetError, httpclient.RemoteDisconnected):
                    status = "closed"
                break
            if ready_w:
                try:
                    s.sendall(chunk)
                    sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    status = "closed"
                    break
        # git may answer a body of flush packets before reading all of it; then it is done too.
        assert status in (413, "closed") or "git" in path and status in (200, 400), (path, status)
        assert sent < 64 * MiB, "the server kept reading an endless body"
        assert closed_by_server(s, 15) or status == "closed"
    normal_request_ok(d)


def test_a_100000_object_lfs_batch_is_413(hd):
    d = hd
    objects = [{"oid": f"{i:064x}", "size": i} for i in range(100_000)]
    raw = json.dumps({"operation": "upload", "objects": objects}).encode()
    r = http("POST", d.url + "/h/pub.git/info/lfs/objects/batch", raw=raw, headers={**LFS, **auth(d, "w")})
    assert r.status == 413 and json.loads(r.body)["message"]
    # Without Content-Length (chunked), the limit still holds as the bytes arrive.
    with connect(d) as s:
        s.sendall(head("POST", "/h/pub.git/info/lfs/objects/batch",
                       {**LFS, **auth(d, "w"), "Transfer-Encoding": "chunked"}))
        try:
            for i in range(0, len(raw), 256 * 1024):
                part = raw[i:i + 256 * 1024]
                s.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert response(s)[0] == 413
    normal_request_ok(d)


# -- path parts -----------------------------------------------------------------------------------

PATH_PARTS = ["%ff", "%c3%28", "%ed%a0%80", "%2e%2e", "..%2f..%2fetc", "%2f", "a%2fb", "%00", "%0d%0a", "%25",
              "%2e%2e%2f%2e%2e%2fdata%2fcatalog.db", "." * 300]
TEMPLATES = [
    ("GET", "/{x}/pub.git/info/refs?service=git-upload-pack"), ("GET", "/h/{x}/info/refs?service=git-upload-pack"),
    ("POST", "/h/{x}/git-upload-pack"), ("GET", "/h/pub.git/info/lfs/objects/{x}"),
    ("POST", "/h/pub.git/info/lfs/locks/{x}/unlock"), ("GET", "/api/v1/models/{x}/pub"),
    ("GET", "/api/v1/models/h/{x}"), ("DELETE", "/api/v1/models/h/pub/tags/{x}"),
    ("DELETE", "/api/v1/models/h/pub/branches/{x}"), ("GET", "/api/v1/deployments/{x}"),
    ("GET", "/api/v1/users/{x}/tokens"), ("GET", "/api/models/h/pub/revision/{x}"),
    ("GET", "/api/models/h/pub/tree/main/{x}"), ("GET", "/api/models/{x}/pub"), ("GET", "/h/pub/resolve/{x}/README.md"),
    ("GET", "/h/pub/resolve/main/{x}"), ("GET", "/api/models/h/pub/xet-read-token/{x}"),
]


@pytest.mark.parametrize("method,template", TEMPLATES, ids=[t for _, t in TEMPLATES])
def test_invalid_utf8_and_encoded_traversal_in_every_path_part(hd, method, template):
    d = hd
    for part in PATH_PARTS:
        with connect(d) as s:
            body = b"{}" if method != "GET" else b""
            headers = {**auth(d, "w"), "Content-Type": "application/vnd.git-lfs+json" if "lfs" in template
                       else "application/x-git-upload-pack-request" if "upload-pack" in template else "application/json"}
            s.sendall(head(method, template.replace("{x}", part), headers, len(body)) + body)
            status, headers_out, out = response(s)
        assert status < 500 or status == 501 and "xet" in template, (template, part, status, out[:200])
        assert status != 200 or "resolve" not in template, (template, part)
        assert b"root:" not in out and b"SQLite format" not in out
        assert all(re.fullmatch(r"[\x20-\x7e]*", v) for v in headers_out.values()), (template, part)
    normal_request_ok(d)
