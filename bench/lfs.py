"""Git LFS basic-transfer throughput of the modelrepo daemon against the machine's ceilings and giftless.

Why: an LFS upload through the daemon is "read the socket, sha256, write, fsync, rename"; a
download is "sendfile a page-cached file into the socket". Neither the hashing nor the disk nor the
kernel copy is ours to speed up, so the yardstick is what this machine does for the same bytes
without any HTTP server in the way (the ceiling). We aim for uploads >= 0.7 and downloads >= 0.8
of that ceiling, a daemon whose memory stays flat however large the objects (< 200 MiB RSS), and
to beat giftless, a Python LFS server (Flask under gunicorn, local storage), on both directions
while doing more work than it does (giftless neither hashes nor fsyncs what it receives).

What it does, in one run, for two workloads (1 x 2 GiB and 32 x 64 MiB; --quick: 1 x 256 MiB and
8 x 16 MiB) of incompressible bytes generated once (sha256 computed up front, untimed):
  1. ceilings, in this process, on the filesystem of the daemon's data dir:
     - upload: sha256 + write (1 MiB chunks) + fsync of each object, in one thread (one upload
       pipeline) and, with several objects, in 8 threads (the daemon serves 8 uploads at once);
       the better of the two is the ceiling;
     - download: os.sendfile of each object into a loopback TCP socket, drained by a reader
       process, 1 stream per object up to 8 streams at once;
  2. "client max": the bench's own client against a bare HTTP server in another process that
     drains upload bodies without looking at them and sendfile's downloads. No server can look
     faster than this here: when the daemon is close to it, the client is the limit, not the daemon;
  3. the daemon (fresh data dir), driven like git-lfs does: one batch call per <= 100 objects,
     then up to 8 concurrent basic transfers (upload streamed from the file with Content-Length,
     then verify; download streamed into a sink that checks the size and the first and last
     64 KiB against the source);
  4. giftless (its own venv in ~/.cache/modelrepo-bench, reused; gunicorn, 8 sync workers),
     same client and workloads.
  With --workers N[,N...] (e.g. 1,2), step 3 runs once per N against `serve --workers N` (its own
  data dir; started like systemd would, READY=1 on a NOTIFY_SOCKET once every worker serves), each
  beside a bare aiohttp server of N processes sharing one port with SO_REUSEPORT, as the workers
  do, that reads and drops upload bodies and sendfile's downloads: the same framework, read
  buffer and client, none of the daemon's work. Issue 14's target: 8 concurrent uploads >= 0.7 of
  that bare aiohttp figure ("/aio").
The daemon's RSS is sampled every 50 ms from its start to the end.
A last section, "CPU budget", says whether the upload target fits this machine's cores at all: the
bare server only reads, a storing server also hashes and writes every byte while the client
shares the cores, so at 0.7 x bare-aio the floor is rate x (client + aiohttp reading +
sha256/write/fsync) CPU per MB, each measured in this run; and how many times that floor's server
part the daemon spends per MB (its own overhead).

How to read it: MB/s are 10^6 bytes per second of object data, wall clock from the first batch
call to the last byte (uploads include the verify calls). "ratio" is daemon / ceiling, MISS when
under the target; "/max" is daemon / client max; "vs giftless" is daemon / giftless, MISS when
not above 1. "cpu" is the server's CPU time over the phase's wall time (threads and processes
summed: up to 200% on 2 cores; the daemon near 100% means its event loop is saturated), "cli"
the client's: near 100% and /max near 1 mean the client, not the daemon, set the pace (its one
event loop does every recv, while the ceiling's reader drains with a thread per stream). Every
read is warm: the objects sit in the page cache for the ceilings and the servers alike (caches
are not dropped); each phase starts after a sync(2) so that no earlier writeback competes with it.
The upload ceilings include the fsync, so they follow the disk, which on a VM can vary a lot
from one minute to the next. The client shares the machine's cores with the server, and each
figure is a single run: the --quick sizes take tenths of a second and are a smoke test. Run it
on an otherwise idle machine (it prints the load average it started with); --scratch on a tmpfs
(e.g. /dev/shm, with --skip-giftless: 8 GiB) takes the disk out and leaves the CPU side.

Exit status: 0 when every transfer succeeded (a MISS is a finding, not a failure); 1 when a
transfer to the daemon failed (non-2xx) or returned wrong data; 130 when interrupted. Problems
with giftless (install, start-up, transfers) are reported and only blank its columns.

    /work/main/.venv/bin/python bench/lfs.py [--quick] [--skip-giftless] [--scratch DIR] [--keep] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil

from common import RssSampler, free_port, stop_process  # bench/common.py

MIB = 1024 * 1024
MB = 1_000_000
CHUNK = MIB
CONCURRENCY = 8  # git-lfs's default lfs.concurrenttransfers
BATCH_MAX = 100  # objects per batch call, as git-lfs sends them
CHECK_BYTES = 64 * 1024  # head and tail of each download compared with the source
TARGETS = {"upload": 0.7, "download": 0.8}
# Issue 14: 8 concurrent uploads >= 0.7 x a bare aiohttp server with as many processes, same client, same run.
AIO_UPLOAD_TARGET = 0.7
RSS_TARGET_MIB = 200
LFS_TYPE = "application/vnd.git-lfs+json"
FULL_WORKLOADS = ((1, 2048 * MIB), (32, 64 * MIB))
QUICK_WORKLOADS = ((1, 256 * MIB), (8, 16 * MIB))

GIFTLESS_VENV = Path.home() / ".cache" / "modelrepo-bench" / "giftless-venv"
# The giftless wheel on PyPI declares no dependencies: these are its own requirements/main.txt pins,
# minus the cloud storage backends the local store does not import.
GIFTLESS_PINS = (
    "giftless==0.6.2", "gunicorn==23.0.0", "figcan==0.0.4", "flask==2.3.3", "werkzeug==3.0.3",
    "flask-classful==0.16.0", "flask-marshmallow==0.15.0", "marshmallow==3.21.1", "webargs==8.4.0",
    "pyyaml==6.0.1", "pyjwt==2.8.0", "cryptography==43.0.1", "python-dotenv==1.0.1",
    "python-dateutil==2.9.0.post0", "typing-extensions==4.10.0", "cachetools==5.3.3", "importlib-metadata==7.0.2",
)

# The download ceiling's reader: N connections to argv[1]'s port, each drained in its own thread
# into a reused buffer; on EOF it answers with the byte count it read.
SINK_CODE = r"""
import socket, sys, threading
port, streams = int(sys.argv[1]), int(sys.argv[2])
def drain(conn):
    buf, total = bytearray(1 << 20), 0
    while n := conn.recv_into(buf):
        total += n
    conn.sendall(str(total).encode())
    conn.close()
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(streams)]
threads = [threading.Thread(target=drain, args=(c,)) for c in conns]
for t in threads: t.start()
for t in threads: t.join()
"""


# The "client max" reference: a bare threaded HTTP/1.1 server answering the batch call (actions
# pointing at itself, no verify), draining PUT bodies into a reused buffer and sendfile'ing GETs.
# argv: port, JSON file {oid: path}.
BARE_SERVER_CODE = r"""
import http.server, json, os, sys
paths = json.load(open(sys.argv[2]))
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and sendfile'd body go out as separate writes
    def log_message(self, *args): pass
    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        base = f"http://{self.headers['Host']}/objects/"
        objects = [{"oid": o["oid"], "size": o["size"], "actions": {req["operation"]: {"href": base + o["oid"]}}}
                   for o in req["objects"]]
        self.reply(200, json.dumps({"transfer": "basic", "objects": objects}).encode())
    def do_PUT(self):
        left, buf = int(self.headers["Content-Length"]), memoryview(bytearray(1 << 20))
        while left > 0 and (n := self.rfile.readinto(buf[:min(left, len(buf))])):
            left -= n
        self.reply(200 if left == 0 else 400)
    def do_GET(self):
        path = paths.get(self.path.rsplit("/", 1)[-1])
        if path is None:
            return self.reply(404)
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        with open(path, "rb") as f:
            offset = 0
            while offset < size:
                offset += os.sendfile(self.connection.fileno(), f.fileno(), offset, size - offset)
