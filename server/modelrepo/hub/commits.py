"""Commits made through the Hub API (``create_commit``, ``upload_folder``): built server-side with
pygit2, judged by the judge a git push meets (on the built commit, before any ref points at it),
published with a compare-and-swap ref update, then given the same post-receive effects.

Regular files arrive base64-encoded in the NDJSON body and are written as blobs while the body is
read; LFS files arrive as (oid, size) of objects the client uploaded through the LFS batch API
beforehand, and land as pointers, with `.gitattributes` extended when a path is not yet covered.
"""

import asyncio
import base64
import binascii
import json
import posixpath
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pygit2

from modelrepo.accounts.access import Identity
from modelrepo.errors import Conflict, EntryNotFound, InvalidInput, NotFound, PreconditionFailed, TooLarge
from modelrepo.git import repos
from modelrepo.git.runner import GitRunner
from modelrepo.lfs.pointer import LfsPointer, format_pointer
from modelrepo.lfs.service import OID_RE, Lfs
from modelrepo.models.service import Model, Models
from modelrepo.names import check_ref_name
from modelrepo.push.attributes import LFS_ATTRS, attr_lines, lfs_covered
from modelrepo.push.effects import PushEffects
from modelrepo.push.judge import Judge
from modelrepo.push.problems import PushRefused
from modelrepo.push.rules import ZERO, RefUpdate, check_lfs_objects

REFUSED = "commit refused: "


@dataclass
class CommitPlan:
    summary: str = ""
    description: str = ""
    parent: str | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (blob oid, size)
    lfs: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # path -> (sha256, size)
    deleted_files: list[str] = field(default_factory=list)
    deleted_folders: list[str] = field(default_factory=list)


def _write_blob(repo: pygit2.Repository, path: str, content: str) -> tuple[str, int]:
    """Decode and store one regular file (in a thread: both are CPU and disk work)."""
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{path}: content is not valid base64") from None
    return str(repo.create_blob(data)), len(data)


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not path or len(path) > 4096:
        raise InvalidInput("every operation needs a path")
    parts = path.strip("/").split("/")
    if (path.startswith("/") or "\x00" in path or "\\" in path
            or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts)):
        raise InvalidInput(f"invalid path {path!r}")
    if parts[-1].lower() == ".gitmodules":
        # Submodules have no place in a model repository (and a hostile .gitmodules is a classic
        # git attack); pushes get git's fsck, commits built here get this.
        raise InvalidInput(".gitmodules is not allowed")
    return path.strip("/")


async def read_ndjson(lines: AsyncIterator[bytes], repo: pygit2.Repository) -> CommitPlan:
    """Parse the NDJSON operations, writing regular files as blobs as they arrive."""
    plan = CommitPlan()
    seen_header = False
    async for raw in lines:
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError):
            raise InvalidInput("malformed NDJSON line: expected {\"key\": ..., \"value\": {...}}") from None
        if not isinstance(value, dict):
            raise InvalidInput(f"{key}: value must be an object")
        if key == "header":
            seen_header = True
            plan.summary = str(value.get("summary") or "")
            plan.description = str(value.get("description") or "")
            parent = value.get("parentCommit")
            if parent is not None and not (isinstance(parent, str) and 5 <= len(parent) <= 40):
                raise InvalidInput("parentCommit must be a commit sha")
            plan.parent = parent
        elif key == "file":
            path = _check_path(value.get("path"))
            if value.get("encoding", "base64") != "base64":
                raise InvalidInput(f"{path}: only base64 encoding is supported")
            content = value.get("content") or ""
            if not isinstance(content, str):
                raise InvalidInput(f"{path}: content must be a base64 string")
            plan.files[path] = await asyncio.to_thread(_write_blob, repo, path, content)
        elif key == "lfsFile":
            path = _check_path(value.get("path"))
            oid, size = value.get("oid"), value.get("size")
            if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not OID_RE.match(oid):
                raise InvalidInput(f"{path}: lfsFile needs algo sha256 and a 64-hex oid")
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
                raise InvalidInput(f"{path}: invalid size")
            plan.lfs[path] = (oid, size)
        elif key == "deletedFile":
            plan.deleted_files.append(_check_path(value.get("path")))
        elif key == "deletedFolder":
            plan.deleted_folders.append(_check_path(value.get("path")))
        else:
            raise InvalidInput(f"unknown operation {key!r}")
    if not seen_header:
        raise InvalidInput("the first NDJSON line must be the header")
    return plan


