"""Bare repositories on disk: where they live, how they are made, and their refs (pygit2).

Every function here is synchronous and may touch the disk; async callers run them with
``asyncio.to_thread`` so libgit2 never blocks the event loop.
"""

import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from importlib import resources
from pathlib import Path

import pygit2
import structlog

from modelrepo.errors import Conflict, InvalidInput, NotFound, model_not_found
from modelrepo.names import check_name, check_ref_name

log = structlog.get_logger("modelrepo.repos")

T = TypeVar("T")
HOOK_NAMES = ("pre-receive", "post-receive")
# Applied to each repository's config at creation and on start-up.
REPO_CONFIG = {
    "receive.fsckObjects": "true",
    "uploadpack.allowFilter": "true",
    "uploadpack.allowReachableSHA1InWant": "true",
    "core.logAllRefUpdates": "true",
}


def hook_source() -> bytes:
    """The hook executable shipped with the package (wheel) or beside it (source checkout), with
    its interpreter pinned to the daemon's own Python in isolated, no-site mode: the hook is
    stdlib-only, and `env python3` through a version-manager shim cost ~100 ms per hook per push."""
    try:
        data = resources.files("modelrepo").joinpath("_hooks/modelrepo-hook").read_bytes()
    except (FileNotFoundError, OSError):
        data = (Path(__file__).resolve().parents[3] / "hooks" / "modelrepo-hook").read_bytes()
    body = data.split(b"\n", 1)[1] if data.startswith(b"#!") else data
    return b"#!" + os.fsencode(sys.executable) + b" -IS\n" + body


