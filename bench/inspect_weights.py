"""How much of a 4 GiB weight file inspecting it reads, and how long it takes.

Why: inspection runs after every LFS upload and, at the latest, inside pre-receive, so it must cost
what a header or a zip directory costs, never what the file costs. Targets: < 1 MiB read from the
object store for a 4 GiB safetensors file and for a 4 GiB PyTorch zip checkpoint, and < 100 ms
added per file (the median wall time of ``Inspections.object``: thread hop, ranged store reads,
parse, catalog write).

What it does: writes both files as sparse files straight into a local object store (header,
pickle and zip directory are real bytes; the 4 GiB of tensor data are holes, so no disk is used
and nothing has to be hashed), wraps the store so every byte it yields is counted, and inspects
each file ``--repeat`` times (forced, so every run reads again). The safetensors file has
``--tensors`` tensors, like a 1B-parameter model's header; the zip holds archive/data.pkl (a
state-dict-shaped pickle naming every storage, as torch.save writes it), one stored member per
tensor and a zip64 central directory.

    .venv/bin/python bench/inspect_weights.py               # 4 GiB each, 5 runs
    .venv/bin/python bench/inspect_weights.py --gib 1 --repeat 3

Needs only the project venv; a temp dir (removed at the end) on a filesystem with sparse files.
"""

import os
import sys

# This file is named like the stdlib's inspect module, which asyncio imports: run as a script, its
# own directory comes first on sys.path and would shadow it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import struct  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

from modelrepo.catalog.db import Catalog  # noqa: E402
from modelrepo.inspect.service import Inspections  # noqa: E402
from modelrepo.storage.local import LocalBackend  # noqa: E402
from modelrepo.storage.verified import ObjectStore  # noqa: E402

GiB = 1024**3
MiB = 1024**2
READ_TARGET = 1 * MiB
TIME_TARGET = 0.100


class CountingStore:
    """The local store, counting every byte ``read`` yields (what an S3 store would transfer)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.bytes = 0
        self.requests = 0

    async def stat(self, oid: str) -> int | None:
        return await self.inner.stat(oid)

    async def read(self, oid: str, start: int = 0, end: int | None = None):
        self.requests += 1
        async for chunk in self.inner.read(oid, start, end):
            self.bytes += len(chunk)
            yield chunk


def shapes(total_bytes: int, tensors: int) -> list[tuple[str, list[int]]]:
    """Tensor names and F32 shapes adding up to ``total_bytes`` (whole MiB each, so the sparse
    writer below never writes a real zero)."""
    per = total_bytes // tensors // MiB * MiB // 4
    return [(f"model.layers.{i // 8}.block.{i % 8}.weight", [per]) for i in range(tensors)]


def write_safetensors(path: Path, total_bytes: int, tensors: int) -> int:
    header, offset = {}, 0
    for name, shape in shapes(total_bytes, tensors):
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + shape[0] * 4]}
        offset += shape[0] * 4
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)  # the tensor data: a hole
    return 8 + len(raw) + offset


class _Sparse:
    """A file object for zipfile: the zero chunk becomes a seek, so the data costs no disk."""

    def __init__(self, f, zero: bytes) -> None:
        self.f, self.zero = f, zero

    def write(self, data) -> int:
        if data is self.zero:
            self.f.seek(len(data), 1)
            return len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def write_torch_zip(path: Path, total_bytes: int, tensors: int) -> int:
    layout = shapes(total_bytes, tensors)
    # The shape of torch.save's data.pkl: an OrderedDict of name -> (storage key, size) records.
    state = collections.OrderedDict((name, ("storage", "FloatStorage", str(i), "cpu", shape[0], (shape[0],), (1,)))
                                    for i, (name, shape) in enumerate(layout))
    zero = bytes(MiB)
    with open(path, "wb") as raw:
        f = _Sparse(raw, zero)
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            z.writestr("archive/data.pkl", pickle.dumps(state, protocol=2))
            for i, (_name, shape) in enumerate(layout):
                with z.open(f"archive/data/{i}", "w", force_zip64=True) as member:
                    for _ in range(shape[0] * 4 // MiB):
                        member.write(zero)
            z.writestr("archive/version", b"3\n")
    return path.stat().st_size


async def measure(inspections: Inspections, store: CountingStore, oid: str, size: int, path: str,
                  repeat: int) -> tuple[dict, list[float], list[int], list[int]]:
    times, reads, requests = [], [], []
    result: dict = {}
    for _ in range(repeat):
        before, before_requests = store.bytes, store.requests
        started = time.perf_counter()
        result = await inspections.object(oid, size, path, force=True) or {}
        times.append(time.perf_counter() - started)
        reads.append(store.bytes - before)
        requests.append(store.requests - before_requests)
    return result, times, reads, requests


async def run(tmp: Path, gib: float, tensors: int, repeat: int) -> bool:
    backend = LocalBackend(tmp / "lfs")
    local = ObjectStore(backend)
    store = CountingStore(local)
    catalog = Catalog.open(tmp / "catalog.db")
    inspections = Inspections(catalog, store)  # type: ignore[arg-type]
    total = int(gib * GiB)
    files = []
    for label, path, writer in (("safetensors", "model.safetensors", write_safetensors),
                                ("pytorch zip", "pytorch_model.bin", write_torch_zip)):
        oid = hashlib.sha256(label.encode()).hexdigest()  # a made-up OID: inspection never hashes
        target = backend.path(oid)
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        size = writer(target, total, tensors)
        used = target.stat().st_blocks * 512
        print(f"wrote {label}: {size / GiB:.2f} GiB apparent, {used / MiB:.2f} MiB on disk "
              f"({time.perf_counter() - started:.1f} s)")
        files.append((label, path, oid, size))
    ok = True
    try:
        for label, path, oid, size in files:
            result, times, reads, requests = await measure(inspections, store, oid, size, path, repeat)
            median_t, worst_read = statistics.median(times), max(reads)
            good = worst_read < READ_TARGET and median_t < TIME_TARGET
            ok &= good
            detail = (f"total {result.get('total'):,} parameters" if result.get("kind") == "safetensors"
                      else f"{len(result.get('pickles', []))} pickle(s), status {result.get('status')}")
            print(f"{label:12} {size / GiB:.2f} GiB  read {worst_read / 1024:.1f} KiB in {max(requests)} range "
                  f"request(s) (target < {READ_TARGET // 1024} KiB)  time median {median_t * 1000:.1f} ms, "
                  f"max {max(times) * 1000:.1f} ms (target < {TIME_TARGET * 1000:.0f} ms)  {detail}  "
                  f"{'OK' if good else 'MISS'}")
    finally:
        await inspections.drain()
        await catalog.close()
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="size of each file (default 4)")
    parser.add_argument("--tensors", type=int, default=512, help="tensors per file (default 512)")
    parser.add_argument("--repeat", type=int, default=5, help="inspections per file (default 5)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mr-bench-inspect-"))
    try:
        ok = asyncio.run(run(tmp, args.gib, args.tensors, args.repeat))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("all targets met" if ok else "some targets MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
