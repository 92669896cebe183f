"""Git smart HTTP throughput of the modelrepo daemon against ``git http-backend`` behind lighttpd.

Why: the daemon pipes git's ``--stateless-rpc`` engines through aiohttp. Git does the real work
(pack generation, index-pack, fsck) in both setups, so any difference between the two servers is
the cost of our transport: the event loop copying bodies, back-pressure, the hooks, the catalog.
The stock CGI setup that git ships is the yardstick; we aim to stay within 15% of it, to serve
many clones at once without failures, and to keep the daemon's own memory flat however big the
repository (bodies are streamed, never buffered).

What it does, in one run:
  1. builds a deterministic repository (seeded incompressible bytes: large "weight" files plus
     hundreds of small files over several commits), repacked once so pushes reuse its pack;
  2. starts the daemon (fresh data dir) and lighttpd + git http-backend (fresh project root;
     its bare repositories get the daemon's repository config, so both run the same git checks);
  3. times ``git push`` into a fresh empty repository and ``git clone --no-checkout`` of it,
     ``--repeat`` times per server, interleaved and alternating which server goes first;
  4. launches ``--concurrency`` clones at once against each server and counts failures;
  5. samples the daemon's RSS every 50 ms throughout.

How to read it: times are medians; MiB/s is the source pack size over the median time. The
ratio is daemon / http-backend (lower is better; > 1 means the daemon is slower) and prints MISS
when above the target. Pushes to the daemon also run its pre-/post-receive hooks, which
http-backend does not have: that cost is part of what we measure. lighttpd must buffer a chunked
push body to a temp file before it can start the CGI (CGI needs CONTENT_LENGTH); the daemon
streams it. The RSS growth should stay small and independent of --size-mib.

Exit status: 0 when every git command succeeded (a MISS is a finding, not a failure), 1 when any
git command failed, 130 when interrupted.

    /work/main/.venv/bin/python bench/git_http.py [--size-mib 200] [--repeat 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from modelrepo.git.repos import REPO_CONFIG

from common import RssSampler, free_port, stop_process  # bench/common.py

MIB = 1024 * 1024
TARGET_RATIO = 1.15
BRANCH = "main"
LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
# http-backend's repositories get the daemon's own repository config (receive.fsckObjects, ...), so
# both servers run the same git checks; plus anonymous push and no auto-gc.
PEER_REPO_CONFIG = {**REPO_CONFIG, "http.receivepack": "true", "gc.auto": "0"}


class GitFailed(Exception):
    def __init__(self, args: list[str], rc: int, stderr: str) -> None:
        command = re.sub(r"//[^/@\s]+@", "//***@", " ".join(args))  # no token in the message
        super().__init__(f"{command} exited with {rc}:\n{stderr.strip()[-2000:]}")


# -- small helpers ---------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=200, help="content size of the test repository (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="timed push+clone runs per server (default 3)")
    p.add_argument("--concurrency", type=int, default=32, help="simultaneous clones per server (default 32)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated content (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (repos, logs) for inspection")
    return p.parse_args()




def git_env(home: Path) -> dict[str, str]:
    """An environment no user or system git config (credential helpers, LFS filters) can reach."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    }


