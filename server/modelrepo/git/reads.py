"""Repository reads for the Hugging Face Hub-compatible API (pygit2, synchronous: run in a thread).

Revisions are what the Hub accepts: a branch, a tag, or a full 40-hex commit sha; a short name is
looked up as refs/heads/<rev> first, then refs/tags/<rev> (as the Hub does), and a full ref name
(refs/heads/x) is accepted too.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import pygit2

from modelrepo.lfs.pointer import POINTER_MAX, parse_pointer

SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Entry:
    type: str  # "file" | "directory"
    path: str
    oid: str  # git object id (blob or tree)
    size: int  # LFS object size for pointers, blob size otherwise; 0 for directories
    lfs_oid: str | None = None
    pointer_size: int | None = None

    def tree_json(self) -> dict:
        if self.type == "directory":
            return {"type": "directory", "path": self.path, "oid": self.oid, "size": 0}
        d: dict = {"type": "file", "path": self.path, "oid": self.oid, "size": self.size}
        if self.lfs_oid:
            d["lfs"] = {"oid": self.lfs_oid, "size": self.size, "pointerSize": self.pointer_size}
        return d

    def sibling_json(self) -> dict:
        d: dict = {"rfilename": self.path, "size": self.size, "blobId": self.oid}
        if self.lfs_oid:
            d["lfs"] = {"sha256": self.lfs_oid, "size": self.size, "pointerSize": self.pointer_size}
        return d


def resolve(path: Path, revision: str) -> pygit2.Commit | None:
    repo = pygit2.Repository(str(path))
    candidates = []
    if SHA_RE.match(revision):
        candidates.append(revision)
    if revision.startswith("refs/"):
        candidates.append(revision)
    else:
        candidates += [f"refs/heads/{revision}", f"refs/tags/{revision}"]
    for candidate in candidates:
        try:
            if candidate.startswith("refs/"):
                if candidate not in repo.references:
                    continue
                obj = repo[repo.references[candidate].resolve().target]
            else:
                obj = repo[candidate]
            return obj.peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            continue
    return None


def _entry(repo: pygit2.Repository, path: str, tree_entry: pygit2.Object) -> Entry | None:
    """None for what is neither file nor directory (a submodule's gitlink)."""
    if tree_entry.type_str == "commit":
        return None
    if tree_entry.type_str == "tree":
        return Entry("directory", path, str(tree_entry.id), 0)
    _, size = repo.odb.read_header(tree_entry.id)
    if size < POINTER_MAX:
        pointer = parse_pointer(repo[tree_entry.id].data)
        if pointer:
            return Entry("file", path, str(tree_entry.id), pointer.size, pointer.oid, size)
    return Entry("file", path, str(tree_entry.id), size)


def list_tree(path: Path, commit_id: str, subpath: str = "", recursive: bool = False) -> list[Entry] | None:
    """Entries under ``subpath`` (None if it is not a directory of that commit), directories first
    within each level like the Hub, in a stable order for pagination."""
    repo = pygit2.Repository(str(path))
    tree = repo[commit_id].peel(pygit2.Commit).tree
    if subpath:
        try:
            obj = repo[tree[subpath].id]
        except KeyError:
            return None
        if not isinstance(obj, pygit2.Tree):
            return None
        tree = obj
    out: list[Entry] = []
    stack = [(subpath + "/" if subpath else "", tree)]
    while stack:
        prefix, current = stack.pop(0)
        for item in current:
            full = prefix + item.name
            entry = _entry(repo, full, item)
            if entry is None:
                continue
            out.append(entry)
            if recursive and entry.type == "directory":
                stack.append((full + "/", repo[item.id]))
    return out


def all_files(path: Path, commit_id: str) -> list[Entry]:
    return [e for e in list_tree(path, commit_id, recursive=True) or [] if e.type == "file"]


def file_entry(path: Path, commit_id: str, file_path: str) -> Entry | None:
    repo = pygit2.Repository(str(path))
    tree = repo[commit_id].peel(pygit2.Commit).tree
    try:
        item = tree[file_path]
    except (KeyError, ValueError):
        return None
    entry = _entry(repo, file_path, item)
    return entry if entry is not None and entry.type == "file" else None


def read_blob(path: Path, blob_id: str) -> bytes:
    return pygit2.Repository(str(path))[blob_id].data


def commit_time(path: Path, commit_id: str) -> int:
    return pygit2.Repository(str(path))[commit_id].commit_time
