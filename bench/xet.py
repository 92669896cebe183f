"""Xet vs LFS through the daemon, with the real Hub client, in one run.

Two daemons on loopback (one data directory each, so neither store sees the other's bytes); the
same generated file is uploaded with ``huggingface_hub.upload_file``:

- **LFS**: ``HF_HUB_DISABLE_XET=1``, the client's LFS path (batch + PUT, sha256 verified).
- **Xet**: the default client (hf_xet): chunking, xorbs, shard, sha256 check of the rebuilt file.

Then a second version with 1 % of its bytes changed (16 evenly spaced runs) is uploaded to each.
Reported per upload: client wall time, bytes the daemon's store grew by, and the daemon's RSS
peak. Each upload runs in a fresh process with a fresh HF_HOME (no client-side cache), so any
dedup comes from the server.

    .venv/bin/python bench/xet.py                  # 1 GiB (needs ~5 GiB of scratch)
    .venv/bin/python bench/xet.py --size-mib 256   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from common import RssSampler  # bench/common.py
from lfs import Daemon  # bench/lfs.py: a modelrepo serve with namespace "bench" and model "m"

MiB = 1024 * 1024
CHANGED_RUNS = 16


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--scratch", type=Path, default=None, help="where the daemons' data and the files go")
    p.add_argument("--keep", action="store_true")
    return p.parse_args()


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 * MiB)
            f.write(os.urandom(n))
            left -= n


def change_one_percent(src: Path, dst: Path) -> int:
    """Copy src to dst with 1 % of its bytes replaced, in CHANGED_RUNS runs spread evenly."""
    shutil.copyfile(src, dst)
    size = dst.stat().st_size
    run = max(size // 100 // CHANGED_RUNS, 1)
    with open(dst, "r+b") as f:
        for i in range(CHANGED_RUNS):
            f.seek((2 * i + 1) * size // (2 * CHANGED_RUNS))
            f.write(os.urandom(run))
    return run * CHANGED_RUNS


def stored(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "lfs" / "objects").rglob("*") if p.is_file())


def upload(daemon: Daemon, path: Path, xet: bool, home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": daemon.base, "HF_TOKEN": daemon.batch_headers["Authorization"].split()[1],
                "HF_HOME": str(home), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    code = textwrap.dedent(f"""
        from huggingface_hub import HfApi
        HfApi().upload_file(path_or_fileobj={str(path)!r}, path_in_repo="model.safetensors", repo_id="bench/m")
    """)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"upload failed:\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="xetbench-", dir=args.scratch))
    size = args.size_mib * MiB
    results = []
    daemons = {"lfs": Daemon(root / "lfs"), "xet": Daemon(root / "xet")}
    try:
        for d in daemons.values():
            d.data.parent.mkdir(parents=True)
            d.start()
        v1, v2 = root / "v1.bin", root / "v2.bin"
        make_file(v1, size)
        changed = change_one_percent(v1, v2)
        for version, path in (("v1", v1), ("v2 (1% changed)", v2)):
            for name, d in daemons.items():
                before = stored(d.data)
                sampler = RssSampler(d.proc.pid)
                sampler.start()
                try:
                    seconds = upload(d, path, name == "xet", root / f"home-{name}-{version[:2]}")
                finally:
                    sampler.stop()
                grew = stored(d.data) - before
                results.append({"protocol": name, "version": version, "seconds": round(seconds, 2),
                                "mb_per_s": round(size / seconds / 1e6, 1), "stored_growth": grew,
                                "stored_growth_pct": round(100 * grew / size, 2),
                                "rss_peak_mib": round(sampler.peak / MiB, 1),
                                "rss_growth_mib": round((sampler.peak - sampler.baseline) / MiB, 1)})
                r = results[-1]
                print(f"{name:3}  {version:16} {r['seconds']:7.2f} s  {r['mb_per_s']:7.1f} MB/s  store +{grew:>12,} B "
                      f"({r['stored_growth_pct']:.2f} % of the file)  daemon RSS peak {r['rss_peak_mib']} MiB "
                      f"(+{r['rss_growth_mib']})", flush=True)
        print(json.dumps({"size": size, "changed_bytes": changed, "results": results}))
        return 0
    finally:
        for d in daemons.values():
            d.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


if __name__ == "__main__":
    sys.exit(main())