@dataclass(frozen=True)
class RepoStore:
    root: Path

    def path(self, namespace: str, name: str) -> Path:
        """The bare repository directory. Names are validated and the result is checked to be
        inside the root, so no request string can ever name a path outside it."""
        check_name(namespace, "namespace")
        check_name(name, "model")
        root = self.root.resolve()
        p = (root / namespace.lower() / f"{name.lower()}.git").resolve()
        if p.parent.parent != root:
            raise InvalidInput("invalid repository path")
        return p

    def create(self, namespace: str, name: str, default_branch: str) -> Path:
        """Called inside the transaction that inserted the model's row: the unique name holds off
        every other create of this name (in any process) until that transaction ends, so a
        directory already at the path belongs to no model. It is moved aside (kept for the
        operator, named ``.orphaned.*``, until gc sweeps leftovers) rather than refusing the name forever: a write racing a
        delete once left one behind (test_delete_races) and the name could never be used again."""
        path = self.path(namespace, name)
        if path.exists():
            aside = path.with_name(f".orphaned.{path.name}.{time.time_ns()}")
            os.rename(path, aside)
            log.warning("orphaned_repository_moved_aside", path=str(path), moved_to=str(aside),
                        entries=sorted(str(p.relative_to(aside)) for p in aside.rglob("*"))[:50])
        path.parent.mkdir(parents=True, exist_ok=True)
        # Build in a temp dir beside the target and rename: a half-made repository is never visible.
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            pygit2.init_repository(str(tmp), bare=True, initial_head=f"refs/heads/{default_branch}")
            configure(tmp)
            os.rename(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    def trash(self, namespace: str, name: str) -> Path | None:
        """Rename the repository out of the way (a concurrent clone sees it gone); the caller
        removes the returned directory at leisure."""
        path = self.path(namespace, name)
        if not path.exists():
            return None
        trash = path.with_name(f".deleted.{path.name}.{time.time_ns()}")
        os.rename(path, trash)
        return trash

    def all_repositories(self) -> list[Path]:
        if not self.root.exists():
            return []
        return [p for p in self.root.glob("*/*.git") if p.is_dir() and not p.name.startswith(".")]


def _directory_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


class Held:
    """A repository as a read (or a git process) found it, to tell afterwards whether a delete, by
    this or another process, renamed it away or a delete and a create replaced it meanwhile.

    A read racing a delete fails in whatever way libgit2 or git meets the vanished files
    ("repository not found", a missing object read as "no such revision", git exiting 128): only
    the directory's identity before and after tells that apart from a real failure. Either way the
    answer is then the one the request would have had a moment later, byte for byte the missing
    model's 404. Synchronous (a stat): async callers run it in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.before = _directory_id(path)
        if self.before is None:
            raise model_not_found()

    def check(self) -> None:
        """Raise the missing model's 404 if the repository is no longer the one first found."""
        if _directory_id(self.path) != self.before:
            raise model_not_found()


def stable_read(path: Path, read: Callable[..., T], *args: object) -> T:
    """``read(path, *args)``, answered as the model's 404 when the repository was not there, or was
    renamed away or replaced while it ran (``Held``). Checked after a success too: a read that
    spanned a delete and a create may have mixed two models' objects."""
    held = Held(path)
    try:
        result = read(path, *args)
    except Exception:
        held.check()
        raise
    held.check()
    return result


def configure(path: Path) -> None:
    """Set our git config and (re)install the hooks; idempotent, cheap when nothing changed."""
    repo = pygit2.Repository(str(path))
    for key, value in REPO_CONFIG.items():
        current = repo.config[key] if key in repo.config else None
        if current != value:
            repo.config[key] = value
    hooks = path / "hooks"
    hooks.mkdir(exist_ok=True)
    for sample in hooks.glob("*.sample"):
        sample.unlink()
    src = hook_source()
    for hook in HOOK_NAMES:
        target = hooks / hook
        if target.exists() and target.read_bytes() == src:
            continue
        fd, tmp = tempfile.mkstemp(dir=hooks, prefix=f".{hook}.")
        with os.fdopen(fd, "wb") as f:
            f.write(src)
        os.chmod(tmp, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        os.replace(tmp, target)


# -- refs ------------------------------------------------------------------------------------

def _signature_json(sig: pygit2.Signature | None) -> dict | None:
    if sig is None:
        return None
    return {"name": sig.name, "email": sig.email, "date": _iso(sig.time, sig.offset)}


def _iso(ts: int, offset_minutes: int) -> str:
    from datetime import datetime, timedelta, timezone  # noqa: PLC0415

    return datetime.fromtimestamp(ts, timezone(timedelta(minutes=offset_minutes))).isoformat()


def list_refs(path: Path) -> dict:
    repo = pygit2.Repository(str(path))
    branches, tags = [], []
    for ref_name in repo.references:
        ref = repo.references[ref_name]
        try:
            target = ref.resolve().target
            repo[target].peel(pygit2.Commit)
        except (KeyError, ValueError, pygit2.GitError):
            continue  # a ref to a blob or tree: not a branch or release we list
        if ref_name.startswith("refs/heads/"):
            commit = repo[target]
            branches.append({"name": ref_name[len("refs/heads/"):], "commit": str(target),
                             "date": _iso(commit.commit_time, commit.commit_time_offset)})
        elif ref_name.startswith("refs/tags/"):
            tags.append(_tag_json(repo, ref_name[len("refs/tags/"):], target))
    head = None
    if not repo.head_is_unborn:
        head = repo.head.shorthand
    else:
        head = repo.references["HEAD"].target.removeprefix("refs/heads/")
    return {"default_branch": head, "branches": sorted(branches, key=lambda b: b["name"]),
            "tags": sorted(tags, key=lambda t: t["name"])}


def _tag_json(repo: pygit2.Repository, name: str, target: pygit2.Oid) -> dict:
    obj = repo[target]
    if isinstance(obj, pygit2.Tag):
        commit = obj.peel(pygit2.Commit)
        return {"name": name, "commit": str(commit.id), "object": str(obj.id), "annotated": True,
                "message": obj.message, "tagger": _signature_json(obj.tagger)}
    commit = obj.peel(pygit2.Commit)
    return {"name": name, "commit": str(commit.id), "object": str(obj.id), "annotated": False,
            "message": None, "tagger": None}


def _resolve_commit(repo: pygit2.Repository, revision: str) -> pygit2.Commit:
    """A commit reachable from an existing branch or tag. Reflog forms (main@{1}) and objects no
    ref reaches (a refused push's or commit's leftovers) do not count: pointing a ref at those
    would publish content that never passed the push rules."""
    if (not isinstance(revision, str) or not revision or revision.startswith("-") or len(revision) > 255
            or "@{" in revision or ":" in revision):
        raise InvalidInput(f"invalid revision {revision!r}")
    try:
        commit = repo.revparse_single(revision).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise NotFound(f"revision {revision!r} not found", code="revision_not_found") from None
    if not _reachable(repo, commit.id):
        raise NotFound(f"revision {revision!r} not found", code="revision_not_found")
    return commit


def _reachable(repo: pygit2.Repository, oid: pygit2.Oid) -> bool:
    for name in repo.references:
        if not name.startswith(("refs/heads/", "refs/tags/")):
            continue
        try:
            tip = repo[repo.references[name].resolve().target].peel(pygit2.Commit).id
        except (KeyError, ValueError, pygit2.GitError):
            continue
        if tip == oid or repo.descendant_of(tip, oid):
            return True
    return False


def create_tag(path: Path, name: str, revision: str, message: str, tagger: pygit2.Signature) -> dict:
    check_ref_name(name, "tag")
    repo = pygit2.Repository(str(path))
    if f"refs/tags/{name}" in repo.references:
        raise Conflict(f"tag {name!r} already exists", code="tag_exists")
    commit = _resolve_commit(repo, revision)
    msg = message if message.endswith("\n") else message + "\n"
    try:
        oid = repo.create_tag(name, commit.id, pygit2.enums.ObjectType.COMMIT, tagger, msg)
    except (ValueError, pygit2.AlreadyExistsError):
        raise Conflict(f"tag {name!r} already exists", code="tag_exists") from None
    return _tag_json(repo, name, oid)


def delete_ref(path: Path, ref: str, what: str) -> None:
    repo = pygit2.Repository(str(path))
    try:
        repo.references.delete(ref)
    except KeyError:
        raise NotFound(f"{what} {ref.split('/', 2)[-1]!r} not found", code=f"{what}_not_found") from None


def create_branch(path: Path, name: str, revision: str) -> dict:
    check_ref_name(name, "branch")
    repo = pygit2.Repository(str(path))
    if f"refs/heads/{name}" in repo.references:
        raise Conflict(f"branch {name!r} already exists", code="branch_exists")
    commit = _resolve_commit(repo, revision)
    try:
        repo.references.create(f"refs/heads/{name}", commit.id)
    except pygit2.AlreadyExistsError:
        raise Conflict(f"branch {name!r} already exists", code="branch_exists") from None
    return {"name": name, "commit": str(commit.id)}


def set_default_branch(path: Path, branch: str) -> None:
    check_ref_name(branch, "branch")
    repo = pygit2.Repository(str(path))
    has_branches = any(r.startswith("refs/heads/") for r in repo.references)
    if has_branches and f"refs/heads/{branch}" not in repo.references:
        raise NotFound(f"branch {branch!r} not found", code="branch_not_found")
    repo.references["HEAD"].set_target(f"refs/heads/{branch}")


def ref_target(path: Path, ref: str, what: str) -> str:
    repo = pygit2.Repository(str(path))
    try:
        return str(repo.references[ref].target)
    except KeyError:
        raise NotFound(f"{what} {ref.split('/', 2)[-1]!r} not found", code=f"{what}_not_found") from None
