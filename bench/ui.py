"""Web UI page times on a big repository: 10,000 files and 1,000 commits.

Builds the repository with `git fast-import` (seconds, not minutes), pushes it to a fresh daemon,
then times the pages a visitor opens first, each over one keep-alive connection: the model page
(target: < 100 ms), the files page of the 10,000-file folder, the history and a commit.

    .venv/bin/python bench/ui.py                 # 10,000 files, 1,000 commits, 50 timed requests a page
    .venv/bin/python bench/ui.py --requests 200  # steadier percentiles
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, stop_process  # noqa: E402

TARGET_MS = 100.0
CARD = ("---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-classification\n"
        "tags: [bench]\n---\n# Bench model\n\nA repository with many files and a long history.\n\n"
        "| metric | value |\n|---|---|\n| files | 10000 |\n\n```python\nprint('hello')\n```\n")


def fast_import_stream(files: int, commits: int) -> bytes:
    """One commit adding README.md and ``files`` small files under data/, then ``commits - 1``
    commits each changing one of them."""
    out: list[bytes] = []
    when = 1_700_000_000

    def blob(mark: int, data: bytes) -> None:
        out.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))

    blob(1, CARD.encode())
    for i in range(files):
        blob(10 + i, json.dumps({"shard": i}).encode())
    out.append(b"commit refs/heads/main\nmark :%d\ncommitter Bench <b@example.com> %d +0000\ndata 7\ninitial\n"
               % (10 + files, when))
    out.append(b"M 100644 :1 README.md\n")
    for i in range(files):
        out.append(b"M 100644 :%d data/shard-%05d.json\n" % (10 + i, i))
    for c in range(1, commits):
        message = b"change %d" % c
        data = json.dumps({"shard": c % files, "revision": c}).encode()
        out.append(b"commit refs/heads/main\ncommitter Bench <b@example.com> %d +0000\ndata %d\n%s\n"
                   b"M 100644 inline data/shard-%05d.json\ndata %d\n%s\n"
                   % (when + c, len(message), message, c % files, len(data), data))
    return b"".join(out) + b"done\n"


def api(base: str, token: str, method: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"{}")


def time_page(port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for i in range(n + 3):
        start = time.perf_counter()
        conn.request("GET", path, headers={"Accept": "text/html"})
        resp = conn.getresponse()
        body = resp.read()
        elapsed = (time.perf_counter() - start) * 1000
        if resp.status != 200:
            raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")
        if i >= 3:  # the first requests warm the card cache and the page cache
            times.append(elapsed)
    conn.close()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--commits", type=int, default=1_000)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="mrui", dir="/tmp"))
    proc = None
    venv = Path(sys.executable).parent
    try:
        work = root / "work"
        env = {"PATH": os.environ["PATH"], "HOME": str(root), "GIT_CONFIG_NOSYSTEM": "1"}
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
        t0 = time.perf_counter()
        subprocess.run(["git", "fast-import", "--quiet"], cwd=work, input=fast_import_stream(args.files, args.commits),
                       check=True, env=env)
        print(f"built {args.files} files, {args.commits} commits in {time.perf_counter() - t0:.1f} s")

        port = free_port()
        data = root / "data"
        log = open(root / "daemon.log", "wb")
        proc = subprocess.Popen([str(venv / "modelrepo"), "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT,
                                env={**{k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")},
                                     "MODELREPO_LOG__LEVEL": "warning", "MODELREPO_LOG__FORMAT": "json"})
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        token = (data / "admin.token").read_text().strip()
        api(base, token, "POST", "/api/v1/namespaces", {"name": "bench"})
        api(base, token, "POST", "/api/v1/models", {"namespace": "bench", "name": "big", "visibility": "public"})
        t0 = time.perf_counter()
        subprocess.run(["git", "push", "-q", f"http://admin:{token}@127.0.0.1:{port}/bench/big.git", "main"],
                       cwd=work, check=True, env=env)
        print(f"pushed in {time.perf_counter() - t0:.1f} s")
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, env=env, capture_output=True,
                              text=True).stdout.strip()

        pages = [("model page", "/bench/big"), ("files: data/ (10,000 entries, paged)", "/bench/big/tree/main/data"),
                 ("history (page 1)", "/bench/big/commits/main"), ("history (page 20)", "/bench/big/commits/main?p=20"),
                 ("a commit", f"/bench/big/commit/{head}"), ("explore", "/")]
        print(f"{'page':40} {'median':>9} {'p95':>9} {'max':>9}")
        model_median = None
        for label, path in pages:
            times = sorted(time_page(port, path, args.requests))
            median = statistics.median(times)
            p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
            print(f"{label:40} {median:7.1f}ms {p95:7.1f}ms {times[-1]:7.1f}ms")
            if path == "/bench/big":
                model_median = median
        verdict = "OK" if model_median is not None and model_median < TARGET_MS else "MISS"
        print(f"model page median {model_median:.1f} ms (target < {TARGET_MS:.0f} ms) {verdict}")
        return 0
    finally:
        stop_process(proc)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
