"""What a push is refused for, as pure functions over plain values.

Each rule returns messages that reach the pusher as ``remote:`` lines: what is wrong, which file or
ref, and the command that fixes it. Gathering the facts (git, the catalog) is push_policy's job;
keeping the rules here means they are tested without git.
"""

import fnmatch
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

from modelrepo.models.card import ModelCard

ZERO = "0" * 40
_POINTER_RE = re.compile(
    rb"^version https://git-lfs\.github\.com/spec/v1\n"
    rb"(?:[a-z0-9.-]+ [^\n]*\n)*?"
    rb"oid sha256:([0-9a-f]{64})\n"
    rb"size (\d+)\n"
    rb"(?:[a-z0-9.-]+ [^\n]*\n)*$"
)
POINTER_MAX = 1024  # git-lfs never writes a pointer this large
LFS_ATTRS = 'filter=lfs diff=lfs merge=lfs -text'


@dataclass(frozen=True)
class LfsPointer:
    oid: str
    size: int


def parse_pointer(data: bytes) -> LfsPointer | None:
    if len(data) >= POINTER_MAX:
        return None
    m = _POINTER_RE.match(data)
    if not m:
        return None
    return LfsPointer(m.group(1).decode(), int(m.group(2)))


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


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}".replace(".0 ", " ")
        size /= 1024
    return f"{n} B"


def _track_pattern(path: str) -> str:
    ext = posixpath.splitext(path)[1]
    return f"*{ext}" if ext else path


def check_ref_updates(updates: Iterable[RefUpdate], *, namespace_admin: bool, default_branch: str,
                      allow_force_push: bool, deployed: dict[str, str], non_fast_forward: set[str],
                      non_commit: frozenset[str] = frozenset()) -> list[str]:
    """Protected refs: immutable release tags, refs in use by deployments, a linear default branch.

    ``deployed`` maps a ref (refs/tags/v1) to the deployment using it."""
    problems = []
    for u in updates:
        if not (u.is_tag or u.is_branch):
            problems.append(f"{u.ref}: only branches (refs/heads/*) and tags (refs/tags/*) can be pushed")
            continue
        if u.ref in non_commit:
            problems.append(f"{u.short}: points at a blob or tree, not a commit; tag a commit instead: "
                            f"git tag -a {u.short} <commit>")
            continue
        if u.deleted and u.ref in deployed:
            problems.append(f"{u.short}: cannot delete {'tag' if u.is_tag else 'branch'} {u.short!r}: deployment "
                            f"{deployed[u.ref]!r} uses it. Stop the deployment first (PATCH /api/v1/deployments/"
                            f"{{id}} with status \"stopped\").")
            continue
        if u.is_tag and not u.created and not namespace_admin:
            verb = "delete" if u.deleted else "move"
            problems.append(f"{u.short}: tags are immutable releases; only a namespace admin can {verb} tag "
                            f"{u.short!r}. Push a new tag instead: git tag -a <new-version> && git push origin "
                            f"<new-version>")
            continue
        if u.is_branch and u.short == default_branch:
            if u.deleted:
                problems.append(f"{u.short}: cannot delete the default branch {u.short!r}")
            elif u.ref in non_fast_forward and not allow_force_push:
                problems.append(f"{u.short}: non-fast-forward update of the default branch is not allowed. "
                                f"Integrate the remote changes first: git pull --rebase origin {u.short}")
    return problems


def check_blobs(blobs: Iterable[NewBlob], *, max_plain_blob: int, weight_patterns: Iterable[str]) -> list[str]:
    """Weights and big files must be LFS pointers, not blobs in git's history."""
    patterns = list(weight_patterns)
    problems = []
    seen: set[str] = set()
    for b in blobs:
        if b.pointer is not None or b.path in seen:
            continue
        name = posixpath.basename(b.path)
        is_weight = b.size > 0 and any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if not is_weight and b.size <= max_plain_blob:
            continue
        seen.add(b.path)
        pattern = _track_pattern(b.path)
        why = "matches a weight pattern" if is_weight else f"is larger than {human(max_plain_blob)}"
        problems.append(
            f"{b.path} ({human(b.size)}) must be stored with Git LFS ({why}). Fix: git lfs track \"{pattern}\" "
            f"&& git add .gitattributes && git lfs migrate import --include=\"{pattern}\" --everything && git push")
    return problems


def needs_lfs(blob: NewBlob, weight_patterns: Iterable[str]) -> bool:
    name = posixpath.basename(blob.path)
    return blob.pointer is not None or any(fnmatch.fnmatchcase(name, p) for p in weight_patterns)


