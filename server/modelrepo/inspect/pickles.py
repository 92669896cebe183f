"""The globals a pickle imports, by walking its opcodes — the pickle is never loaded.

A pickle runs code through the callables it imports (GLOBAL, INST, STACK_GLOBAL) and then calls
(REDUCE, NEWOBJ, BUILD). Listing those imports is enough to tell torch tensors and numpy arrays
from ``os.system``. ``pickletools.genops`` would read every argument into memory (a 4 GiB BINBYTES
included); this walk uses pickletools' opcode table but skips long arguments with a seek, so memory
stays flat and, through a ``RangeReader``, skipped bytes are never fetched. Which callables are
dangerous is picklescan's list (``classify``).
"""

import io
import logging
import pickletools
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO

from picklescan.scanner import SafetyLevel, _build_scan_result_from_raw_globals

from modelrepo.inspect.errors import NotInspectable
from modelrepo.inspect.reader import MAX_LINE

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


_FIXED = {"uint1": "<B", "uint2": "<H", "int4": "<i", "uint4": "<I", "uint8": "<Q", "float8": ">d"}
# What the walk does per opcode.
_OTHER, _STOP, _GLOBAL, _STACK_GLOBAL, _MEMOIZE, _PUT, _GET, _STRING = range(8)


def _action(name: str) -> int:
    if name == "STOP":
        return _STOP
    if name in ("GLOBAL", "INST"):
        return _GLOBAL
    if name == "STACK_GLOBAL":
        return _STACK_GLOBAL
    if name == "MEMOIZE":
        return _MEMOIZE
    if name in _MEMO_PUT:
        return _PUT
    if name in _MEMO_GET:
        return _GET
    return _STRING if name in _STRINGS else _OTHER


def _table() -> dict[bytes, tuple]:
    """opcode byte -> (name, action, argument kind, struct or reader). Built once: the walk does
    one dict lookup per opcode, which is what keeps a 10,000-opcode state dict in milliseconds."""
    table = {}
    for code, op in _OPS.items():
        arg = op.arg
        if arg is None:
            spec: tuple = ("none", None)
        elif arg.n in _LENGTH_PREFIX:
            spec = ("prefixed", struct.Struct(_LENGTH_PREFIX[arg.n]))
        elif arg.name in _FIXED:
            spec = ("fixed", struct.Struct(_FIXED[arg.name]))
        else:  # up to a newline: pickletools' reader, over our bounded readline
            spec = ("line", arg.reader)
        table[code] = (op.name, _action(op.name), *spec)
    return table


_TABLE = _table()


def walk_one(f: BinaryIO, found: list[tuple[str, str]]) -> None:
    """Walk one pickle to its STOP, appending (module, name) of every import to ``found``.
    Raises ValueError where the stream is not a valid pickle."""
    memo: dict[int, object] = {}
    recent: deque = deque(maxlen=2)  # the last two values pushed (for STACK_GLOBAL)
    read, table = f.read, _TABLE
    while True:
        code = read(1)
        entry = table.get(code)
        if entry is None:
            raise ValueError("pickle ends without STOP" if not code else
                             f"invalid opcode {code!r} at byte {f.tell() - 1}")
        name, action, kind, how = entry
        value = None
        if kind == "fixed":
            raw = read(how.size)
            if len(raw) != how.size:
                raise ValueError(f"{name}: truncated argument")
            value = how.unpack(raw)[0]
        elif kind == "prefixed":
            raw = read(how.size)
            if len(raw) != how.size:
                raise ValueError(f"{name}: truncated length")
            n = how.unpack(raw)[0]
            if n < 0:
                raise ValueError(f"{name}: negative length")
            if action == _STRING and n <= KEPT_ARG:
                data = read(n)
                if len(data) != n:
                    raise ValueError(f"{name}: truncated argument")
                value = data.decode("utf-8", errors="replace")
            else:
                f.seek(n, 1)  # long data is skipped, never read; past the end shows at the next read
        elif kind == "line":
            value = how(f)
        if action == _OTHER:
            recent.append(None)
        elif action == _STRING:
            recent.append(value)
        elif action == _GET:
            recent.append(memo.get(int(value)))
        elif action in (_MEMOIZE, _PUT):  # memoizing does not push
            if len(memo) < MAX_MEMO:
                memo[len(memo) if action == _MEMOIZE else int(value)] = recent[-1] if recent else None
        elif action == _GLOBAL:
            module, _, attr = str(value).partition(" ")
            found.append((module, attr))
            recent.append(None)
        elif action == _STACK_GLOBAL:
            if len(recent) == 2 and all(isinstance(v, str) for v in recent):
                found.append((recent[0], recent[1]))
            else:
                found.append(("unknown", "unknown"))  # a name built at run time: dangerous
            recent.append(None)
        else:  # STOP
            return


class _Buffered(io.BufferedReader):
    """One opcode is one ``read(1)``: C buffering makes them cheap. Seeks past the buffer reach
    the raw reader (nothing fetched); readline is bounded as the raw reader's is."""

    def readline(self, size: int | None = -1) -> bytes:
        return super().readline(MAX_LINE if size is None or size < 0 else min(size, MAX_LINE))

    def close(self) -> None:  # the raw reader belongs to the caller
        pass


def walk(f: BinaryIO, member: str | None = None) -> PickleScan:
    """Every pickle in the stream, one after another (legacy torch files hold five, then raw
    tensor bytes). A later pickle counts only if it starts with PROTO and parses to its STOP:
    what follows the last one is data, which ``torch.load`` never unpickles."""
    scan = PickleScan(member=member)
    found: list[tuple[str, str]] = []
    f = _Buffered(f, 256 * 1024)  # type: ignore[arg-type]
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