async def split_lines(chunks: AsyncIterator[bytes], max_body: int, max_line: int) -> AsyncIterator[bytes]:
    """NDJSON lines from a streamed body, bounding the body and each line (413) rather than
    trusting them: one line holds one regular file, and regular files are small by rule."""
    buf = bytearray()
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > max_body:
            raise TooLarge(f"commit body larger than {max_body} bytes: upload big files through LFS")
        buf += chunk
        while (nl := buf.find(b"\n")) >= 0:
            yield bytes(buf[:nl])
            del buf[:nl + 1]
        if len(buf) > max_line:
            raise TooLarge(f"an NDJSON line is longer than {max_line} bytes: files over push.max_plain_blob "
                           "must be uploaded through LFS")
    if buf:
        yield bytes(buf)


def _lfs_covered(path: str, gitattributes: bytes | None) -> bool:
    return gitattributes is not None and lfs_covered(path, attr_lines(gitattributes))


def _pattern_for(path: str, weight_patterns: tuple[str, ...]) -> str:
    ext = posixpath.splitext(path)[1]
    if ext and f"*{ext}" in weight_patterns:
        return f"*{ext}"
    # An exact path; gitattributes patterns treat spaces and specials literally only when escaped.
    return "/" + "".join(f"\\{c}" if c in " *?[]\\" else c for c in path)


COMMIT_ATTEMPTS = 8


class _BranchMoved(Exception):
    """git update-ref's compare-and-swap failed: the branch is no longer where the commit was built."""