http.server.ThreadingHTTPServer.request_queue_size = 64  # 5 by default: 8 connects at once lose SYNs (1 s retry)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


# The bare aiohttp server: the same framework and read buffer as the daemon, none of its work. The
# batch call answers actions pointing at itself (no verify); PUT bodies are read and dropped; GETs
# are sendfile'd (FileResponse). argv: port, JSON file {oid: path}. Started once per process
# wanted, all on one port with SO_REUSEPORT, as the daemon's workers; each prints "ready".
BARE_AIOHTTP_CODE = r"""
import asyncio, json, sys
from aiohttp import web
port, paths = int(sys.argv[1]), json.load(open(sys.argv[2]))
async def batch(request):
    req = json.loads(await request.read())
    base = f"http://{request.host}/objects/"
    objects = [{"oid": o["oid"], "size": o["size"], "actions": {req["operation"]: {"href": base + o["oid"]}}}
               for o in req["objects"]]
    return web.json_response({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")
async def put(request):
    left = request.content_length or 0
    while chunk := await request.content.readany():
        left -= len(chunk)
    return web.Response(status=200 if left == 0 else 400)
async def get(request):
    path = paths.get(request.match_info["oid"])
    return web.FileResponse(path) if path else web.Response(status=404)
async def main():
    app = web.Application()
    app.router.add_post("/objects/batch", batch)
    app.router.add_put("/objects/{oid}", put)
    app.router.add_get("/objects/{oid}", get)
    runner = web.AppRunner(app, access_log=None, read_bufsize=1 << 20)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class TransferFailed(Exception):
    """A non-2xx answer, a batch error, or bytes that are not the object's."""


