"""Which paths ``.gitattributes`` hands to Git LFS: the push rules check coverage with it and Hub
commits extend the file with it, so both read the file the same way git does."""

import fnmatch
import posixpath
import re

LFS_ATTRS = "filter=lfs diff=lfs merge=lfs -text"

Lines = list[tuple[str, list[str]]]


def attr_lines(gitattributes: bytes) -> Lines:
    """(pattern, attributes) per line; comments, blanks and macro definitions skipped."""
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


def lfs_attributes(path: str, lines: Lines) -> dict[str, str | bool]:
    """The attributes ``path`` ends up with; later lines win, as in git."""
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


def lfs_covered(path: str, lines: Lines) -> bool:
    """Does .gitattributes give ``path`` all of filter=lfs diff=lfs merge=lfs -text?"""
    a = lfs_attributes(path, lines)
    return a.get("filter") == "lfs" and a.get("diff") == "lfs" and a.get("merge") == "lfs" and a.get("text") is False


def track_pattern(path: str) -> str:
    """The pattern a user would give ``git lfs track`` for this file: its extension, else its path."""
    ext = posixpath.splitext(path)[1]
    return f"*{ext}" if ext else path