def git(env: dict[str, str], *args: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None) -> str:
    cmd = ["git", *args]
    proc = subprocess.run(cmd, cwd=cwd, env={**env, **(extra_env or {})}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GitFailed(cmd, proc.returncode, proc.stderr)
    return proc.stdout.strip()


def timed_git(env: dict[str, str], *args: str, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    git(env, *args, cwd=cwd)
    return time.perf_counter() - start


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")




# -- the test repository ---------------------------------------------------------------------

def plan_files(size_mib: int, rng: random.Random) -> list[tuple[str, int]]:
    """~85% of the bytes in 4-32 MiB "weight" files, the rest in small files of 1-256 KiB."""
    budget = size_mib * MIB
    big_budget = budget * 85 // 100
    files: list[tuple[str, int]] = []
    while big_budget >= MIB:
        size = min(big_budget, rng.randint(4 * MIB, 32 * MIB))
        files.append((f"weights/shard-{len(files):03d}.bin", size))
        big_budget -= size
    small_budget = budget - sum(size for _, size in files)
    n = 0
    while small_budget > 0:
        size = min(small_budget, int(2 ** rng.uniform(10, 18)))
        files.append((f"data/part-{n % 16:02d}/item-{n:05d}.bin", size))
        small_budget -= size
        n += 1
    return files


def write_file(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def commit(env: dict[str, str], work: Path, number: int, message: str) -> None:
    date = f"2024-01-{number:02d}T12:00:00+0000"
    git(env, "add", "-A", cwd=work)
    git(env, "commit", "-q", "-m", message, cwd=work,
        extra_env={"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date})


def build_repo(work: Path, env: dict[str, str], size_mib: int, seed: int, commits: int = 4) -> int:
    """Create the source repository; returns its pack size in bytes."""
    rng = random.Random(seed)
    git(env, "init", "-q", "-b", BRANCH, str(work))
    for key, value in (("gc.auto", "0"), ("core.compression", "1")):
        git(env, "config", key, value, cwd=work)
    files = plan_files(size_mib, rng)
    smalls: list[tuple[str, int]] = []  # small files already committed
    for number in range(1, commits + 1):
        if smalls:  # later commits also rewrite a few small files and patch the first weight file
            for rel, size in rng.sample(smalls, min(8, len(smalls))):
                write_file(work, rel, rng.randbytes(size))
            with open(work / files[0][0], "r+b") as f:
                f.seek(rng.randrange(max(1, files[0][1] - 65536)))
                f.write(rng.randbytes(65536))
        batch = files[number - 1::commits]
        for rel, size in batch:
            write_file(work, rel, rng.randbytes(size))
        smalls += [(rel, size) for rel, size in batch if size < MIB]
        commit(env, work, number, f"bench commit {number}")
    git(env, "repack", "-a", "-d", "-q", cwd=work)
    return sum(p.stat().st_size for p in (work / ".git/objects/pack").glob("*.pack"))


# -- the two servers -------------------------------------------------------------------------

class Daemon:
    """modelrepo serve on a fresh data dir; every new_repo() is a fresh public model."""

    name = "daemon"

    def __init__(self, root: Path) -> None:
        self.data = root / "daemon-data"
        self.log_path = root / "daemon.log"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.token = ""
        self.count = 0

    def start(self) -> None:
        exe = Path(sys.executable).parent / "modelrepo"
        cmd = [str(exe) if exe.exists() else "modelrepo", "serve", "--data", str(self.data),
               "--listen", f"127.0.0.1:{self.port}"]
        # Plain git transport against plain git: the generated repository holds big and *.bin
        # blobs that the push rules would (rightly) send to LFS, so the rules are relaxed here;
        # they still run (rev-list + cat-file over every pushed object) and are timed.
        env = {**os.environ, "MODELREPO_LOG__LEVEL": "warning", "MODELREPO_PUSH__WEIGHT_PATTERNS": "[]",
               "MODELREPO_PUSH__MAX_PLAIN_BLOB": "1 GiB"}
        with open(self.log_path, "wb") as log:
            # Own session: a Ctrl-C reaches the bench only, which then stops the daemon cleanly.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        wait_http(f"{self.base}/healthz", self.proc)
        self.token = (self.data / "admin.token").read_text().strip()
        self.api("POST", "/api/v1/namespaces", {"name": "bench"})

    def api(self, method: str, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"{self.base}{path}", method=method, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def new_repo(self) -> tuple[str, str]:
        """(push URL with credentials, anonymous clone URL) of a fresh empty model."""
        self.count += 1
        name = f"m{self.count}"
        self.api("POST", "/api/v1/models", {"namespace": "bench", "name": name, "visibility": "public"})
        return (f"http://admin:{self.token}@127.0.0.1:{self.port}/bench/{name}.git",
                f"{self.base}/bench/{name}.git")

    def log_lines(self) -> list[str]:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines() if "created user 'admin'" not in line and "bootstrap" not in line]

    def stop(self) -> None:
        stop_process(self.proc)


class HttpBackend:
    """git http-backend as a CGI under lighttpd, anonymous push allowed (http.receivepack)."""

    name = "http-backend"

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root / "peer"
        self.repos = self.root / "repos"
        self.env = env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.count = 0

    def config(self) -> str:
        backend = Path(git(self.env, "--exec-path")) / "git-http-backend"
        cgi_env = {"GIT_PROJECT_ROOT": str(self.repos), "GIT_HTTP_EXPORT_ALL": "1", "PATH": self.env["PATH"],
                   "HOME": self.env["HOME"], "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
        setenv = ", ".join(f'"{k}" => "{v}"' for k, v in cgi_env.items())
        return "\n".join([
            'server.modules = ("mod_alias", "mod_cgi", "mod_setenv")',
            'server.bind = "127.0.0.1"',
            f"server.port = {self.port}",
            f'server.document-root = "{self.root / "www"}"',
            f'server.errorlog = "{self.root / "error.log"}"',
            f'server.upload-dirs = ("{self.root / "upload"}")',
            # CGI needs CONTENT_LENGTH, so a chunked push body must be buffered (0); responses stream.
            "server.stream-request-body = 0",
            "server.stream-response-body = 2",
            "server.max-fds = 4096",
            f'alias.url = ("/git" => "{backend}")',
            '$HTTP["url"] =~ "^/git" {',
            '  cgi.assign = ("" => "")',
            f"  setenv.set-environment = ({setenv})",
            "}",
            "",
        ])

    def start(self) -> None:
        for sub in ("repos", "www", "upload"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "www" / "ok.txt").write_text("ok\n")
        conf = self.root / "lighttpd.conf"
        conf.write_text(self.config())
        with open(self.root / "stderr.log", "wb") as log:
            self.proc = subprocess.Popen([LIGHTTPD, "-D", "-f", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_http(f"{self.base}/ok.txt", self.proc)

    def new_repo(self) -> tuple[str, str]:
        self.count += 1
        path = self.repos / f"r{self.count}.git"
        git(self.env, "init", "-q", "--bare", "-b", BRANCH, str(path))
        for key, value in PEER_REPO_CONFIG.items():
            git(self.env, "config", key, value, cwd=path)
        url = f"{self.base}/git/r{self.count}.git"
        return url, url

    def stop(self) -> None:
        stop_process(self.proc)


# -- measurements ----------------------------------------------------------------------------



def push_once(env: dict[str, str], server: Daemon | HttpBackend, src: Path) -> tuple[float, str]:
    """Time a push of the whole source into a fresh repository; returns (seconds, clone URL)."""
    push_url, clone_url = server.new_repo()
    return timed_git(env, "push", "-q", push_url, f"{BRANCH}:refs/heads/{BRANCH}", cwd=src), clone_url


def clone_once(env: dict[str, str], url: str, dest: Path, head: str) -> float:
    seconds = timed_git(env, "clone", "-q", "--no-checkout", url, str(dest))
    got = git(env, "rev-parse", f"refs/heads/{BRANCH}", cwd=dest)
    shutil.rmtree(dest)
    if got != head:
        raise GitFailed(["git", "clone", url], 0, f"cloned {BRANCH} is {got}, expected {head}")
    return seconds


async def clone_many(env: dict[str, str], url: str, dest: Path, n: int) -> tuple[int, float, str]:
    """n clones launched at once; returns (failures, wall seconds, stderr of the first failure)."""
    start = time.perf_counter()
    procs = [await asyncio.create_subprocess_exec("git", "clone", "-q", "--no-checkout", url, str(dest / f"c{i}"),
                                                  env=env, stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.PIPE) for i in range(n)]
    try:
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
    wall = time.perf_counter() - start
    errors = [err.decode(errors="replace").strip() for p, (_, err) in zip(procs, outputs) if p.returncode != 0]
    shutil.rmtree(dest, ignore_errors=True)
    return len(errors), wall, (errors[0] if errors else "")


# -- the run ---------------------------------------------------------------------------------

def timed_rounds(args: argparse.Namespace, env: dict[str, str], servers: list, src: Path, head: str,
                 pack_mib: float, clones: Path) -> tuple[dict, dict]:
    """Push+clone rounds, servers interleaved; returns ({(server, op): [seconds]}, {server: clone URL})."""
    times: dict[tuple[str, str], list[float]] = {}
    last_url: dict[str, str] = {}
    print(f"\n{'run':>3}  {'server':<12} {'op':<5} {'seconds':>8} {'MiB/s':>7}")
    for rnd in range(args.repeat):
        order = servers if rnd % 2 == 0 else servers[::-1]
        for op in ("push", "clone"):
            for server in order:
                if op == "push":
                    seconds, last_url[server.name] = push_once(env, server, src)
                else:
                    seconds = clone_once(env, last_url[server.name], clones / f"{server.name}-{rnd}", head)
                times.setdefault((server.name, op), []).append(seconds)
                print(f"{rnd + 1:>3}  {server.name:<12} {op:<5} {seconds:>8.2f} {pack_mib / seconds:>7.1f}",
                      flush=True)
    return times, last_url


def print_table(times: dict, pack_mib: float) -> None:
    print(f"\n{'op':<6} {'server':<12} {'runs':>4} {'median s':>9} {'min s':>7} {'max s':>7} {'MiB/s':>7}")
    for (name, op), runs in sorted(times.items(), key=lambda kv: (kv[0][1] != "push", kv[0][0] != "daemon")):
        med = statistics.median(runs)
        print(f"{op:<6} {name:<12} {len(runs):>4} {med:>9.2f} {min(runs):>7.2f} {max(runs):>7.2f} "
              f"{pack_mib / med:>7.1f}")


def summary_line(op: str, times: dict, pack_mib: float) -> str:
    ours = statistics.median(times[("daemon", op)])
    peer = statistics.median(times[("http-backend", op)])
    ratio = ours / peer
    verdict = "OK" if ratio <= TARGET_RATIO else "MISS"
    return (f"git {op:<6} {pack_mib:.0f} MiB  daemon {ours:.2f} s  http-backend {peer:.2f} s  "
            f"ratio {ratio:.2f}  (target <= {TARGET_RATIO}) {verdict}")


def prepare_source(root: Path, env: dict[str, str], args: argparse.Namespace) -> tuple[Path, str, float]:
    """Build the test repository and a tiny warm-up one; returns (source, head, pack MiB)."""
    start = time.perf_counter()
    src = root / "src"
    pack_mib = build_repo(src, env, args.size_mib, args.seed) / MIB
    head = git(env, "rev-parse", BRANCH, cwd=src)
    files = git(env, "ls-files", "-z", cwd=src).count("\0")
    build_repo(root / "tiny", env, 1, args.seed, commits=1)
    os.sync()  # the build's dirty pages must not be written back during the first timed run
    print(f"test repository: {files} files, {args.size_mib} MiB content, pack {pack_mib:.1f} MiB, "
          f"built in {time.perf_counter() - start:.1f} s ({src})")
    return src, head, pack_mib


def warm_up(env: dict[str, str], servers: list, tiny: Path, clones: Path) -> None:
    """One untimed push and clone of a tiny repository per server (lazy imports, first connections)."""
    head = git(env, "rev-parse", BRANCH, cwd=tiny)
    for server in servers:
        _, url = push_once(env, server, tiny)
        clone_once(env, url, clones / "warm-up", head)


def concurrent_phase(args: argparse.Namespace, env: dict[str, str], servers: list, last_url: dict,
                     clones: Path) -> dict[str, tuple[int, float]]:
    """A burst of clones per server; also prints the CPU time of the server's front process
    (the aiohttp daemon, lighttpd), which copies every byte git produces."""
    print(f"\n{args.concurrency} concurrent clones of the last pushed repository:")
    results = {}
    for server in servers:
        front = psutil.Process(server.proc.pid)
        cpu_before = sum(front.cpu_times()[:2])
        failures, wall, first_error = asyncio.run(clone_many(env, last_url[server.name], clones / "many",
                                                             args.concurrency))
        results[server.name] = (failures, wall)
        cpu = sum(front.cpu_times()[:2]) - cpu_before
        print(f"  {server.name:<12} {failures} failures in {wall:.2f} s (server process CPU {cpu:.1f} s)"
              + (f"; first error:\n{first_error}" if failures else ""), flush=True)
    return results


def print_summary(args: argparse.Namespace, times: dict, pack_mib: float, concurrent: dict,
                  sampler: RssSampler, daemon: Daemon) -> None:
    print_table(times, pack_mib)
    print()
    print(summary_line("push", times, pack_mib))
    print(summary_line("clone", times, pack_mib))
    (df, dw), (pf, pw) = concurrent["daemon"], concurrent["http-backend"]
    print(f"{args.concurrency} concurrent clones: daemon {df} failures in {dw:.2f} s; "
          f"http-backend {pf} failures in {pw:.2f} s")
    print(f"daemon RSS: baseline {sampler.baseline / MIB:.1f} MiB, peak {sampler.peak / MIB:.1f} MiB "
          f"(+{(sampler.peak - sampler.baseline) / MIB:.1f} MiB), at the end {sampler.last / MIB:.1f} MiB")
    log = daemon.log_lines()
    print(f"daemon log: {len(log)} lines" + "".join(f"\n  {line[:300]}" for line in log[-5:]))


def run(args: argparse.Namespace, root: Path, servers: list) -> int:
    env = git_env(root / "home")
    (root / "home").mkdir()
    clones = root / "clones"
    clones.mkdir()
    src, head, pack_mib = prepare_source(root, env, args)

    daemon = Daemon(root)
    servers.append(daemon)
    daemon.start()
    sampler = RssSampler(daemon.proc.pid)
    sampler.start()
    peer = HttpBackend(root, env)
    servers.append(peer)
    peer.start()
    # The receive hooks run "#!/usr/bin/env python3" found on the daemon's PATH: its start-up is per push.
    print(f"daemon {daemon.base} (RSS {sampler.baseline / MIB:.1f} MiB, hooks run {shutil.which('python3')}), "
          f"http-backend {peer.base}")

    warm_up(env, [daemon, peer], root / "tiny", clones)
    times, last_url = timed_rounds(args, env, [daemon, peer], src, head, pack_mib, clones)
    concurrent = concurrent_phase(args, env, [daemon, peer], last_url, clones)
    sampler.stop()
    print_summary(args, times, pack_mib, concurrent, sampler, daemon)
    return 1 if any(failures for failures, _ in concurrent.values()) else 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM gets the same clean-up as Ctrl-C."""
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="modelrepo-bench-"))
    servers: list = []
    try:
        return run(args, root, servers)
    except GitFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
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