class PeerUnavailable(Exception):
    """giftless could not be installed or started."""


@dataclass(frozen=True)
class Obj:
    path: Path
    oid: str
    size: int


@dataclass(frozen=True)
class Workload:
    name: str
    objects: list[Obj]

    @property
    def size(self) -> int:
        return sum(o.size for o in self.objects)

    @property
    def streams(self) -> int:
        return min(CONCURRENCY, len(self.objects))


@dataclass(frozen=True)
class Measure:
    mbps: float
    cpu: float  # server CPU seconds / wall seconds
    client_cpu: float  # this process's CPU seconds / wall seconds


# -- small helpers ---------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1 x 256 MiB and 8 x 16 MiB instead of 1 x 2 GiB and 32 x 64 MiB")
    p.add_argument("--skip-giftless", action="store_true", help="measure only the ceilings and the daemon")
    p.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the run's lfsbench-* dir (data, stores, logs) is created (default: the temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run's dir for inspection")
    p.add_argument("--workers", type=worker_counts, default=[1], metavar="N[,N...]",
                   help="measure the daemon (serve --workers N) and the bare aiohttp server with N processes "
                        "for each N (default 1; e.g. 1,2)")
    return p.parse_args()


def worker_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 1,2, got {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"expected distinct numbers >= 1, got {text!r}")
    return counts




def wait_http(url: str, proc: subprocess.Popen, any_status: bool = False, timeout: float = 60.0) -> None:
    """Until `url` answers 200 (or anything at all, with any_status) or `proc` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError:
            if any_status:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")




def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of processes and their children (gunicorn's workers, the daemon's)."""
    total = 0.0
    for pid in pids:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += sum(proc.cpu_times()[:2])
            except psutil.Error:
                pass
    return total


def tail_of(path: Path, where: str, n: int = 5) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.strip().splitlines()[-n:]
    return "".join(f"\n    {where}: {line[:300]}" for line in lines)


# -- test data -------------------------------------------------------------------------------

def make_objects(root: Path, tag: str, count: int, size: int) -> list[Obj]:
    """`count` files of `size` random bytes, hashed while written."""
    root.mkdir(parents=True, exist_ok=True)
    objects = []
    for i in range(count):
        path = root / f"{tag}-{i:03d}.bin"
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for offset in range(0, size, CHUNK):
                chunk = os.urandom(min(CHUNK, size - offset))
                digest.update(chunk)
                f.write(chunk)
        objects.append(Obj(path, digest.hexdigest(), size))
    return objects


def make_workloads(data: Path, quick: bool) -> list[Workload]:
    start = time.perf_counter()
    workloads = [Workload(f"{count} x {size // MIB} MiB", make_objects(data, f"w{count}x{size // MIB}", count, size))
                 for count, size in (QUICK_WORKLOADS if quick else FULL_WORKLOADS)]
    total = sum(w.size for w in workloads)
    print(f"test data: {total / MIB:.0f} MiB in {sum(len(w.objects) for w in workloads)} files, "
          f"generated and hashed in {time.perf_counter() - start:.1f} s ({data})", flush=True)
    return workloads


# -- the machine's ceilings ------------------------------------------------------------------

def hash_write_fsync(obj: Obj, dest: Path) -> None:
    """What the daemon does with an upload, minus the network: sha256 + write in 1 MiB chunks, fsync."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(obj.path, "rb", buffering=0) as src, open(dest, "wb", buffering=0) as out:
        while n := src.readinto(buf):
            digest.update(view[:n])
            out.write(view[:n])
        os.fsync(out.fileno())
    if digest.hexdigest() != obj.oid:
        raise TransferFailed(f"{obj.path} no longer hashes to its OID")


def upload_ceiling(workload: Workload, dest: Path, threads: int) -> tuple[float, float]:
    """(MB/s, CPU seconds per MB) of hash_write_fsync over the workload's objects, `threads`
    objects at a time. The CPU is this process's, every thread: what storing a byte costs the
    machine's cores whoever does it."""
    dest.mkdir(parents=True, exist_ok=True)
    os.sync()
    cpu = time.process_time()
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda o: hash_write_fsync(o, dest / o.path.name), workload.objects))
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    shutil.rmtree(dest)
    return workload.size / seconds / MB, cpu / (workload.size / MB)


