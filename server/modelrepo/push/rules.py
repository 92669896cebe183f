"""What a push is refused for, as pure functions over plain values.

Each rule returns ``Problem``s: a code, the ref or path, and a message that reaches the pusher
(``remote:`` lines or an API error) saying what is wrong and, where a command fixes it, ``Fix:``
and that command, written to run as is from the state the refused push left the user in (the
tests run every one of them). Gathering the facts is push/facts.py's job and choosing which rules
run is push/judge.py's; keeping the rules here means they are tested without git.
"""

import fnmatch
import functools
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelrepo.lfs.pointer import LfsPointer
from modelrepo.models.card import ModelCard
from modelrepo.push.attributes import LFS_ATTRS, attr_lines, lfs_covered, track_pattern
from modelrepo.push.problems import Code, Problem

ZERO = "0" * 40
MAX_LISTED = 20  # problems of one kind listed before "... and more"


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def created(self) -> bool:
        return self.old == ZERO

    @property
    def deleted(self) -> bool:
        return self.new == ZERO

    @property
    def is_tag(self) -> bool:
        return self.ref.startswith("refs/tags/")

    @property
    def is_branch(self) -> bool:
        return self.ref.startswith("refs/heads/")

    @property
    def short(self) -> str:
        return self.ref.split("/", 2)[2] if self.is_tag or self.is_branch else self.ref


@dataclass(frozen=True)
class NewBlob:
    oid: str
    path: str
    size: int
    pointer: LfsPointer | None
    ref: str = ""  # the first pushed ref it was found under


@dataclass(frozen=True)
class LockHolder:
    owner: str
    lock_id: str


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    return f"{n} B"


def short_ref(ref: str) -> str:
    return ref.split("/", 2)[-1]


def check_ref_updates(updates: Iterable[RefUpdate], *, namespace_admin: bool, default_branch: str,
                      allow_force_push: bool, deployed: Mapping[str, str], non_fast_forward: set[str],
                      non_commit: frozenset[str] = frozenset()) -> list[Problem]:
    """Protected refs: immutable release tags, refs in use by deployments, a linear default branch.

    ``deployed`` maps a ref (refs/tags/v1) to the deployment using it."""
    problems = []
    for u in updates:
        def found(code: Code, message: str) -> None:
            problems.append(Problem(code, f"{u.short}: {message}", ref=u.ref))  # noqa: B023 - called at once

        if not (u.is_tag or u.is_branch):
            problems.append(Problem(Code.REF_NAMESPACE, f"{u.ref}: only branches (refs/heads/*) and tags "
                                    "(refs/tags/*) can be pushed", ref=u.ref))
        elif u.ref in non_commit:
            found(Code.NOT_A_COMMIT, f"points at a blob or tree, not a commit; tag a commit instead: "
                                     f"git tag -a {u.short} <commit>")
        elif u.deleted and u.ref in deployed:
            found(Code.DEPLOYED_REF, f"cannot delete {'tag' if u.is_tag else 'branch'} {u.short!r}: deployment "
                                     f"{deployed[u.ref]!r} uses it. Stop the deployment first (PATCH "
                                     "/api/v1/deployments/{id} with status \"stopped\").")
        elif u.is_tag and not u.created and not namespace_admin:
            verb = "delete" if u.deleted else "move"
            found(Code.IMMUTABLE_TAG, f"tags are immutable releases; only a namespace admin can {verb} tag "
                                      f"{u.short!r}. Push a new tag instead: git tag -a <new-version> && "
                                      "git push origin <new-version>")
        elif u.is_branch and u.short == default_branch and u.deleted:
            found(Code.DEFAULT_BRANCH, f"cannot delete the default branch {u.short!r}; make another branch the "
                                       "default first")
        elif u.is_branch and u.short == default_branch and u.ref in non_fast_forward and not allow_force_push:
            found(Code.NON_FAST_FORWARD, "non-fast-forward update of the default branch is not allowed. "
                                         f"Integrate the remote changes first. Fix: git pull --rebase origin "
                                         f"{u.short} && git push origin {u.short}")
    return problems


