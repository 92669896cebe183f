"""Throw-away nginx (Debian's /usr/sbin/nginx) running the shipped reverse-proxy config, stdlib only.

    proxy = start_nginx(["127.0.0.1:8081", "127.0.0.1:8082"])
    try:
        ...  # git with GIT_SSL_CAINFO=proxy.ca_file against proxy.url; Python with proxy.ssl_context()
    finally:
        proxy.stop()

The server blocks and the upstream are ``config/nginx/modelrepo.conf`` itself: only the listen
ports, the certificate paths and the upstream servers are substituted (each substitution must match
the file exactly once, so a change to the file that the test does not understand fails loudly rather
than testing something else). Around it goes the main context a distribution's nginx.conf would
provide (pid, logs and temp paths under a private temporary directory). The certificate is a fresh
self-signed one for 127.0.0.1 (``openssl req -x509``), which is also the CA file clients trust.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NGINX = "/usr/sbin/nginx"
REFERENCE = Path(__file__).resolve().parent.parent / "config" / "nginx" / "modelrepo.conf"
_HOST = "127.0.0.1"
_UPSTREAM_LINE = re.compile(r"^(\s*)server 10\.0\.0\.\d+:8080( [^;]*);\n", re.MULTILINE)

# What a distribution's nginx.conf provides around sites-enabled/*; the access log records which
# replica served each request, so tests can show that both did.
MAIN_CONF = """\
pid {work}/nginx.pid;
worker_processes 2;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    log_format replicas '$remote_addr|$request|$status|$upstream_addr|$upstream_status';
    access_log {work}/access.log replicas;
    include {work}/modelrepo.conf;
}}
"""


def _free_port() -> int:
    from .helpers import free_port  # outside the ephemeral range: see there

    return free_port()


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise AssertionError(f"{REFERENCE} no longer has exactly one {old!r}: update tests/nginxserver.py")
    return text.replace(old, new)


def render(reference: str, *, upstreams: list[str], http_port: int, https_port: int, cert: Path,
           key: Path) -> str:
    """The reference config with only ports, certificate paths and upstream servers substituted."""
    lines = _UPSTREAM_LINE.findall(reference)
    if not lines:
        raise AssertionError(f"{REFERENCE} has no `server 10.0.0.N:8080 …;` upstream lines")
    indent, params = lines[0]
    servers = "".join(f"{indent}server {u}{params};\n" for u in upstreams)
    text = _UPSTREAM_LINE.sub(lambda m: "", reference, count=len(lines) - 1)
    text = _UPSTREAM_LINE.sub(lambda m: servers, text, count=1)
    text = _replace_once(text, "    listen 80;\n", f"    listen {_HOST}:{http_port};\n")
    text = _replace_once(text, "    listen 443 ssl;\n", f"    listen {_HOST}:{https_port} ssl;\n")
    # Loopback IPv4 only: the test machine may have no IPv6, and nothing else should reach it.
    text = _replace_once(text, "    listen [::]:80;\n", "")
    text = _replace_once(text, "    listen [::]:443 ssl;\n", "")
    text = _replace_once(text, "/etc/ssl/certs/models.example.com.pem", str(cert))
    return _replace_once(text, "/etc/ssl/private/models.example.com.key", str(key))


def _split(value: str) -> list[str]:
    return [] if value == "-" else [v.strip() for v in value.replace(" : ", ", ").split(",")]


@dataclass
class Served:
    """One line of the access log."""
    client: str
    request: str  # "PUT /path HTTP/1.1"
    status: int
    upstreams: list[str]  # the replicas tried, in order ("127.0.0.1:PORT")
    upstream_statuses: list[str]  # what each answered ("502" when it could not be reached)


@dataclass
class NginxServer:
    http_port: int
    https_port: int
    workdir: Path
    proc: subprocess.Popen
    upstreams: list[str]

    @property
    def url(self) -> str:
        return f"https://{_HOST}:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://{_HOST}:{self.http_port}"

    @property
    def ca_file(self) -> str:
        return str(self.workdir / "cert.pem")

    @property
    def config(self) -> str:
        return (self.workdir / "modelrepo.conf").read_text()

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def access_log(self) -> list[Served]:
        """Every request nginx answered, with the replicas it tried (in order) and their statuses."""
        try:
            lines = (self.workdir / "access.log").read_text(errors="replace").splitlines()
        except OSError:
            return []
        served = []
        for line in lines:
            client, request, status, upstreams, statuses = line.split("|")
            served.append(Served(client, request, int(status), _split(upstreams), _split(statuses)))
        return served

    def error_log(self, n: int = 40) -> str:
        try:
            return "\n".join((self.workdir / "error.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)  # fast shutdown: master and workers
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=15)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost; clients use it as their CA file."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def start_nginx(upstreams: list[str], *, https_port: int | None = None, timeout: float = 30) -> NginxServer:
    """nginx with the reference config in front of ``upstreams`` (HOST:PORT each), on free ports."""
    if not os.access(NGINX, os.X_OK):
        raise RuntimeError(f"{NGINX} not found: apt-get install nginx-light")
    workdir = Path(tempfile.mkdtemp(prefix="mrnginx-"))
    # Run as root, nginx's workers run as nobody: they must reach the temp directories.
    workdir.chmod(0o755)
    (workdir / "tmp").mkdir()
    cert, key = make_certificate(workdir)
    http_port, https_port = _free_port(), https_port or _free_port()
    (workdir / "modelrepo.conf").write_text(render(REFERENCE.read_text(), upstreams=upstreams, http_port=http_port,
                                                   https_port=https_port, cert=cert, key=key))
    conf = workdir / "nginx.conf"
    conf.write_text(MAIN_CONF.format(work=workdir))
    base = [NGINX, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    test = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True, timeout=60)
    if test.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"nginx -t refused the rendered config:\n{test.stderr}")
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    srv = NginxServer(http_port=http_port, https_port=https_port, workdir=workdir, proc=proc, upstreams=upstreams)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log = srv.error_log()
            srv.stop()
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{log}")
        try:
            with socket.create_connection((_HOST, https_port), timeout=1) as sock:
                with srv.ssl_context().wrap_socket(sock, server_hostname=_HOST):
                    return srv
        except OSError:
            if time.monotonic() > deadline:
                log = srv.error_log()
                srv.stop()
                raise RuntimeError(f"nginx did not answer TLS on {https_port}:\n{log}")
            time.sleep(0.05)