def send_files(conn: socket.socket, objects: list[Obj]) -> None:
    """sendfile(2) each object into `conn`, then wait for the reader's byte count."""
    for obj in objects:
        with open(obj.path, "rb") as f:
            offset = 0
            while offset < obj.size:
                offset += os.sendfile(conn.fileno(), f.fileno(), offset, obj.size - offset)
    conn.shutdown(socket.SHUT_WR)
    got = int(conn.recv(64) or b"-1")
    if got != sum(o.size for o in objects):
        raise TransferFailed(f"the reader got {got} bytes, expected {sum(o.size for o in objects)}")


def download_ceiling(workload: Workload) -> float:
    """MB/s of page-cached files sendfile'd into loopback sockets that another process drains."""
    streams = workload.streams
    conns: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        reader = subprocess.Popen([sys.executable, "-c", SINK_CODE, str(server.getsockname()[1]), str(streams)])
        try:
            conns = [server.accept()[0] for _ in range(streams)]
            for conn in conns:
                conn.settimeout(None)
            shares = [workload.objects[i::streams] for i in range(streams)]
            os.sync()
            start = time.perf_counter()
            with ThreadPoolExecutor(streams) as pool:
                list(pool.map(send_files, conns, shares))
            seconds = time.perf_counter() - start
        finally:
            for conn in conns:
                conn.close()
            stop_process(reader)
    return workload.size / seconds / MB


# -- the servers -----------------------------------------------------------------------------

class BareServer:
    """BARE_SERVER_CODE in its own process, serving `objects`."""

    name = "bare"

    def __init__(self, root: Path, objects: list[Obj]) -> None:
        self.index = root / "bare-objects.json"
        self.index.write_text(json.dumps({o.oid: str(o.path) for o in objects}))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.batch_url = f"{self.base}/objects/batch"
        self.batch_headers: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER_CODE, str(self.port), str(self.index)],
                                     start_new_session=True)
        wait_http(f"{self.base}/", self.proc, any_status=True)

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        stop_process(self.proc)


class BareAiohttp:
    """BARE_AIOHTTP_CODE in `processes` processes sharing one port (SO_REUSEPORT)."""

    def __init__(self, root: Path, objects: list[Obj], processes: int) -> None:
        self.name = f"bare-aio x{processes}"
        self.index = root / "bare-objects.json"
        self.index.write_text(json.dumps({o.oid: str(o.path) for o in objects}))
        self.processes = processes
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.batch_url = f"{self.base}/objects/batch"
        self.batch_headers: dict[str, str] = {}
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        for _ in range(self.processes):
            proc = subprocess.Popen([sys.executable, "-c", BARE_AIOHTTP_CODE, str(self.port), str(self.index)],
                                    stdout=subprocess.PIPE, start_new_session=True)
            self.procs.append(proc)
            if proc.stdout.readline() != b"ready\n":
                raise RuntimeError(f"the bare aiohttp server exited with {proc.wait()} during start-up")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)


