"""One file in, one inspection out: recognise the format (magic bytes first, the name second) and
run its reader. Synchronous and bounded; called in a worker thread over a ``RangeReader``."""

import posixpath
import struct
import zipfile
from dataclasses import dataclass, field
from typing import BinaryIO

from modelrepo.inspect import pickles
from modelrepo.inspect.errors import NotInspectable
from modelrepo.inspect.gguf import inspect_gguf
from modelrepo.inspect.reader import RangeReader
from modelrepo.inspect.safetensors import inspect_safetensors, shards_of_index

VERSION = 1  # bump when a reader learns something: the backfill re-inspects older results
INDEX_SUFFIX = ".safetensors.index.json"  # a sharded model's shard list
MAX_INDEX = 16 * 1024 * 1024
# Files that are nothing but a pickle: one that cannot be walked is a warning.
PICKLE_EXTENSIONS = (".pkl", ".pickle", ".joblib", ".dill")
# Files torch.load (or np.load) is given, which run a pickle when they hold one: walked when they
# start like a pickle or, failing that, walk cleanly to a STOP (a protocol-0 pickle named .pt runs
# just the same); anything else in them is data, not a finding.
TORCH_EXTENSIONS = (".bin", ".pt", ".pth", ".ckpt", ".th", ".npy")
ZIP_EXTENSIONS = (".npz", ".zip", ".mar", ".pt2")
# Extensions worth reading at all; a README or config.json is never opened.
INSPECTED_EXTENSIONS = (".safetensors", ".gguf", INDEX_SUFFIX, *PICKLE_EXTENSIONS, *TORCH_EXTENSIONS,
                        *ZIP_EXTENSIONS)
MAX_ZIP_PICKLES = 1000
MAX_NPY_HEADER = 64 * 1024

# Security status of a file or a model, worst last.
SAFE, WARNING, DANGEROUS = "safe", "warning", "dangerous"
_STATUS_OF = {pickles.SAFE: SAFE, pickles.SUSPICIOUS: WARNING, pickles.DANGEROUS: DANGEROUS}


@dataclass
class Inspection:
    kind: str  # safetensors | gguf | pickle | zip | numpy | other
    status: str | None = None  # safe | warning | dangerous for executable formats, None otherwise
    details: dict = field(default_factory=dict)
    scans: list[pickles.PickleScan] = field(default_factory=list)
    error: str | None = None  # "not inspectable" reason

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind, "status": self.status, **self.details}
        if self.scans:
            out["pickles"] = [p.to_json() for p in self.scans]
        if self.error:
            out["error"] = self.error
        return out


def worth_inspecting(path: str) -> bool:
    return path.lower().endswith(INSPECTED_EXTENSIONS)


def inspect_file(f: RangeReader, path: str) -> Inspection:
    """Never raises for bad content: a malformed file is an Inspection with ``error`` set."""
    if path.lower().endswith(INDEX_SUFFIX):
        return _index(f)
    ext = posixpath.splitext(path.lower())[1]
    head = f.read(16)
    f.seek(0)
    kind = _kind(head, ext, f.size)
    try:
        if kind == "safetensors":
            return Inspection(kind, SAFE, inspect_safetensors(f, f.size))
        if kind == "gguf":
            return Inspection(kind, SAFE, inspect_gguf(f, f.size))
        if kind == "zip":
            return _zip(f)
        if kind == "numpy":
            return _pickles_result("numpy", [scan] if (scan := _npy(f, None)) else [])
        if kind == "pickle":
            scan = pickles.walk(f)
            if scan.error and ext not in PICKLE_EXTENSIONS:
                return _other(path)  # data that began like a pickle: no loader runs it as one
            return _pickles_result("pickle", [scan])
    except NotInspectable as exc:
        if kind == "pickle" and ext not in PICKLE_EXTENSIONS:
            return _other(path)
        status = WARNING if kind in ("pickle", "zip", "numpy") else SAFE
        return Inspection(kind, status, error=f"not inspectable: {exc}")
    return _other(path)