def attr_lines(gitattributes: bytes) -> list[tuple[str, list[str]]]:
    lines = []
    for raw in gitattributes.decode("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("[attr]"):
            continue
        pattern, *attrs = line.split()
        lines.append((pattern, attrs))
    return lines


def _pattern_matches(pattern: str, path: str) -> bool:
    """gitattributes matching (gitignore rules without negation): a pattern with no slash matches
    the basename at any depth; otherwise it is anchored at the root; ** spans directories."""
    anchored = "/" in pattern.rstrip("/")
    pattern = pattern.removeprefix("/")
    if not anchored:
        return fnmatch.fnmatchcase(posixpath.basename(path), pattern)
    if "**" in pattern:
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"/\*\*", "(?:/.*)?")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        return re.fullmatch(regex, path) is not None
    return fnmatch.fnmatchcase(path, pattern) and path.count("/") == pattern.count("/")


def lfs_attributes(path: str, lines: list[tuple[str, list[str]]]) -> dict[str, str | bool]:
    attrs: dict[str, str | bool] = {}
    for pattern, assignments in lines:
        if not _pattern_matches(pattern, path):
            continue
        for a in assignments:
            if a.startswith(("-", "!")):
                attrs[a[1:]] = False
            elif "=" in a:
                key, value = a.split("=", 1)
                attrs[key] = value
            else:
                attrs[a] = True
    return attrs


def lfs_covered(path: str, lines: list[tuple[str, list[str]]]) -> bool:
    """Does .gitattributes give ``path`` all of filter=lfs diff=lfs merge=lfs -text?"""
    a = lfs_attributes(path, lines)
    return a.get("filter") == "lfs" and a.get("diff") == "lfs" and a.get("merge") == "lfs" and a.get("text") is False


def check_attributes(ref: str, paths: Iterable[str], gitattributes: bytes | None) -> list[str]:
    """Every LFS or weight path at a pushed tip must be covered by filter=lfs diff=lfs merge=lfs -text."""
    paths = sorted(set(paths))
    if not paths:
        return []
    short = ref.split("/", 2)[-1]
    if gitattributes is None:
        sample = paths[0]
        return [f"{short}: {len(paths)} LFS/weight file(s) (e.g. {sample}) but no .gitattributes. Fix: git lfs "
                f"track \"{_track_pattern(sample)}\" && git add .gitattributes && git commit && git push"]
    lines = attr_lines(gitattributes)
    problems = []
    for path in paths:
        if lfs_covered(path, lines):
            continue
        problems.append(f"{short}: .gitattributes does not give {path} '{LFS_ATTRS}'. Fix: git lfs track "
                        f"\"{_track_pattern(path)}\" && git add .gitattributes && git commit && git push")
        if len(problems) >= 20:
            problems.append(f"{short}: ... and more files without LFS attributes")
            break
    return problems


def check_lfs_objects(pointers: dict[str, LfsPointer], linked: dict[str, int], branch_hint: str) -> list[str]:
    """Every pointer must name an object this repository has received (with that size)."""
    problems = []
    for path, p in sorted(pointers.items()):
        size = linked.get(p.oid)
        if size is None:
            problems.append(f"{path}: its Git LFS object {p.oid[:12]}… ({human(p.size)}) was never uploaded to this "
                            f"repository. Fix: git lfs push --all origin {branch_hint} && git push")
        elif size != p.size:
            problems.append(f"{path}: pointer says {p.size} bytes but the uploaded object {p.oid[:12]}… has {size}")
        if len(problems) >= 20:
            problems.append("... and more missing LFS objects")
            break
    return problems


def check_card(ref: str, card: ModelCard) -> list[str]:
    short = ref.split("/", 2)[-1]
    return [f"{short}: {e}. Fix README.md's front matter (see config/model-card.schema.json) and push again"
            for e in card.errors]


_REASONS = (
    ("must be stored with Git LFS", "lfs_required"),
    (".gitattributes", "gitattributes"),
    ("never uploaded", "lfs_missing"),
    ("pointer says", "lfs_missing"),
    ("README.md", "model_card"),
    ("deployment", "deployed_ref"),
    ("immutable", "protected_ref"),
    ("default branch", "protected_ref"),
    ("only branches", "protected_ref"),
)


def reason_of(message: str) -> str:
    """A bounded label for metrics: which rule refused the push."""
    return next((reason for needle, reason in _REASONS if needle in message), "other")
