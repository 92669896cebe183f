"""What a tree's inspections add up to: parameters per dtype (sharded models summed once), GGUF
metadata, and a security verdict — in modelrepo's API shape and in the Hugging Face Hub's."""

import posixpath

from modelrepo.inspect.formats import DANGEROUS, INDEX_SUFFIX, SAFE, WARNING, worth_inspecting
from modelrepo.inspect.refs import FileRef

UNSCANNED = "unscanned"
_ORDER = (SAFE, UNSCANNED, WARNING, DANGEROUS)
EXECUTABLE = ("pickle", "zip", "numpy")


def safetensors_total(files: list[FileRef], results: dict[str, dict]) -> dict | None:
    """{parameters: {DTYPE: n}, total: n} over the weights a loader would read: model.safetensors,
    else the shards a *.safetensors.index.json lists, else every .safetensors file."""
    tensors = {f.path: results[f.path] for f in files
               if results.get(f.path, {}).get("kind") == "safetensors" and "parameters" in results[f.path]}
    if not tensors:
        return None
    chosen = ["model.safetensors"] if "model.safetensors" in tensors else []
    if not chosen:
        for f in files:
            index = results.get(f.path, {})
            if f.path.endswith(INDEX_SUFFIX) and index.get("shards"):
                base = posixpath.dirname(f.path)
                chosen = [posixpath.join(base, s) for s in index["shards"] if posixpath.join(base, s) in tensors]
                break
    if not chosen:
        chosen = sorted(tensors)
    parameters: dict[str, int] = {}
    for path in chosen:
        for dtype, n in tensors[path]["parameters"].items():
            parameters[dtype] = parameters.get(dtype, 0) + n
    return {"parameters": parameters, "total": sum(parameters.values()), "files": chosen}


def gguf_info(files: list[FileRef], results: dict[str, dict]) -> dict | None:
    found = [{"path": f.path, **{k: v for k, v in results[f.path].items() if k not in ("kind", "status")}}
             for f in files if results.get(f.path, {}).get("kind") == "gguf" and "parameters" in results[f.path]]
    if not found:
        return None
    first = found[0]
    return {"total": first["parameters"], "architecture": first.get("architecture"),
            "context_length": first.get("context_length"), "file_type": first.get("file_type"), "files": found}


def security(files: list[FileRef], results: dict[str, dict]) -> dict:
    """{status: safe|warning|dangerous|unscanned, files: [...]} over the files that can run code
    when loaded, and the ones not scanned yet."""
    entries = []
    for f in files:
        if not worth_inspecting(f.path):
            continue
        r = results.get(f.path)
        if r is None:
            entries.append({"path": f.path, "status": UNSCANNED})
        elif r.get("kind") in EXECUTABLE:
            entry = {"path": f.path, "kind": r["kind"], "status": r.get("status") or WARNING,
                     "pickles": r.get("pickles", [])}
            if r.get("error"):
                entry["error"] = r["error"]
            entries.append(entry)
    status = max((e["status"] for e in entries), key=_ORDER.index, default=SAFE)
    return {"status": status, "files": entries}


_PER_FILE = ("kind", "status", "parameters", "total", "file_type", "architecture", "error")


def per_file(results: dict[str, dict]) -> dict[str, dict]:
    """path -> what a file listing shows next to each file: parameter count, dtypes, scan badge."""
    return {path: {k: r[k] for k in _PER_FILE if r.get(k) is not None}
            for path, r in sorted(results.items()) if r.get("kind") not in ("other", "st_index")}


def model_fields(files: list[FileRef], results: dict[str, dict]) -> dict:
    """The keys GET /api/v1/models/{ns}/{name} carries."""
    st = safetensors_total(files, results)
    return {"safetensors": {"parameters": st["parameters"], "total": st["total"]} if st else None,
            "gguf": gguf_info(files, results), "security": security(files, results),
            "inspections": per_file(results)}


def hub_fields(files: list[FileRef], results: dict[str, dict], with_security: bool) -> dict:
    """model_info's ``safetensors`` (huggingface_hub's SafeTensorsInfo) and, when asked for with
    securityStatus=true, ``securityRepoStatus``."""
    out: dict = {}
    st = safetensors_total(files, results)
    if st:
        out["safetensors"] = {"parameters": st["parameters"], "total": st["total"]}
    g = gguf_info(files, results)
    if g:
        out["gguf"] = {"total": g["total"], "architecture": g["architecture"], "context_length": g["context_length"]}
    if with_security:
        sec = security(files, results)
        out["securityRepoStatus"] = {
            "scansDone": all(e["status"] != UNSCANNED for e in sec["files"]),
            "filesWithIssues": [
                {"path": e["path"], "level": {DANGEROUS: "unsafe", WARNING: "suspicious"}[e["status"]],
                 "pickleImports": [{"module": g["module"], "name": g["name"], "safety": g["severity"]}
                                   for p in e.get("pickles", []) for g in p["globals"]]}
                for e in sec["files"] if e["status"] in (DANGEROUS, WARNING)],
        }
    return out
