"""What inspections mean for a push and for a deployment: pure functions over findings.

The push rule (``pickle_problems``) is one of the judge's (push/judge.py): it returns typed
``Problem``s with their own code, the same at every door. The deploy gate's refusals are
(code, message, path) tuples: a deployment is no ref change. Every message says which file,
which member of a zip, which callable, and how to fix it. Gathering the findings (inspecting
what a push or a tag holds) is ``gather_findings``'s job.
"""

import asyncio
import posixpath
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import pygit2

from modelrepo.inspect.formats import DANGEROUS, worth_inspecting
from modelrepo.inspect.refs import FileRef
from modelrepo.inspect.service import Inspections
from modelrepo.inspect.summary import EXECUTABLE
from modelrepo.push.problems import Code, Problem

Refusal = tuple[str, str, str]  # (code, message, path): the deploy gate's
# Plain blobs are small by push rule (push.max_plain_blob); one past this is refused for its size
# and is not read into memory to be scanned.
MAX_BLOB_READ = 64 * 1024 * 1024
POLICIES = ("refuse", "warn", "allow")


@dataclass(frozen=True)
class Finding:
    path: str
    inspection: dict

    @property
    def executable(self) -> bool:
        """pickle.load / torch.load / np.load(allow_pickle=True) would run it."""
        kind = self.inspection.get("kind")
        return kind in ("pickle", "numpy") or kind == "zip" and bool(self.inspection.get("pickles"))

    @property
    def dangerous(self) -> bool:
        return self.inspection.get("status") == DANGEROUS

    def callables(self) -> list[tuple[str | None, str]]:
        """(zip member or None, module.name) of every dangerous import."""
        return [(p.get("member"), f"{g['module']}.{g['name']}")
                for p in self.inspection.get("pickles", []) for g in p.get("globals", [])
                if g.get("severity") == DANGEROUS]


def fix_for(path: str) -> str:
    stem = posixpath.splitext(path)[0]
    return (f"convert to safetensors from a copy you trust: python -c \"import torch; from safetensors.torch "
            f"import save_file; save_file(torch.load('{path}', weights_only=True), '{stem}.safetensors')\" "
            f"&& git rm {path} && git add {stem}.safetensors && git commit && git push")


def describe(f: Finding) -> str:
    parts = []
    for member, callable_ in f.callables():
        parts.append(f"{member + ' ' if member else ''}imports {callable_}")
    what = "; ".join(parts) or "is a pickle that could not be scanned"
    return f"{f.path}: {what}, which runs code when the file is loaded (pickle)"


def pickle_problems(findings: Iterable[Finding], policy: str) -> list[Problem]:
    """push.pickle_policy: refuse (default) refuses a push bringing a dangerous pickle; warn and
    allow accept it (warn flags it: ``pickle_warnings``)."""
    if policy != "refuse":
        return []
    return [Problem(Code.DANGEROUS_PICKLE, f"{describe(f)}. Refused by push.pickle_policy=refuse. "
                    f"Fix: {fix_for(f.path)}", path=f.path) for f in findings if f.dangerous]


def pickle_warnings(findings: Iterable[Finding], policy: str) -> list[Problem]:
    """Under push.pickle_policy=warn: what an accepted push is told (``remote:`` lines) and logged."""
    if policy != "warn":
        return []
    return [Problem(Code.DANGEROUS_PICKLE, f"warning: {describe(f)}. Accepted (push.pickle_policy=warn); "
                    f"{fix_for(f.path)}", path=f.path) for f in findings if f.dangerous]


def deploy_problems(findings: Iterable[Finding], require_safe_weights: bool) -> list[Refusal]:
    """A dangerous pickle is never deployed; with deploy.require_safe_weights no pickle is."""
    out = []
    for f in findings:
        if f.dangerous:
            out.append((str(Code.DANGEROUS_PICKLE), f"{describe(f)}. Fix: {fix_for(f.path)}", f.path))
        elif require_safe_weights and f.executable:
            out.append(("unsafe_weights", f"{f.path}: is a pickle-based file ({f.inspection.get('kind')}) and "
                        f"deploy.require_safe_weights is true. Fix: {fix_for(f.path)}", f.path))
    return out


async def gather_findings(inspections: Inspections, files: Iterable[FileRef],
                          read_blob: Callable[[str], Awaitable[bytes | None]]) -> list[Finding]:
    """Inspect (or look up) every file worth it: LFS objects through the store, plain blobs
    through ``read_blob`` (git, one at a time: they are small by push rule)."""
    files = [f for f in files if worth_inspecting(f.path)]
    if not files:
        return []
    # Two catalog queries for the lot; only what is missing or stale is read and inspected here.
    pending = set(await inspections.pending(files))
    stored = await inspections.get(f.key for f in files if f not in pending)
    out = []
    for f in files:
        if f not in pending:
            found = stored.get(f.key)
        elif f.lfs_oid:
            found = await inspections.object(f.lfs_oid, f.size, f.path)
        elif f.size <= MAX_BLOB_READ:
            data = await read_blob(f.blob_oid)
            found = None if data is None else await inspections.blob(f.blob_oid, data, f.path)
        else:
            continue
        if found is not None and found.get("kind") in EXECUTABLE:
            out.append(Finding(f.path, found))
    return out


def repo_blob_reader(repo_path) -> Callable[[str], Awaitable[bytes | None]]:
    """read_blob for a repository on disk (pygit2 in a thread)."""
    def read(oid: str) -> bytes | None:
        try:
            obj = pygit2.Repository(str(repo_path))[oid]
        except (KeyError, ValueError):
            return None
        return obj.data if isinstance(obj, pygit2.Blob) else None

    async def read_async(oid: str) -> bytes | None:
        return await asyncio.to_thread(read, oid)

    return read_async


def pushed_files(blobs: Iterable, linked: dict[str, int]) -> list[FileRef]:
    """The files of a push or a Hub commit (push.rules.NewBlob: new blobs, and the files of a
    pushed tag's tree) that can be inspected, each (path, object) once: plain blobs, and pointers
    to LFS objects this repository holds — an object linked only to someone else's model is never
    read on a pusher's behalf (its pointer is refused by the LFS rule anyway)."""
    out: dict[tuple[str, str], FileRef] = {}
    for b in blobs:
        if not worth_inspecting(b.path):
            continue  # most of a 10,000-file push: never looked at
        if b.pointer is None:
            out.setdefault((b.path, b.oid), FileRef(b.path, b.oid, None, b.size))
        elif linked.get(b.pointer.oid) == b.pointer.size:
            out.setdefault((b.path, b.pointer.oid), FileRef(b.path, b.oid, b.pointer.oid, b.pointer.size))
    return list(out.values())


def tree_files(entries: Iterable) -> list[FileRef]:
    """FileRefs of a tree listing (git.snapshot.FileEntry), for the files worth inspecting."""
    return [FileRef(e.path, e.blob_oid, e.lfs_oid, e.size) for e in entries if worth_inspecting(e.path)]
