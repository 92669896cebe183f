"""The readers on real files made with the real libraries (safetensors, gguf, pickle, zipfile,
numpy). The malicious pickles are written, never loaded: a canary file proves nothing ran."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save

from modelrepo.inspect.formats import inspect_file
from modelrepo.inspect.policy import Finding, deploy_problems, pickle_problems, pickle_warnings
from modelrepo.push.problems import Code
from modelrepo.inspect.reader import RangeReader, bytes_reader
from modelrepo.inspect.refs import FileRef
from modelrepo.inspect.summary import hub_fields, model_fields

from ..weights import Payload, evil_pickle, gguf_bytes, torch_zip


def run(data: bytes, path: str) -> dict:
    return inspect_file(bytes_reader(data), path).to_json()


def test_safetensors_parameters_per_dtype():
    data = save({"embed": np.zeros((10, 7), np.float32), "norm": np.zeros((7,), np.float16),
                 "ids": np.zeros((3, 5), np.int64)}, metadata={"format": "pt"})
    r = run(data, "model.safetensors")
    assert r["kind"] == "safetensors" and r["status"] == "safe"
    assert r["parameters"] == {"F32": 70, "F16": 7, "I64": 15} and r["total"] == 92 and r["tensors"] == 3
    assert r["metadata"] == {"format": "pt"}


def test_truncated_and_lying_safetensors_are_not_inspectable():
    data = save({"w": np.zeros((100,), np.float32)})
    r = run(data[:-10], "model.safetensors")
    assert r["error"].startswith("not inspectable: truncated: tensor 'w' ends at byte 400") and "parameters" not in r
    huge = struct.pack("<Q", 2**60) + b'{"w": {}}'
    r = run(huge, "model.safetensors")
    assert r["error"] == ("not inspectable: header claims 1152921504606846976 bytes; safetensors headers are "
                          "limited to 100000000 bytes")
    r = run(struct.pack("<Q", 9) + b"not json!", "model.safetensors")
    assert r["error"].startswith("not inspectable: header is not valid JSON")
    r = run(struct.pack("<Q", 40) + b"{}", "x.safetensors")
    assert "truncated: the header claims 40 bytes" in r["error"]


def test_gguf_metadata(tmp_path):
    data = gguf_bytes(tmp_path, name="tiny", context=4096, vocab=5000,  # a vocabulary is skipped, not kept
                      tensors={"token_embd.weight": np.zeros((32, 16), np.float16),
                               "output_norm.weight": np.zeros((16,), np.float32)})
    r = run(data, "m.gguf")
    assert r["kind"] == "gguf" and r["architecture"] == "llama" and r["name"] == "tiny"
    assert r["parameters"] == 32 * 16 + 16 and r["tensors"] == 2 and r["context_length"] == 4096
    assert r["file_type"] == "MOSTLY_F16" and r["tensor_types"] == {"F16": 1, "F32": 1}
    r = run(data[:200], "m.gguf")
    assert r["error"] == "not inspectable: truncated GGUF header"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_dangerous_pickle_is_named_and_never_run(tmp_path, protocol):
    canary = tmp_path / "pwned"
    r = run(evil_pickle(canary, protocol), "model.pkl")
    assert r["kind"] == "pickle" and r["status"] == "dangerous"
    [scan] = r["pickles"]
    assert {"module": "posix", "name": "system", "severity": "dangerous"} in scan["globals"]
    assert not canary.exists()


def test_benign_pickle_is_safe():
    r = run(pickle.dumps({"lr": 0.1, "layers": [1, 2, 3], "name": "x" * 5000}), "args.pkl")
    assert r == {"kind": "pickle", "status": "safe", "pickles": [{"member": None, "severity": "safe", "globals": []}]}


def test_unknown_import_is_suspicious():
    r = run(pickle.dumps(zipfile.ZipInfo("x")), "obj.pickle")
    assert r["status"] == "warning"
    assert r["pickles"][0]["globals"] == [{"module": "zipfile", "name": "ZipInfo", "severity": "suspicious"}]


def test_pytorch_zip_names_the_member(tmp_path):
    canary = tmp_path / "pwned"
    r = run(torch_zip(evil_pickle(canary)), "pytorch_model.bin")
    assert r["kind"] == "zip" and r["format"] == "pytorch" and r["status"] == "dangerous"
    assert r["pickles"][0]["member"] == "archive/data.pkl"
    assert not canary.exists()


def test_object_npy(tmp_path):
    canary = tmp_path / "pwned"
    buf = io.BytesIO()
    np.save(buf, np.array([Payload(str(canary))], dtype=object), allow_pickle=True)
    assert run(buf.getvalue(), "arr.npy")["status"] == "dangerous"
    buf = io.BytesIO()
    np.save(buf, np.arange(10))
    assert run(buf.getvalue(), "arr.npy") == {"kind": "numpy", "status": "safe"}
    buf = io.BytesIO()
    np.savez(buf, weights=np.ones(3), hook=np.array([Payload(str(canary))], dtype=object))
    r = run(buf.getvalue(), "arrays.npz")
    assert r["kind"] == "zip" and r["status"] == "dangerous" and [p["member"] for p in r["pickles"]] == ["hook.npy"]
    assert not canary.exists()


def test_skipped_arguments_are_never_fetched():
    """A 64 MiB bytes argument inside a pickle is skipped with a seek: the reader fetches a few
    blocks, not the argument."""
    data = pickle.dumps({"blob": b"\x01" * (64 * 1024 * 1024), "w": 1}, protocol=4)
    reader = bytes_reader(data)
    r = inspect_file(reader, "big.pkl").to_json()
    assert r["status"] == "safe"
    assert reader.fetched < 1024 * 1024


def test_text_that_is_not_a_pickle():
    """Named like a pickle, pickle.load would be tried on it: flagged, not passed as safe."""
    assert run(b"hello, I am a README", "notes.pkl") == {
        "kind": "pickle", "status": "warning", "error": "not inspectable: not a pickle: invalid opcode b',' at byte 5"}
    assert run(b"\x80 random bytes, not a pickle", "weights.dat") == {"kind": "other", "status": None, "named": True}


def test_torch_names_hold_pickles_or_data(tmp_path):
    """torch.load runs a protocol-0 pickle named .pt as readily as a zip; raw tensor data in a .bin
    (ONNX external data, say) is not a finding."""
    canary = tmp_path / "pwned"
    assert run(evil_pickle(canary, protocol=0), "legacy.pt")["status"] == "dangerous"
    raw = np.random.default_rng(7).standard_normal(4096).astype(np.float32).tobytes()
    assert run(raw, "model.onnx_data.bin") == {"kind": "other", "status": None, "named": True}
    assert inspect_file(bytes_reader(raw), "").to_json()["named"] is False  # content only: redone with a name
    assert not canary.exists()


def test_range_reader_counts_and_seeks():
    data = bytes(range(256)) * 4096  # 1 MiB
    reader = RangeReader(lambda s, e: data[s:e], len(data))
    assert reader.read(4) == bytes([0, 1, 2, 3])
    reader.seek(-2, os.SEEK_END)
    assert reader.read(10) == bytes([254, 255]) and reader.read(1) == b""
    assert reader.fetched < 200 * 1024
    reader.seek(10)
    assert reader.readline() == data[10:data.index(b"\n", 10) + 1]


def test_summary_sums_shards_once_and_hub_shape():
    results = {
        "model-00001-of-00002.safetensors": {"kind": "safetensors", "status": "safe", "parameters": {"F32": 10}},
        "model-00002-of-00002.safetensors": {"kind": "safetensors", "status": "safe",
                                             "parameters": {"F32": 5, "I64": 2}},
        "model.safetensors.index.json": {"kind": "st_index",
                                         "shards": ["model-00001-of-00002.safetensors",
                                                    "model-00002-of-00002.safetensors"]},
        "extra/other.safetensors": {"kind": "safetensors", "status": "safe", "parameters": {"F16": 1000}},
        "evil.pkl": {"kind": "pickle", "status": "dangerous", "pickles": [
            {"member": None, "severity": "dangerous", "globals": [{"module": "posix", "name": "system",
                                                                   "severity": "dangerous"}]}]},
    }
    files = [FileRef(p, "b" * 40) for p in results] + [FileRef("new.pt", "c" * 40), FileRef("config.json", "d" * 40)]
    fields = model_fields(files, results)
    assert fields["safetensors"] == {"parameters": {"F32": 15, "I64": 2}, "total": 17}
    assert fields["security"]["status"] == "dangerous"
    assert [(e["path"], e["status"]) for e in fields["security"]["files"]] == [("evil.pkl", "dangerous"),
                                                                               ("new.pt", "unscanned")]
    hub = hub_fields(files, results, with_security=True)
    assert hub["safetensors"]["total"] == 17
    assert hub["securityRepoStatus"]["scansDone"] is False
    assert hub["securityRepoStatus"]["filesWithIssues"][0]["pickleImports"][0]["module"] == "posix"


def test_policy_messages(tmp_path):
    evil = Finding("ckpt/pytorch_model.bin", run(torch_zip(evil_pickle(tmp_path / "x")), "pytorch_model.bin"))
    benign = Finding("args.pkl", run(pickle.dumps({"a": 1}), "args.pkl"))
    [problem] = pickle_problems([evil, benign], "refuse")
    message = problem.message
    assert problem.code == Code.DANGEROUS_PICKLE and problem.path == "ckpt/pytorch_model.bin"
    assert problem.line().endswith("[dangerous_pickle]")  # the code every door shows
    assert message.startswith("ckpt/pytorch_model.bin: archive/data.pkl imports posix.system, which runs code")
    assert "save_file(torch.load('ckpt/pytorch_model.bin', weights_only=True), 'ckpt/pytorch_model.safetensors')" \
        in message
    assert pickle_problems([evil], "warn") == [] and pickle_problems([evil], "allow") == []
    assert pickle_warnings([evil], "warn")[0].message.startswith("warning: ckpt/pytorch_model.bin")
    assert [p for _c, _m, p in deploy_problems([evil, benign], False)] == ["ckpt/pytorch_model.bin"]
    assert [c for c, _m, _p in deploy_problems([evil, benign], True)] == ["dangerous_pickle", "unsafe_weights"]