class HubCommits:
    def __init__(self, models: Models, lfs: Lfs, judge: Judge, effects: PushEffects, git: GitRunner,
                 max_body: int) -> None:
        self.models = models
        self.lfs = lfs
        self.judge = judge
        self.effects = effects
        self.git = git
        self.max_body = max_body

    async def commit(self, identity: Identity, ns: str, name: str, revision: str, body: AsyncIterator[bytes],
                     clone_url: str) -> str:
        model = await self.models.for_write(identity, ns, name)
        branch = revision.removeprefix("refs/heads/")
        try:
            check_ref_name(branch, "branch")
        except InvalidInput:
            raise NotFound(f"Invalid rev id: {revision}", code="revision_not_found") from None
        path = self.models.path(model)
        held = await asyncio.to_thread(repos.Held, path)
        try:
            repo = pygit2.Repository(str(path))
            max_line = self.judge.max_plain_blob * 4 // 3 + 64 * 1024
            plan = await read_ndjson(split_lines(body, self.max_body, max_line), repo)
            return await asyncio.shield(self._apply(identity, model, branch, plan, clone_url))
        except Exception:
            # Deleted (by any process) while the commit was read, built or judged: whatever that
            # looked like (libgit2's "not found", the judge missing LFS links the delete took),
            # the answer is the missing model's 404, as at every other door (repos.Held).
            await asyncio.to_thread(held.check)
            raise

    async def _apply(self, identity: Identity, model: Model, branch: str, plan: CommitPlan, clone_url: str) -> str:
        """A commit without ``parentCommit`` goes on top of whatever the branch holds when it lands,
        as on the Hub: when another commit (from any worker or replica) moved the branch between
        the build and the compare-and-swap, it is built and judged again on the new tip. With a
        ``parentCommit`` the caller asked for exactly that parent, so a moved branch is the Hub's
        412."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                return await self._attempt(identity, model, branch, plan, clone_url)
            except _BranchMoved as moved:
                if plan.parent:
                    raise PreconditionFailed("A commit has happened since the commit was built; the branch is no "
                                             f"longer at {plan.parent}. Please refresh and try again.") from None
                if attempt == COMMIT_ATTEMPTS:
                    raise Conflict(f"the branch kept moving while the commit was built ({attempt} attempts); "
                                   f"try again ({moved})") from None
                await asyncio.sleep(random.uniform(0, 0.02 * attempt))  # out of lockstep with the other writers
        raise AssertionError("unreachable")

    async def _attempt(self, identity: Identity, model: Model, branch: str, plan: CommitPlan, clone_url: str) -> str:
        path = self.models.path(model)
        ref = f"refs/heads/{branch}"
        tip, tree_id, gitattributes = await asyncio.to_thread(self._current, path, ref)
        if tip is None and branch != model.default_branch:
            raise NotFound(f"Invalid rev id: {branch}", code="revision_not_found")
        if plan.parent and (tip is None or not tip.startswith(plan.parent.lower())):
            raise PreconditionFailed(f"A commit has happened since. The branch is at {tip}, not at {plan.parent}. "
                                     "Please refresh and try again.")
        # An lfsFile without a size takes the size of the object this repository holds; with
        # neither, no pointer can be written, and the judge's own rule says why.
        linked = await self.lfs.linked_sizes(model.id, sorted({oid for oid, _ in plan.lfs.values()}))
        pointers = {p: LfsPointer(oid, size if size is not None else linked.get(oid, 0))
                    for p, (oid, size) in plan.lfs.items()}
        unsized = {p: pointers[p] for p, (oid, size) in plan.lfs.items() if size is None and oid not in linked}
        if unsized:
            raise PushRefused(check_lfs_objects(unsized, linked, branch), REFUSED)
        # The .gitattributes this commit will have, not the one it replaces.
        if ".gitattributes" in plan.files:
            gitattributes = await asyncio.to_thread(lambda: pygit2.Repository(str(path))[
                plan.files[".gitattributes"][0]].data)
        elif ".gitattributes" in plan.deleted_files:
            gitattributes = None
        new_attributes = self._extend_attributes(gitattributes, list(pointers))
        try:
            new_commit = await asyncio.to_thread(self._build, path, tree_id, tip, plan, pointers, new_attributes,
                                                 identity)
        except KeyError as exc:
            raise EntryNotFound(f"A file with this name doesn't exist: {exc.args[0]}", tip) from None
        except (pygit2.GitError, ValueError) as exc:
            raise InvalidInput(f"cannot build this commit: {exc}") from None
        update = RefUpdate(tip or ZERO, new_commit, ref)
        verdict = await self.judge.check(path, model, identity, [update])
        if not verdict.ok:
            raise PushRefused(verdict.problems, REFUSED)
        await self._swap(path, ref, new_commit, tip)
        await self.effects.apply(model, [update], pusher=identity.name, clone_url=clone_url)
        return new_commit

    @staticmethod
    def _current(path, ref: str) -> tuple[str | None, str | None, bytes | None]:
        repo = pygit2.Repository(str(path))
        if ref not in repo.references:
            return None, None, None
        commit = repo[repo.references[ref].resolve().target].peel(pygit2.Commit)
        try:
            attrs = repo[commit.tree[".gitattributes"].id].data
        except KeyError:
            attrs = None
        return str(commit.id), str(commit.tree.id), attrs

    def _extend_attributes(self, current: bytes | None, lfs_paths: list[str]) -> bytes | None:
        """.gitattributes with a line for every LFS path not yet covered; None if nothing changes."""
        text = current or b""
        added = False
        for p in sorted(lfs_paths):
            if _lfs_covered(p, text if (current is not None or added) else None):
                continue
            line = f"{_pattern_for(p, self.judge.weight_patterns)} {LFS_ATTRS}\n".encode()
            if text and not text.endswith(b"\n"):
                text += b"\n"
            text += line
            added = True
        return text if added else None

    def _build(self, path, tree_id: str | None, tip: str | None, plan: CommitPlan,
               pointers: dict[str, LfsPointer], new_attributes: bytes | None, identity: Identity) -> str:
        """The commit object (no ref points at it yet; the judge looks at it first)."""
        repo = pygit2.Repository(str(path))
        index = pygit2.Index()
        if tree_id:
            index.read_tree(repo[tree_id])
        for folder in plan.deleted_folders:
            prefix = folder.rstrip("/") + "/"
            doomed = [e.path for e in index if e.path.startswith(prefix)]
            if not doomed:
                raise KeyError(folder)
            for p in doomed:
                index.remove(p)
        for p in plan.deleted_files:
            if p not in index:
                raise KeyError(p)
            index.remove(p)
        for p, (oid, _size) in plan.files.items():
            index.add(pygit2.IndexEntry(p, pygit2.Oid(hex=oid), pygit2.enums.FileMode.BLOB))
        for p, pointer in pointers.items():
            index.add(pygit2.IndexEntry(p, repo.create_blob(format_pointer(pointer)), pygit2.enums.FileMode.BLOB))
        if new_attributes is not None:
            oid = repo.create_blob(new_attributes)
            index.add(pygit2.IndexEntry(".gitattributes", oid, pygit2.enums.FileMode.BLOB))
        new_tree = index.write_tree(repo)
        now = int(time.time())
        sig = pygit2.Signature(identity.name or "modelrepo", f"{identity.name}@modelrepo.invalid", now, 0)
        message = plan.summary or "Upload files"
        if plan.description:
            message += "\n\n" + plan.description
        commit = repo.create_commit(None, sig, sig, message + "\n", new_tree, [pygit2.Oid(hex=tip)] if tip else [])
        return str(commit)

    async def _swap(self, path, ref: str, new: str, old: str | None) -> None:
        """Move the ref only if it still points where we built from (git update-ref's own CAS)."""
        proc = await asyncio.create_subprocess_exec(
            self.git.binary, "-C", str(path), "update-ref", "-m", "commit via Hub API", ref, new, old or ZERO,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=self.git.environment(None, None))
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise _BranchMoved(err.decode(errors="replace")[:200].strip())
