"""GGUF (llama.cpp) metadata through a bounded, sequential header read.

gguf's own GGUFReader memory-maps a local file; objects may live in S3, so this walks the header
(key/values, then tensor infos) through any seekable reader, skipping array payloads such as the
tokenizer vocabulary, and takes the format's constants (value types, quantization types, file
types, key names) from the gguf package.

gguf imports numpy (about half a second of CPU): it is loaded on the first GGUF file read, not by
every daemon and CLI start that merely imports the inspectors."""

import functools
import math
import struct
from typing import TYPE_CHECKING, BinaryIO

from modelrepo.inspect.errors import NotInspectable

if TYPE_CHECKING:
    from gguf import GGUFValueType

MAGIC = b"GGUF"
MAX_HEADER = 256 * 1024 * 1024  # vocabularies make headers of tens of MiB; beyond this we stop
MAX_COUNT = 10_000_000
MAX_STRING = 16 * 1024 * 1024
KEPT_STRING = 256  # strings longer than this are skipped, not kept


@functools.cache
def _gguf():
    import gguf

    return gguf


@functools.cache
def _scalars() -> dict:
    t = _gguf().GGUFValueType
    return {t.UINT8: "<B", t.INT8: "<b", t.UINT16: "<H", t.INT16: "<h", t.UINT32: "<I", t.INT32: "<i",
            t.FLOAT32: "<f", t.BOOL: "<?", t.UINT64: "<Q", t.INT64: "<q", t.FLOAT64: "<d"}


class _Header:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    def _check(self, n: int) -> None:
        end = self.f.tell() + n
        if end > self.size:
            raise NotInspectable("truncated GGUF header")
        if end > MAX_HEADER:
            raise NotInspectable(f"GGUF header larger than {MAX_HEADER} bytes")

    def take(self, n: int) -> bytes:
        self._check(n)
        return self.f.read(n)

    def skip(self, n: int) -> None:
        self._check(n)
        self.f.seek(n, 1)

    def scalar(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str | None:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise NotInspectable(f"GGUF string of {n} bytes")
        if n > KEPT_STRING:
            self.skip(n)
            return None
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int):
        value_types = _gguf().GGUFValueType
        if vtype == value_types.STRING:
            return self.string()
        if vtype == value_types.ARRAY:
            item_type, count = self.scalar("<I"), self.scalar("<Q")
            if count > MAX_COUNT:
                raise NotInspectable(f"GGUF array of {count} items")
            fmt = _scalars().get(_value_type(item_type))
            if fmt is not None:
                self.skip(count * struct.calcsize(fmt))
            else:
                for _ in range(count):
                    self.value(_value_type(item_type))
            return {"array": count}
        fmt = _scalars().get(_value_type(vtype))
        if fmt is None:
            raise NotInspectable(f"unknown GGUF value type {vtype}")
        return self.scalar(fmt)


def _value_type(raw: int) -> "GGUFValueType":
    try:
        return _gguf().GGUFValueType(raw)
    except ValueError:
        raise NotInspectable(f"unknown GGUF value type {raw}") from None


def inspect_gguf(f: BinaryIO, size: int) -> dict:
    h = _Header(f, size)
    if h.take(4) != MAGIC:
        raise NotInspectable("not a GGUF file (magic is not 'GGUF')")
    version = h.scalar("<I")
    if version not in (2, 3):
        raise NotInspectable(f"GGUF version {version} is not supported (2 and 3 are)")
    tensor_count, kv_count = h.scalar("<Q"), h.scalar("<Q")
    if tensor_count > MAX_COUNT or kv_count > MAX_COUNT:
        raise NotInspectable(f"GGUF header claims {tensor_count} tensors and {kv_count} keys")
    meta: dict = {}
    for _ in range(kv_count):
        key = h.string()
        value = h.value(h.scalar("<I"))
        if key is not None and not isinstance(value, dict):
            meta[key] = value
    parameters = 0
    types: dict[str, int] = {}
    for _ in range(tensor_count):
        h.string()
        n_dims = h.scalar("<I")
        if n_dims > 8:
            raise NotInspectable(f"GGUF tensor with {n_dims} dimensions")
        dims = [h.scalar("<Q") for _ in range(n_dims)]
        ggml_type = h.scalar("<I")
        h.scalar("<Q")  # the tensor's data offset: read past, the header is all we count
        parameters += math.prod(dims)
        name = _enum_name(_gguf().GGMLQuantizationType, ggml_type)
        types[name] = types.get(name, 0) + 1
    arch = meta.get("general.architecture")
    out: dict = {"format": "gguf", "version": version, "architecture": arch, "name": meta.get("general.name"),
                 "tensors": tensor_count, "parameters": parameters, "tensor_types": types}
    if isinstance(meta.get("general.file_type"), int):
        out["file_type"] = _enum_name(_gguf().LlamaFileType, meta["general.file_type"])
    if arch and isinstance(meta.get(f"{arch}.context_length"), int):
        out["context_length"] = meta[f"{arch}.context_length"]
    if isinstance(meta.get("general.quantization_version"), int):
        out["quantization_version"] = meta["general.quantization_version"]
    return out


def _enum_name(enum, value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)
