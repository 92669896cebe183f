"""The globals a pickle imports, by walking its opcodes — the pickle is never loaded.

A pickle runs code through the callables it imports (GLOBAL, INST, STACK_GLOBAL) and then calls
(REDUCE, NEWOBJ, BUILD). Listing those imports is enough to tell torch tensors and numpy arrays
from ``os.system``. ``pickletools.genops`` would read every argument into memory (a 4 GiB BINBYTES
included); this walk uses pickletools' opcode table but skips long arguments with a seek, so memory
stays flat and, through a ``RangeReader``, skipped bytes are never fetched. Which callables are
dangerous is picklescan's list (``classify``).
"""

import logging
import pickletools
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO

from picklescan.scanner import SafetyLevel, _build_scan_result_from_raw_globals

from modelrepo.inspect.errors import NotInspectable

# picklescan logs each finding through stdlib logging; ours are structured (service.py).
logging.getLogger("picklescan").setLevel(logging.ERROR)
_OPS = {op.code.encode("latin-1"): op for op in pickletools.opcodes}
_LENGTH_PREFIX = {pickletools.TAKEN_FROM_ARGUMENT1: "<B", pickletools.TAKEN_FROM_ARGUMENT4: "<i",
                  pickletools.TAKEN_FROM_ARGUMENT4U: "<I", pickletools.TAKEN_FROM_ARGUMENT8U: "<Q"}
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MEMO_PUT = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
KEPT_ARG = 1024  # string arguments longer than this are skipped (module and attribute names are short)
MAX_MEMO = 1_000_000
PROTO = b"\x80"

SAFE, SUSPICIOUS, DANGEROUS = "safe", "suspicious", "dangerous"


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    severity: str

    def to_json(self) -> dict:
        return {"module": self.module, "name": self.name, "severity": self.severity}


@dataclass
class PickleScan:
    """What one pickle stream (a file, or a member of a zip) imports."""

    member: str | None = None
    imports: list[Import] = field(default_factory=list)
    error: str | None = None  # set when the stream could not be walked to its end

    @property
    def severity(self) -> str:
        levels = {i.severity for i in self.imports}
        if DANGEROUS in levels:
            return DANGEROUS
        return SUSPICIOUS if SUSPICIOUS in levels or self.error else SAFE

    def to_json(self) -> dict:
        out: dict = {"member": self.member, "severity": self.severity,
                     "globals": [i.to_json() for i in self.imports]}
        if self.error:
            out["error"] = self.error
        return out


_SEVERITY = {SafetyLevel.Innocuous: SAFE, SafetyLevel.Suspicious: SUSPICIOUS, SafetyLevel.Dangerous: DANGEROUS}


def classify(found: list[tuple[str, str]]) -> list[Import]:
    """picklescan's verdict on each import: its unsafe list (os, subprocess, builtins.exec/eval,
    runpy, webbrowser …, with parent modules) is dangerous, its allow-list (torch storages,
    collections.OrderedDict, numpy reconstruction) safe, anything else suspicious."""
    unique = sorted(set(found))
    result = _build_scan_result_from_raw_globals(set(unique), "modelrepo")
    verdict = {(g.module, g.name): _SEVERITY[g.safety] for g in result.globals}
    return [Import(m, n, verdict[(m, n)]) for m, n in unique]


def _read_arg(f: BinaryIO, op: pickletools.OpcodeInfo):
    """The argument of ``op``: its value when short, None when skipped (long data)."""
    arg = op.arg
    if arg is None:
        return None
    prefix = _LENGTH_PREFIX.get(arg.n)
    if prefix is None:  # fixed size or up to a newline: pickletools' own (bounded) readers
        return arg.reader(f)
    raw = f.read(struct.calcsize(prefix))
    if len(raw) != struct.calcsize(prefix):
        raise ValueError(f"{op.name}: truncated length")
    (n,) = struct.unpack(prefix, raw)
    if n < 0:
        raise ValueError(f"{op.name}: negative length")
    if n > KEPT_ARG or op.name not in _STRINGS:
        f.seek(n, 1)  # past the end is found by the next read
        return None
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{op.name}: truncated argument")
    return data.decode("utf-8", errors="replace")


def walk_one(f: BinaryIO, found: list[tuple[str, str]]) -> None:
    """Walk one pickle to its STOP, appending (module, name) of every import to ``found``.
    Raises ValueError where the stream is not a valid pickle."""
    memo: dict[int, object] = {}
    recent: deque = deque(maxlen=2)  # the last two values pushed (for STACK_GLOBAL)
    last = None
    while True:
        code = f.read(1)
        if not code:
            raise ValueError("pickle ends without STOP")
        op = _OPS.get(code)
        if op is None:
            raise ValueError(f"invalid opcode {code!r} at byte {f.tell() - 1}")
        value = _read_arg(f, op)
        name = op.name
        if name == "STOP":
            return
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(value).partition(" ")
            found.append((module, attr))
            last = None
        elif name == "STACK_GLOBAL":
            values = list(recent)
            if len(values) == 2 and all(isinstance(v, str) for v in values):
                found.append((values[0], values[1]))
            else:
                found.append(("unknown", "unknown"))  # a name built at run time: dangerous
            last = None
        elif name in _MEMO_PUT:
            if len(memo) < MAX_MEMO:
                memo[len(memo) if name == "MEMOIZE" else int(value)] = last
            continue  # memoizing does not push
        elif name in _MEMO_GET:
            last = memo.get(int(value))
        elif name in _STRINGS:
            last = value
        else:
            last = None
        recent.append(last)


def walk(f: BinaryIO, member: str | None = None) -> PickleScan:
    """Every pickle in the stream, one after another (legacy torch files hold five, then raw
    tensor bytes). A later pickle counts only if it starts with PROTO and parses to its STOP:
    what follows the last one is data, which ``torch.load`` never unpickles."""
    scan = PickleScan(member=member)
    found: list[tuple[str, str]] = []
    try:
        walk_one(f, found)
    except (ValueError, struct.error, UnicodeDecodeError) as exc:
        if not found:
            raise NotInspectable(f"not a pickle: {exc}") from None
        scan.error = str(exc)
    else:
        while f.read(1) == PROTO:
            f.seek(-1, 1)
            more: list[tuple[str, str]] = []
            try:
                walk_one(f, more)
            except (ValueError, struct.error, UnicodeDecodeError):
                break
            found += more
    scan.imports = classify(found)
    return scan