def _other(path: str) -> Inspection:
    """Nothing to inspect. ``named``: the verdict already took the file name into account (an
    inspection right after an LFS upload knows only the content, and is redone with the name)."""
    return Inspection("other", details={"named": bool(path)})


def _index(f: RangeReader) -> Inspection:
    if f.size > MAX_INDEX:
        return Inspection("st_index", error=f"not inspectable: index of {f.size} bytes")
    return Inspection("st_index", details={"shards": shards_of_index(f.read())})


def _kind(head: bytes, ext: str, size: int) -> str:
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:6] == b"\x93NUMPY":
        return "numpy"
    if len(head) >= 9 and head[8:9] == b"{" and 8 + struct.unpack("<Q", head[:8])[0] <= size:
        return "safetensors"
    if ext in (".safetensors", ".gguf"):
        return ext[1:]  # claims to be one; its reader says why it is not
    if head[:1] == pickles.PROTO or ext in PICKLE_EXTENSIONS or ext in TORCH_EXTENSIONS:
        return "pickle"
    return "other"


def _pickles_result(kind: str, scans: list[pickles.PickleScan], details: dict | None = None) -> Inspection:
    worst = max((_STATUS_OF[s.severity] for s in scans), key=_rank, default=SAFE)
    return Inspection(kind, worst, details or {}, scans=scans)


def _rank(status: str) -> int:
    return (SAFE, WARNING, DANGEROUS).index(status)


def _zip(f: RangeReader) -> Inspection:
    """PyTorch checkpoints (archive/data.pkl), .npz arrays, any zip: the central directory is read
    from the end of the file, then only the pickle (and .npy header) members."""
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise NotInspectable(f"not a readable zip: {exc}") from None
    scans: list[pickles.PickleScan] = []
    members = [i for i in zf.infolist() if i.filename.endswith((".pkl", ".npy"))]
    if len(members) > MAX_ZIP_PICKLES:
        raise NotInspectable(f"{len(members)} pickle members; at most {MAX_ZIP_PICKLES} are scanned")
    for info in members:
        try:
            member = _member(zf, f, info)
            if info.filename.endswith(".npy"):
                scan = _npy(member, info.filename)
                if scan is not None:
                    scans.append(scan)
            else:
                scans.append(pickles.walk(member, info.filename))
        except NotInspectable as exc:
            scans.append(pickles.PickleScan(member=info.filename, error=str(exc)))
    pytorch = any(s.member and s.member.endswith("/data.pkl") or s.member == "data.pkl" for s in scans)
    return _pickles_result("zip", scans, {"format": "pytorch" if pytorch else "zip",
                                         "members": len(zf.infolist())})


def _member(zf: zipfile.ZipFile, f: RangeReader, info: zipfile.ZipInfo) -> BinaryIO:
    """A stored member is a window onto the archive (seekable, skips cost nothing); a compressed
    one is read through zipfile's decompressor."""
    if info.compress_type != zipfile.ZIP_STORED:
        return zf.open(info)
    f.seek(info.header_offset)
    local = f.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise NotInspectable(f"{info.filename}: bad local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return f.window(info.header_offset + 30 + name_len + extra_len, info.file_size)


def _npy(f: BinaryIO, member: str | None) -> pickles.PickleScan | None:
    """A .npy holds a pickle only when its dtype has objects (``np.load(allow_pickle=True)``).
    numpy's own header reader, bounded: it never reads the array. numpy is imported here, on the
    first .npy, not at every start (half a second of CPU)."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(f)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        _shape, _fortran, dtype = read_header(f, max_header_size=MAX_NPY_HEADER)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise NotInspectable(f"not a readable .npy header: {exc}") from None
    return pickles.walk(f, member) if dtype.hasobject else None