@functools.lru_cache(maxsize=8)
def _weight_name(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """All weight patterns as one compiled regex: a 10,000-file push asks it 20,000 times."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or r"(?!)")


def is_weight_name(path: str, weight_patterns: Iterable[str]) -> bool:
    """Does the file's base name match a weight pattern (fnmatch, case-sensitive)?"""
    return _weight_name(tuple(weight_patterns)).match(posixpath.basename(path)) is not None


def must_be_lfs(path: str, size: int, *, max_plain_blob: int, weight_patterns: Iterable[str]) -> str | None:
    """Why a file of this name and size belongs in LFS, or None if git may store it: the one line
    drawn for pushes, Hub commits and the Hub's preupload answer alike."""
    if size > 0 and is_weight_name(path, weight_patterns):
        return "matches a weight pattern"
    if size > max_plain_blob:
        return f"is larger than {human(max_plain_blob)}"
    return None


def _migrate_fix(path: str, ref: str) -> str:
    pattern = track_pattern(path)
    if not ref.startswith("refs/heads/"):
        return (f"Fix the branch tag {short_ref(ref)} was made on (git lfs migrate import --include=\"{pattern}\" "
                "on that branch), then tag its new commit")
    branch = short_ref(ref)
    # Plain `migrate import` rewrites only the current branch's commits that no remote-tracking ref
    # has, and writes .gitattributes itself; `git lfs track` first would leave the tree dirty, which
    # migrate refuses.
    return (f"Rewriting the commits of {branch} that are not on the server yet stores it in LFS and adds "
            f".gitattributes (--everything would rewrite every local branch and tag, history already pushed "
            f"included; --no-rewrite only adds a commit on top, which leaves the file in the commits being "
            f"pushed). Fix: git checkout {branch} && git lfs migrate import --include=\"{pattern}\" && "
            f"git push origin {branch}")


def check_blobs(blobs: Iterable[NewBlob], *, max_plain_blob: int, weight_patterns: Iterable[str]) -> list[Problem]:
    """Weights and big files must be LFS pointers, not blobs in git's history."""
    patterns = tuple(weight_patterns)
    problems = []
    seen: set[str] = set()
    for b in blobs:
        if b.pointer is not None or b.path in seen:
            continue
        why = must_be_lfs(b.path, b.size, max_plain_blob=max_plain_blob, weight_patterns=patterns)
        if why is None:
            continue
        seen.add(b.path)
        problems.append(Problem(Code.LFS_REQUIRED, f"{b.path} ({human(b.size)}) must be stored with Git LFS ({why}). "
                                f"{_migrate_fix(b.path, b.ref)}", path=b.path, ref=b.ref or None))
    return problems


def needs_lfs(blob: NewBlob, weight_patterns: Iterable[str]) -> bool:
    """Must .gitattributes hand this path to LFS? (It is a pointer, or named like a weight.)"""
    return blob.pointer is not None or is_weight_name(blob.path, weight_patterns)


def _attributes_fix(path: str, ref: str) -> str:
    pattern = track_pattern(path)
    if not ref.startswith("refs/heads/"):
        return f"Track \"{pattern}\" with git lfs track on the branch tag {short_ref(ref)} was made on, then tag again"
    branch = short_ref(ref)
    # untrack first: `git lfs track` leaves an existing but incomplete line for the pattern alone.
    return (f"Fix: git lfs untrack \"{pattern}\" && git lfs track \"{pattern}\" && git add .gitattributes && "
            f"git commit -m \"Track {pattern} with Git LFS\" && git push origin {branch}")


def check_attributes(ref: str, paths: Iterable[str], gitattributes: bytes | None) -> list[Problem]:
    """Every LFS or weight path at a pushed tip must be covered by filter=lfs diff=lfs merge=lfs -text."""
    paths = sorted(set(paths))
    if not paths:
        return []
    short = short_ref(ref)
    if gitattributes is None:
        sample = paths[0]
        return [Problem(Code.GITATTRIBUTES, f"{short}: {len(paths)} LFS/weight file(s) (e.g. {sample}) but no "
                        f".gitattributes. {_attributes_fix(sample, ref)}", path=sample, ref=ref)]
    lines = attr_lines(gitattributes)
    problems = []
    for path in paths:
        if lfs_covered(path, lines):
            continue
        if len(problems) >= MAX_LISTED:
            problems.append(Problem(Code.GITATTRIBUTES, f"{short}: ... and more files without LFS attributes",
                                    ref=ref))
            break
        problems.append(Problem(Code.GITATTRIBUTES, f"{short}: .gitattributes does not give {path} '{LFS_ATTRS}'. "
                                f"{_attributes_fix(path, ref)}", path=path, ref=ref))
    return problems


def check_lfs_objects(pointers: Mapping[str, LfsPointer], linked: Mapping[str, int], branch_hint: str) -> list[Problem]:
    """Every pointer must name an object this repository has received (with that size)."""
    problems = []
    for path, p in sorted(pointers.items()):
        if len(problems) >= MAX_LISTED:
            problems.append(Problem(Code.LFS_MISSING, "... and more missing LFS objects"))
            break
        size = linked.get(p.oid)
        if size is None:
            problems.append(Problem(Code.LFS_MISSING, f"{path}: its Git LFS object {p.oid[:12]}… ({human(p.size)}) "
                                    f"was never uploaded to this repository. Fix: git lfs push --all origin "
                                    f"{branch_hint} && git push origin {branch_hint}", path=path))
        elif size != p.size:
            problems.append(Problem(Code.LFS_SIZE, f"{path}: pointer says {p.size} bytes but the uploaded object "
                                    f"{p.oid[:12]}… has {size}", path=path))
    return problems


def check_card(ref: str | None, card: ModelCard, schema_url: str) -> list[Problem]:
    """The card's schema errors; ``ref`` None for a card judged on its own (the Hub's validate-yaml)."""
    where = f"{short_ref(ref)}: " if ref else ""
    return [Problem(Code.MODEL_CARD, f"{where}{e}. Make README.md's front matter match the model card schema "
                    f"({schema_url}), commit and push again", path="README.md", ref=ref)
            for e in card.errors]


def check_file_size(ref: str, path: str, size: int, limit: int) -> list[Problem]:
    """Files the judge must read (README.md, .gitattributes) are read only up to a sane size: a
    writer must not be able to make the daemon load a 1 GiB blob that compresses to 1 MiB."""
    if size <= limit:
        return []
    return [Problem(Code.FILE_TOO_LARGE, f"{short_ref(ref)}: {path} is {human(size)}; the limit is {human(limit)}",
                    path=path, ref=ref)]


def check_locks(changed: Mapping[str, str], locks: Mapping[str, LockHolder]) -> list[Problem]:
    """A change (add, edit, delete) to a path someone else holds an LFS lock on (path -> ref)."""
    problems = []
    for path in sorted(set(changed) & set(locks)):
        lock = locks[path]
        problems.append(Problem(Code.LOCKED_PATH, f"{path} is locked by {lock.owner} (lock {lock.lock_id}): ask "
                                f"{lock.owner} to release it (git lfs unlock \"{path}\"), or a namespace admin to "
                                f"break it (git lfs unlock --force --id {lock.lock_id}), then push again",
                                path=path, ref=changed[path]))
    return problems
