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


def tree_page(path: Path, commit_id: str, subpath: str, offset: int, limit: int) -> tuple[list[Entry], int] | None:
    """One page of a directory (directories first, then files, each by name) and the directory's
    size; None if ``subpath`` is not a directory. Only the page's blobs are looked at, so a
    directory of 10,000 files costs one tree read plus ``limit`` headers."""
    repo = pygit2.Repository(str(path))
    tree = repo[commit_id].peel(pygit2.Commit).tree
    if subpath:
        try:
            tree = repo[tree[subpath].id]
        except (KeyError, ValueError):
            return None
        if not isinstance(tree, pygit2.Tree):
            return None
    # Git keeps tree entries sorted by name: one pass splits them, no sort needed.
    dirs, files = [], []
    for item in tree:
        kind = item.type_str
        if kind == "tree":
            dirs.append(item)
        elif kind == "blob":
            files.append(item)
    items = dirs + files
    prefix = subpath + "/" if subpath else ""
    page = [_entry(repo, prefix + item.name, item) for item in items[offset:offset + limit]]
    return [e for e in page if e is not None], len(items)


@dataclass(frozen=True)
class CommitInfo:
    id: str
    parents: tuple[str, ...]
    author: str
    email: str
    time: int
    offset: int  # minutes east of UTC, as git records it
    message: str

    @property
    def title(self) -> str:
        return self.message.split("\n", 1)[0]


def _commit_info(commit: pygit2.Commit) -> CommitInfo:
    return CommitInfo(str(commit.id), tuple(str(p) for p in commit.parent_ids), commit.author.name,
                      commit.author.email, commit.commit_time, commit.commit_time_offset, commit.message)


def history(path: Path, commit_id: str, offset: int, limit: int) -> tuple[list[CommitInfo], bool]:
    """A page of the history reachable from a commit, newest first (git log order), and whether
    there is more after it."""
    repo = pygit2.Repository(str(path))
    # git log --date-order: newest first, and never a parent before its children. TIME alone
    # orders commits made within one second (a script, a fast rebase) arbitrarily.
    walker = repo.walk(repo[commit_id].peel(pygit2.Commit).id,
                       pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.TIME)
    out: list[CommitInfo] = []
    for i, commit in enumerate(walker):
        if i < offset:
            continue
        if len(out) == limit:
            return out, True
        out.append(_commit_info(commit))
    return out, False


@dataclass(frozen=True)
class Change:
    status: str  # added | modified | deleted | renamed | ...
    path: str
    old_path: str | None = None


def commit_changes(path: Path, sha: str, limit: int = 1000) -> tuple[CommitInfo, list[Change], int] | None:
    """A commit, the files it changed against its first parent (all of them for a root commit),
    at most ``limit`` of them, and how many there are; None if ``sha`` is not a commit."""
    repo = pygit2.Repository(str(path))
    try:
        commit = repo[sha].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    if commit.parents:
        diff = repo.diff(commit.parents[0].tree, commit.tree)
    else:
        diff = commit.tree.diff_to_tree(swap=True)
    diff.find_similar()
    changes = []
    for delta in list(diff.deltas)[:limit]:
        status = delta.status_char()
        kind = {"A": "added", "D": "deleted", "M": "modified", "R": "renamed", "C": "copied",
                "T": "type changed"}.get(status, status)
        new, old = delta.new_file.path, delta.old_file.path
        changes.append(Change(kind, old if status == "D" else new, old if status in ("R", "C") else None))
    return _commit_info(commit), changes, len(diff)