class Daemon:
    """modelrepo serve (--workers N) on a fresh data dir, with one private model bench/m."""

    def __init__(self, root: Path, workers: int = 1) -> None:
        self.workers = workers
        self.name = f"daemon x{workers}"
        self.data = root / f"daemon-data-{workers}"
        self.log_path = root / f"daemon-{workers}.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.batch_url = f"{self.base}/bench/m.git/info/lfs/objects/batch"
        self.batch_headers: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        exe = Path(sys.executable).parent / "modelrepo"
        cmd = [str(exe) if exe.exists() else "modelrepo", "serve", "--data", str(self.data),
               "--listen", f"127.0.0.1:{self.port}", "--workers", str(self.workers)]
        # Type=notify as under systemd: READY=1 comes once every worker serves.
        notify_path = self.data.parent / f"notify-{self.workers}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(0.5)
            env = {**os.environ, "MODELREPO_LOG__LEVEL": "warning", "NOTIFY_SOCKET": str(notify_path)}
            with open(self.log_path, "wb") as log:
                # Own session: a Ctrl-C reaches the bench only, which then stops the daemon cleanly.
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
            deadline = time.monotonic() + 120
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon did not start{tail_of(self.log_path, 'daemon log')}")
                try:
                    if notify.recv(4096).startswith(b"READY=1"):
                        break
                except TimeoutError:
                    pass
        notify_path.unlink()
        wait_http(f"{self.base}/healthz", self.proc)
        token = (self.data / "admin.token").read_text().strip()
        self.batch_headers = {"Authorization": f"Bearer {token}"}
        self.api("/api/v1/namespaces", {"name": "bench"})
        self.api("/api/v1/models", {"namespace": "bench", "name": "m", "visibility": "private"})

    def api(self, path: str, body: dict) -> None:
        req = urllib.request.Request(f"{self.base}{path}", method="POST", data=json.dumps(body).encode(),
                                     headers={**self.batch_headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30):
            pass

    def log_lines(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "created user 'admin'" not in line and "bootstrap" not in line]

    def pids(self) -> list[int]:
        return [self.proc.pid]  # the supervisor's children, the workers, are counted with it

    def stop(self) -> None:
        stop_process(self.proc, timeout=60)


class Giftless:
    """giftless under gunicorn, 8 sync workers (8 transfers at once), anonymous read+write, local
    storage in the run's dir. Its legacy URL layout is /<org>/<repo>/objects/batch.

    Not threads (e.g. 4 workers x 2 threads): giftless builds its list of authenticators lazily and
    without a lock, so when a worker's first two requests arrive together the list can lose the JWT
    provider, and that worker then answers every pre-authorized transfer with 403."""

    name = "giftless"

    def __init__(self, root: Path) -> None:
        self.root = root / "giftless"
        self.log_path = self.root / "gunicorn.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.batch_url = f"{self.base}/bench/m/objects/batch"
        self.batch_headers: dict[str, str] = {}  # anonymous
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        venv = ensure_giftless_venv(GIFTLESS_VENV)
        self.root.mkdir(parents=True)
        config = self.root / "giftless.yaml"
        # JSON is YAML: no yaml module needed here.
        config.write_text(json.dumps({
            "AUTH_PROVIDERS": ["giftless.auth.allow_anon:read_write"],
            "TRANSFER_ADAPTERS": {"basic": {
                "factory": "giftless.transfer.basic_streaming:factory",
                "options": {"storage_class": "giftless.storage.local_storage:LocalStorage",
                            "storage_options": {"path": str(self.root / "storage")}},
            }},
        }, indent=2))
        cmd = [str(venv / "bin" / "gunicorn"), "--workers", str(CONCURRENCY), "--timeout", "600",
               "--bind", f"127.0.0.1:{self.port}", "--chdir", str(self.root), "giftless.wsgi_entrypoint:app"]
        env = {**os.environ, "GIFTLESS_CONFIG_FILE": str(config)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            wait_http(f"{self.base}/", self.proc, any_status=True)
        except RuntimeError as exc:
            raise PeerUnavailable(f"{exc}{tail_of(self.log_path, 'gunicorn')}") from None

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> None:
        stop_process(self.proc)


def ensure_giftless_venv(venv: Path) -> Path:
    """The giftless venv with exactly GIFTLESS_PINS, (re)built when missing or pinned differently."""
    marker = venv / "bench-pins.txt"
    wanted = "\n".join(GIFTLESS_PINS) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv
    print(f"installing giftless into {venv} ...", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = ([sys.executable, "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", *GIFTLESS_PINS],
             [str(venv / "bin" / "python"), "-c", "import giftless.app, giftless.transfer.basic_streaming, gunicorn"])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=venv.parent)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
            raise PeerUnavailable(f"{' '.join(cmd[:4])} ... exited with {proc.returncode}: "
                                  + ("; ".join(errors) or proc.stderr.strip()[-1500:]))
    marker.write_text(wanted)
    return venv


Server = BareServer | BareAiohttp | Daemon | Giftless


# -- the git-lfs-like client -----------------------------------------------------------------

async def expect_ok(resp: aiohttp.ClientResponse, what: str) -> None:
    if not 200 <= resp.status < 300:
        body = (await resp.read())[:500].decode(errors="replace")
        raise TransferFailed(f"{what}: HTTP {resp.status} {body}")


async def batch(session: aiohttp.ClientSession, server: Server, operation: str,
                objects: list[Obj]) -> dict[str, dict]:
    """{oid: actions} from one batch call per BATCH_MAX objects; any per-object error fails."""
    actions: dict[str, dict] = {}
    headers = {**server.batch_headers, "Content-Type": LFS_TYPE, "Accept": LFS_TYPE}
    for i in range(0, len(objects), BATCH_MAX):
        body = {"operation": operation, "transfers": ["basic"],
                "objects": [{"oid": o.oid, "size": o.size} for o in objects[i:i + BATCH_MAX]]}
        async with session.post(server.batch_url, data=json.dumps(body), headers=headers) as resp:
            await expect_ok(resp, f"{operation} batch")
            answer = await resp.json(content_type=None)
        for entry in answer["objects"]:
            if "error" in entry or operation not in entry.get("actions", {}):
                raise TransferFailed(f"{operation} batch: no {operation} action for {entry.get('oid')}: {entry}")
            actions[entry["oid"]] = entry["actions"]
    return actions


async def upload(session: aiohttp.ClientSession, obj: Obj, actions: dict) -> None:
    """PUT streamed from the file (aiohttp reads it in chunks in its executor), then verify."""
    put = actions["upload"]
    headers = {**put.get("header", {}), "Content-Type": "application/octet-stream", "Content-Length": str(obj.size)}
    with open(obj.path, "rb") as f:
        async with session.put(put["href"], data=f, headers=headers) as resp:
            await expect_ok(resp, f"PUT {obj.oid[:12]}")
    check = actions.get("verify")
    if check:
        headers = {**check.get("header", {}), "Content-Type": LFS_TYPE, "Accept": LFS_TYPE}
        async with session.post(check["href"], data=json.dumps({"oid": obj.oid, "size": obj.size}),
                                headers=headers) as resp:
            await expect_ok(resp, f"verify {obj.oid[:12]}")


async def download(session: aiohttp.ClientSession, obj: Obj, actions: dict) -> None:
    """GET into a sink that counts the bytes and keeps the first and last CHECK_BYTES."""
    get = actions["download"]
    size, head = 0, bytearray()
    tail: collections.deque[bytes] = collections.deque()  # the last chunks, at least CHECK_BYTES of them
    tail_size = 0
    async with session.get(get["href"], headers=get.get("header", {})) as resp:
        await expect_ok(resp, f"GET {obj.oid[:12]}")
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if len(head) < CHECK_BYTES:
                head += chunk[:CHECK_BYTES - len(head)]
            tail.append(chunk)
            tail_size += len(chunk)
            while tail_size - len(tail[0]) >= CHECK_BYTES:
                tail_size -= len(tail.popleft())
    n = min(CHECK_BYTES, obj.size)
    with open(obj.path, "rb") as f:
        want_head, want_tail = os.pread(f.fileno(), n, 0), os.pread(f.fileno(), n, obj.size - n)
    if size != obj.size or bytes(head) != want_head or b"".join(tail)[-n:] != want_tail:
        raise TransferFailed(f"GET {obj.oid[:12]}: {size} bytes, expected {obj.size}, or not the object's bytes")


async def transfer_all(server: Server, operation: str, objects: list[Obj]) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, read_bufsize=MIB) as session:
        actions = await batch(session, server, operation, objects)
        slots = asyncio.Semaphore(CONCURRENCY)
        move = upload if operation == "upload" else download

        async def one(obj: Obj) -> None:
            async with slots:
                await move(session, obj, actions[obj.oid])

        await asyncio.gather(*(one(o) for o in objects))


def timed_transfer(server: Server, operation: str, objects: list[Obj]) -> Measure:
    os.sync()
    cpu_before = cpu_seconds(server.pids())
    client_before = time.process_time()
    start = time.perf_counter()
    asyncio.run(transfer_all(server, operation, objects))
    seconds = time.perf_counter() - start
    client = time.process_time() - client_before
    cpu = cpu_seconds(server.pids()) - cpu_before
    return Measure(sum(o.size for o in objects) / seconds / MB, cpu / seconds, client / seconds)


# -- measurements ----------------------------------------------------------------------------



class Peer:
    """giftless, or why it is not measured: its failures blank its columns, they never fail the run."""

    def __init__(self, skip: bool, root: Path, servers: list) -> None:
        self.server: Giftless | None = None
        if skip:
            self.note = "skipped (--skip-giftless)"
            return
        server = Giftless(root)
        servers.append(server)
        try:
            server.start()
        except PeerUnavailable as exc:
            self.drop(f"unavailable: {exc}")
            return
        self.server = server
        self.note = (f"{GIFTLESS_PINS[0]} + {GIFTLESS_PINS[1]} ({CONCURRENCY} sync workers), local storage; "
                     "it neither hashes nor fsyncs uploads (its verify checks the size only)")

    def drop(self, why: str) -> None:
        print(f"  giftless dropped, continuing without it: {why}", flush=True)
        if self.server is not None:
            self.server.stop()
        self.server = None
        self.note = why.splitlines()[0][:300]

    def measure(self, operation: str, objects: list[Obj]) -> Measure | None:
        if self.server is None:
            return None
        try:
            return timed_transfer(self.server, operation, objects)
        except (TransferFailed, aiohttp.ClientError, OSError) as exc:
            self.drop(f"{operation} failed: {exc}{tail_of(self.server.log_path, 'gunicorn')}")
            return None


@dataclass
class Row:
    workload: Workload
    operation: str
    workers: int
    ceiling: float
    client_max: float
    bare_aio: Measure
    daemon: Measure
    giftless: Measure | None
    store_cpu: float  # CPU seconds per MB to sha256 + write + fsync, from the ceiling run


def measure_ceilings(workload: Workload, scratch: Path) -> tuple[float, float, str, float]:
    """(upload ceiling, download ceiling, how they were taken, CPU seconds per MB stored)."""
    one, store_cpu = upload_ceiling(workload, scratch / "ceiling", threads=1)
    how = f"upload (sha256+write+fsync) 1 thread {one:.0f}"
    best = one
    if workload.streams > 1:
        many, _ = upload_ceiling(workload, scratch / "ceiling", threads=workload.streams)
        best = max(one, many)
        used = "1 thread" if best == one else f"{workload.streams} threads"
        how += f", {workload.streams} threads {many:.0f} -> uses {used}"
    send = download_ceiling(workload)
    streams = f"{workload.streams} stream{'s' if workload.streams > 1 else ''}"
    how += f"; download (sendfile -> loopback) {streams} {send:.0f}"
    print(f"  ceilings   {how} MB/s", flush=True)
    return best, send, how, store_cpu


def report(server: str, operation: str, result: Measure | None, ceiling: float | None = None) -> None:
    if result is not None:
        share = f", {result.mbps / ceiling:.2f} of ceiling" if ceiling else ""
        print(f"  {server:<10} {operation:<8} {result.mbps:6.0f} MB/s  (cpu {result.cpu:.0%}, client cpu "
              f"{result.client_cpu:.0%}{share})", flush=True)


def measure_workload(workload: Workload, scratch: Path, bare: BareServer, pairs: list[tuple[BareAiohttp, Daemon]],
                     peer: Peer) -> tuple[list[Row], str]:
    """Ceilings, then the bare server, per worker count the bare aiohttp server and the daemon, and
    giftless; returns the rows and the ceilings' note."""
    print(f"\n{workload.name}:", flush=True)
    up, down, how, store_cpu = measure_ceilings(workload, scratch)
    rows = []
    for operation, ceiling in (("upload", up), ("download", down)):
        client_max = timed_transfer(bare, operation, workload.objects)
        report("bare", operation, client_max)
        for aio, daemon in pairs:
            reference = timed_transfer(aio, operation, workload.objects)
            report(aio.name, operation, reference)
            ours = timed_transfer(daemon, operation, workload.objects)
            report(daemon.name, operation, ours, ceiling)
            rows.append(Row(workload, operation, daemon.workers, ceiling, client_max.mbps, reference, ours, None,
                            store_cpu))
    for row in rows[::len(pairs)]:  # giftless once per operation, beside the first worker count
        row.giftless = peer.measure(row.operation, workload.objects)
        report("giftless", row.operation, row.giftless)
    return rows, how


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISS"


def print_table(rows: list[Row], ceilings: dict[str, str], samplers: list[tuple[Daemon, RssSampler]],
                peer: Peer) -> None:
    print("\nMB/s = 10^6 bytes/s of object data; warm page cache; one run each.\n"
          "ceiling: this machine without HTTP (upload: sha256+write+fsync; download: sendfile -> loopback -> reader).\n"
          "client max: this client against a bare HTTP server (threads; upload drained, download sendfile'd).\n"
          "N: processes of the daemon (serve --workers N) and of the bare aiohttp server (SO_REUSEPORT), which\n"
          "  reads and drops upload bodies and sendfile's downloads: aiohttp's own cost, none of the daemon's work.\n"
          "ratio = daemon / ceiling; /aio = daemon / bare aiohttp with as many processes (uploads: target >= "
          f"{AIO_UPLOAD_TARGET});\n/max = daemon / client max; vs giftless = daemon / giftless.\n"
          "cpu: the server's CPU (100% = one core, all processes summed); cli: the client's CPU in the daemon's phase.\n")
    header = (f"{'workload':<14} {'op':<8} {'N':>2} {'ceiling':>7} {'client max':>10} {'bare-aio':>8} {'cpu':>5} "
              f"{'daemon':>6} {'cpu':>5} {'cli':>5} {'ratio':>5} {'target':>6} {'':<4} {'/aio':>4} {'':<4} {'/max':>4} "
              f"{'giftless':>8} {'cpu':>5} {'vs giftless':>11}")
    print(header)
    print("-" * (len(header) + 5))
    for row in rows:
        ratio = row.daemon.mbps / row.ceiling
        target = TARGETS[row.operation]
        versus_aio = row.daemon.mbps / row.bare_aio.mbps
        aio_verdict = verdict(versus_aio >= AIO_UPLOAD_TARGET) if row.operation == "upload" else ""
        line = (f"{row.workload.name:<14} {row.operation:<8} {row.workers:>2} {row.ceiling:7.0f} {row.client_max:10.0f} "
                f"{row.bare_aio.mbps:8.0f} {row.bare_aio.cpu:5.0%} "
                f"{row.daemon.mbps:6.0f} {row.daemon.cpu:5.0%} {row.daemon.client_cpu:5.0%} {ratio:5.2f} "
                f"{'>=' + str(target):>6} {verdict(ratio >= target):<4} {versus_aio:4.2f} {aio_verdict:<4} "
                f"{row.daemon.mbps / row.client_max:4.2f}")
        if row.giftless is not None:
            versus = row.daemon.mbps / row.giftless.mbps
            line += f" {row.giftless.mbps:8.0f} {row.giftless.cpu:5.0%} {versus:11.2f} {verdict(versus > 1)}"
        else:
            line += f" {'n/a':>8}"
        print(line)
    for name, how in ceilings.items():
        print(f"ceilings {name}: {how} MB/s")
    print_cpu_budget(rows)
    for daemon, sampler in samplers:
        peak = sampler.peak / MIB
        print(f"{daemon.name} RSS (largest process): baseline {sampler.baseline / MIB:.1f} MiB, peak {peak:.1f} MiB, "
              f"at the end {sampler.last / MIB:.1f} MiB (target < {RSS_TARGET_MIB} MiB) {verdict(peak < RSS_TARGET_MIB)}")
    print(f"giftless: {peer.note}")
    for daemon, _ in samplers:
        log = daemon.log_lines()
        print(f"{daemon.name} log: {len(log)} lines" + "".join(f"\n  {line[:300]}" for line in log[-5:]))


def print_cpu_budget(rows: list[Row]) -> None:
    """Whether the upload target fits in this machine's cores at all, and what the daemon spends
    beyond the work no server can skip.

    The bare aiohttp server only reads the socket; a server that stores what it receives must also
    hash and write every byte, and the client shares the cores. At the target rate (0.7 x bare-aio)
    the floor is rate x (client + aiohttp's reading + sha256/write/fsync), each per MB, measured in
    this run. When that floor exceeds the cores, the target is beyond the machine, not the daemon;
    the daemon's own overhead is its CPU per MB over the floor's server part."""
    cores = os.cpu_count() or 1
    print(f"\nCPU budget of the uploads (ms of CPU per MB; {cores} cores):")
    for row in (r for r in rows if r.operation == "upload"):
        aio, ours = row.bare_aio, row.daemon
        client, reading, storing = aio.client_cpu / aio.mbps, aio.cpu / aio.mbps, row.store_cpu
        rate = AIO_UPLOAD_TARGET * aio.mbps
        needed = rate * (client + reading + storing)
        daemon = ours.cpu / ours.mbps
        print(f"  {row.workload.name:<14} N={row.workers}: target {rate:.0f} MB/s needs {needed:.2f} cores "
              f"(client {client * 1000:.2f} + aiohttp reading {reading * 1000:.2f} + sha256/write/fsync "
              f"{storing * 1000:.2f} ms/MB) -> {'fits' if needed <= cores else 'beyond this machine'}; "
              f"daemon {daemon * 1000:.2f} ms/MB = {daemon / (reading + storing):.2f} x its floor "
              f"({(reading + storing) * 1000:.2f})")


# -- the run ---------------------------------------------------------------------------------

def warm_up(servers: list[Server], peer: Peer, objects: list[Obj]) -> None:
    """An untimed small upload and download per server: imports, first connections, first files."""
    for operation in ("upload", "download"):
        for server in servers:
            timed_transfer(server, operation, objects)
        peer.measure(operation, objects)


def run(args: argparse.Namespace, root: Path, servers: list) -> int:
    # Everything shares the machine's cores: other work (a test suite) skews every figure.
    print(f"{os.cpu_count()} cores, load average before the bench {os.getloadavg()[0]:.2f} "
          "(well above 0 means other work is running)", flush=True)
    workloads = make_workloads(root / "data", args.quick)
    warm = make_objects(root / "data", "warm-up", 1, MIB)
    every = [o for w in workloads for o in w.objects] + warm
    bare = BareServer(root, every)
    pairs = [(BareAiohttp(root, every, n), Daemon(root, n)) for n in args.workers]
    for server in (bare, *(s for pair in pairs for s in pair)):
        servers.append(server)
        server.start()
    samplers = [(daemon, RssSampler(daemon.proc.pid, tree=True)) for _, daemon in pairs]
    for _, sampler in samplers:
        sampler.start()
    peer = Peer(args.skip_giftless, root, servers)
    print(", ".join(f"{d.name} {d.base} (RSS {s.baseline / MIB:.1f} MiB)" for d, s in samplers)
          + f", bare server {bare.base}" + (f", giftless {peer.server.base}" if peer.server else ""), flush=True)
    warm_up([bare, *(s for pair in pairs for s in pair)], peer, warm)
    rows: list[Row] = []
    ceilings: dict[str, str] = {}
    for workload in workloads:
        new_rows, ceilings[workload.name] = measure_workload(workload, root, bare, pairs, peer)
        rows += new_rows
    for _, sampler in samplers:
        sampler.stop()
    print_table(rows, ceilings, samplers, peer)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM gets the same clean-up as Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    args.scratch.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="lfsbench-", dir=args.scratch))
    servers: list = []
    try:
        return run(args, root, servers)
    except (TransferFailed, aiohttp.ClientError, RuntimeError, OSError) as exc:
        log = next((f"{tail_of(s.log_path, 'daemon log', 20)}" for s in servers if isinstance(s, Daemon)), "")
        print(f"\nFAILED: {exc}{log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        for server in reversed(servers):
            server.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
