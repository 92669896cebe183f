"""Read what the catalog mirrors from a repository (pygit2, synchronous: run in a thread).

Post-receive calls this after git has moved the refs, so the catalog is rebuilt from the
repository itself, never from what the client claimed.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from modelrepo.models.card import ModelCard, parse_card
from modelrepo.lfs.pointer import POINTER_MAX, parse_pointer
from modelrepo.git.repos import _iso, _signature_json


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    blob_oid: str
    lfs_oid: str | None = None
    pointer_size: int | None = None

    def to_json(self) -> dict:
        d: dict = {"path": self.path, "size": self.size, "blob_id": self.blob_oid}
        if self.lfs_oid:
            d["lfs"] = {"oid": self.lfs_oid, "size": self.size, "pointer_size": self.pointer_size}
        return d


@dataclass(frozen=True)
class RefEntry:
    kind: str  # branch | tag
    name: str
    commit: str
    message: str | None = None
    tagger: dict | None = None
    date: str | None = None

    def row(self) -> dict:
        return {"kind": self.kind, "name": self.name, "commit": self.commit, "message": self.message,
                "tagger": json.dumps(self.tagger) if self.tagger else None, "date": self.date}


@dataclass
class Snapshot:
    refs: list[RefEntry] = field(default_factory=list)
    head_commit: str | None = None
    files: list[FileEntry] = field(default_factory=list)
    card: ModelCard = field(default_factory=ModelCard)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def _open(path: Path) -> pygit2.Repository:
    return pygit2.Repository(str(path))


def list_files(repo: pygit2.Repository, commit: pygit2.Commit) -> list[FileEntry]:
    """Every file of a commit's tree; LFS pointers resolved to the object they stand for."""
    out: list[FileEntry] = []
    odb = repo.odb
    stack: list[tuple[str, pygit2.Tree]] = [("", commit.tree)]
    while stack:
        prefix, tree = stack.pop()
        for entry in tree:
            path = f"{prefix}{entry.name}"
            if entry.type_str == "tree":
                stack.append((path + "/", repo[entry.id]))
            elif entry.type_str == "blob":
                # The header alone gives the size: loading every blob of a big tree would cost its
                # whole size in memory. Only pointer-sized blobs are read.
                _, size = odb.read_header(entry.id)
                pointer = parse_pointer(repo[entry.id].data) if size < POINTER_MAX else None
                if pointer:
                    out.append(FileEntry(path, pointer.size, str(entry.id), pointer.oid, size))
                else:
                    out.append(FileEntry(path, size, str(entry.id)))
    out.sort(key=lambda f: f.path)
    return out


def read_blob(repo: pygit2.Repository, commit: pygit2.Commit, path: str) -> bytes | None:
    try:
        entry = commit.tree[path]
    except KeyError:
        return None
    obj = repo[entry.id]
    return obj.data if isinstance(obj, pygit2.Blob) else None


def read_refs(repo: pygit2.Repository) -> list[RefEntry]:
    refs = []
    for name in repo.references:
        if not name.startswith(("refs/heads/", "refs/tags/")):
            continue
        try:
            obj = repo[repo.references[name].resolve().target]
            commit = obj.peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            continue
        short = name.split("/", 2)[2]
        if name.startswith("refs/heads/"):
            refs.append(RefEntry("branch", short, str(commit.id), date=_iso(commit.commit_time, commit.commit_time_offset)))
        elif isinstance(obj, pygit2.Tag):
            tagger = _signature_json(obj.tagger)
            refs.append(RefEntry("tag", short, str(commit.id), obj.message, tagger,
                                 tagger["date"] if tagger else None))
        else:
            refs.append(RefEntry("tag", short, str(commit.id), None, None,
                                 _iso(commit.commit_time, commit.commit_time_offset)))
    return refs


def read_snapshot(path: Path, default_branch: str) -> Snapshot:
    repo = _open(path)
    snap = Snapshot(refs=read_refs(repo))
    ref = f"refs/heads/{default_branch}"
    if ref in repo.references:
        commit = repo[repo.references[ref].resolve().target].peel(pygit2.Commit)
        snap.head_commit = str(commit.id)
        snap.files = list_files(repo, commit)
        snap.card = parse_card(read_blob(repo, commit, "README.md"))
    return snap


def read_at(path: Path, revision: str) -> tuple[str, ModelCard, list[FileEntry]] | None:
    """(commit, card, files) at a revision, or None if it does not resolve to a commit."""
    repo = _open(path)
    try:
        commit = repo.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        return None
    return str(commit.id), parse_card(read_blob(repo, commit, "README.md")), list_files(repo, commit)


def card_at(path: Path, revision: str) -> ModelCard | None:
    """The model card at a revision without listing its files (None if it does not resolve)."""
    repo = _open(path)
    try:
        commit = repo.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        return None
    return parse_card(read_blob(repo, commit, "README.md"))
