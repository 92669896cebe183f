"""safetensors: an 8-byte little-endian header length, then a JSON header naming every tensor's
dtype, shape and byte range. The header is all we read; its bounds are checked against the file so
a truncated upload or a lying header is "not inspectable", never a crash or a giant read."""

import json
import math
import struct
from typing import BinaryIO

from modelrepo.inspect.errors import NotInspectable

MAX_HEADER = 100 * 1000 * 1000  # safetensors itself refuses headers over 100 MB
# Bits per element; sub-byte float formats (F4, F6) are packed.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64,
    "F64": 64, "C64": 64,
}
MAX_METADATA = 64 * 1024  # of __metadata__ kept in the catalog


def read_header(f: BinaryIO, size: int) -> dict:
    """The parsed JSON header of a safetensors file of ``size`` bytes."""
    if size < 8:
        raise NotInspectable(f"{size} bytes is too short for a safetensors file (8-byte header length first)")
    (length,) = struct.unpack("<Q", f.read(8))
    if length > MAX_HEADER:
        raise NotInspectable(f"header claims {length} bytes; safetensors headers are limited to {MAX_HEADER} bytes")
    if 8 + length > size:
        raise NotInspectable(f"truncated: the header claims {length} bytes but the file has {size - 8} after "
                             "its length")
    raw = f.read(length)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotInspectable(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise NotInspectable("header is not a JSON object")
    return header


def inspect_safetensors(f: BinaryIO, size: int) -> dict:
    """Tensor count and parameters per dtype, checked against the file's real size."""
    header = read_header(f, size)
    data_size = size - f.tell()  # the tensor bytes follow the header
    parameters: dict[str, int] = {}
    tensors = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise NotInspectable(f"tensor {name!r}: expected an object with dtype, shape, data_offsets")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
            raise NotInspectable(f"tensor {name!r}: malformed dtype/shape/data_offsets")
        begin, end = offsets
        if begin > end:
            raise NotInspectable(f"tensor {name!r}: data_offsets [{begin}, {end}] run backwards")
        if end > data_size:
            raise NotInspectable(f"truncated: tensor {name!r} ends at byte {end} of the data, which has only "
                                 f"{data_size} bytes")
        count = math.prod(shape)
        bits = DTYPE_BITS.get(dtype)
        if bits is not None and (count * bits + 7) // 8 != end - begin:
            raise NotInspectable(f"tensor {name!r}: shape {shape} of {dtype} needs {(count * bits + 7) // 8} bytes, "
                                 f"data_offsets give {end - begin}")
        parameters[dtype] = parameters.get(dtype, 0) + count
        tensors += 1
    out: dict = {"format": "safetensors", "tensors": tensors, "parameters": parameters,
                 "total": sum(parameters.values())}
    metadata = header.get("__metadata__")
    if isinstance(metadata, dict) and len(json.dumps(metadata)) <= MAX_METADATA:
        out["metadata"] = {str(k): str(v) for k, v in metadata.items()}
    return out


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def shards_of_index(data: bytes) -> list[str]:
    """The shard file names a ``model.safetensors.index.json`` points at (its weight_map values)."""
    try:
        index = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return []
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        return []
    return sorted({v for v in weight_map.values() if isinstance(v, str)})
