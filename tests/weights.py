"""Weight files for the inspection tests, made with the real libraries. The malicious pickles call
os.system("touch <canary>") if anyone ever loads them: tests check the canary stays absent."""

import io
import json
import os
import pickle
import zipfile

import gguf
import numpy as np
from safetensors.numpy import save


class Payload:
    """Pickles to a call of os.system that would create ``canary``."""

    def __init__(self, canary) -> None:
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def evil_pickle(canary, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps({"state_dict": {"w": [0.5, 1.0]}, "hook": Payload(canary)}, protocol=protocol)


def torch_zip(pkl: bytes, data: bytes = b"\0" * 4096) -> bytes:
    """The layout torch.save writes: archive/data.pkl, storages under archive/data/, all stored."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", data)
        z.writestr("archive/version", b"3\n")
    return buf.getvalue()


def gguf_bytes(tmp_path, *, name: str | None = None, context: int = 2048, vocab: int = 0,
               tensors: dict | None = None) -> bytes:
    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    if name:
        w.add_name(name)
    w.add_context_length(context)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if vocab:
        w.add_token_list([f"tok{i}" for i in range(vocab)])
    for tensor_name, array in (tensors or {"token_embd.weight": np.zeros((64, 8), np.float16),
                                           "output_norm.weight": np.zeros((8,), np.float32)}).items():
        w.add_tensor(tensor_name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def sharded_model() -> dict[str, bytes]:
    """Two safetensors shards (F32, I64, F16) and their index: SHARDED_PARAMETERS in total."""
    shard1 = save({"embed.weight": np.zeros((100, 16), np.float32), "ids": np.zeros((4, 8), np.int64)})
    shard2 = save({"head.weight": np.zeros((16, 10), np.float16), "head.bias": np.zeros((10,), np.float32)})
    index = {"metadata": {"total_size": 0}, "weight_map": {
        "embed.weight": "model-00001-of-00002.safetensors", "ids": "model-00001-of-00002.safetensors",
        "head.weight": "model-00002-of-00002.safetensors", "head.bias": "model-00002-of-00002.safetensors"}}
    return {"model-00001-of-00002.safetensors": shard1, "model-00002-of-00002.safetensors": shard2,
            "model.safetensors.index.json": json.dumps(index).encode()}


SHARDED_PARAMETERS = {"F32": 1600 + 10, "I64": 32, "F16": 160}
