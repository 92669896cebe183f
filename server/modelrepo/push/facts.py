"""The facts a push is judged on, gathered with git's own plumbing, the same way for every door.

A git push is judged inside git's quarantine (the hook forwards its environment, and the pushed
objects are reachable only through it); an API ref change is judged in the repository as it is;
a Hub commit is judged once its commit is built but before any ref points at it. In all three
cases "what is new" is ``git rev-list --objects <tip> --not --all``, sized and read with
``cat-file --batch-check`` / ``--batch``, streaming: a push of 10,000 files is judged in well
under a second. What the catalog knows (LFS objects, deployment pins, locks) is added by the judge.
"""

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.git.runner import GitRunner
from modelrepo.lfs.pointer import POINTER_MAX, parse_pointer
from modelrepo.push.rules import LockHolder, NewBlob, RefUpdate, needs_lfs

QUARANTINE_VARS = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")
_OID_HEX = frozenset("0123456789abcdef")


def parse_updates(raw: object) -> list[RefUpdate]:
    """The hook's ref lines (as JSON objects); anything malformed is dropped, never guessed at."""
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("old", "new", "ref")):
            continue
        if not all(len(item[k]) in (40, 64) and set(item[k]) <= _OID_HEX for k in ("old", "new")):
            continue
        out.append(RefUpdate(item["old"], item["new"], item["ref"]))
    return out


def quarantine_env(env: dict, cwd: str) -> dict[str, str]:
    """The hook's quarantine variables, made absolute against the hook's working directory."""
    out: dict[str, str] = {}
    for key in QUARANTINE_VARS:
        value = env.get(key)
        if not isinstance(value, str) or not value:
            continue
        parts = [p if os.path.isabs(p) else os.path.join(cwd, p) for p in value.split(":")]
        out[key] = ":".join(parts)
    return out


def parse_cat_file_batch(out: bytes, specs: list[str]) -> dict[str, bytes | None]:
    """``git cat-file --batch`` output, one answer per spec in order: blob bytes, or None for a
    missing object or anything that is not a blob."""
    result: dict[str, bytes | None] = {}
    pos = 0
    for spec in specs:
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) < 3:  # "<spec> missing" / "<spec> ambiguous"
            result[spec] = None
            continue
        size = int(header[2])
        result[spec] = out[pos:pos + size] if header[1] == b"blob" else None
        pos += size + 1
    return result


class GitReader:
    """git plumbing in one repository, with the push's quarantine environment (if any)."""

    def __init__(self, runner: GitRunner, repo: Path, env: dict[str, str]) -> None:
        self.runner, self.repo, self.env = runner, repo, env

    async def run(self, *args: str, stdin: bytes | None = None, ok_codes: tuple[int, ...] = (0,)) -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            self.runner.binary, "-C", str(self.repo), *args,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=self.runner.environment(None, self.env))
        out, err = await proc.communicate(stdin)
        if proc.returncode not in ok_codes:
            raise RuntimeError(f"git {args[0]} failed ({proc.returncode}): {err.decode(errors='replace')[:500]}")
        return proc.returncode, out

    async def new_objects(self, tip: str) -> list[tuple[str, str]]:
        """(oid, path) of every object reachable from ``tip`` and from no existing ref."""
        _, out = await self.run("rev-list", "--objects", tip, "--not", "--all")
        pairs = []
        for line in out.decode("utf-8", errors="surrogateescape").splitlines():
            oid, _, path = line.partition(" ")
            pairs.append((oid, path))
        return pairs

    async def changed_paths(self, old: str, new: str) -> list[str]:
        """Paths added, modified or deleted between two commits."""
        _, out = await self.run("diff-tree", "-r", "-z", "--no-renames", "--name-only", old, new)
        return [p for p in out.decode("utf-8", errors="surrogateescape").split("\0") if p]

    async def describe(self, specs: list[str]) -> dict[str, tuple[str, int]]:
        """spec (oid or rev:path) -> (type, size); ('missing', 0) if it does not resolve."""
        if not specs:
            return {}
        data = "\n".join(specs).encode() + b"\n"
        _, out = await self.run("cat-file", "--batch-check=%(objecttype) %(objectsize)", stdin=data)
        result = {}
        for spec, line in zip(specs, out.decode().splitlines(), strict=False):
            parts = line.split()
            result[spec] = (parts[0], int(parts[1])) if len(parts) == 2 and parts[1].isdigit() else ("missing", 0)
        return result

    async def contents(self, specs: list[str]) -> dict[str, bytes | None]:
        """spec (an oid or rev:path) -> bytes, None if missing; one cat-file --batch for all."""
        if not specs:
            return {}
        _, out = await self.run("cat-file", "--batch", stdin="\n".join(specs).encode() + b"\n")
        return parse_cat_file_batch(out, specs)

    async def is_ancestor(self, old: str, new: str) -> bool:
        rc, _ = await self.run("merge-base", "--is-ancestor", old, new, ok_codes=(0, 1))
        return rc == 0


@dataclass
class PushFacts:
    """Everything the rules look at. Filled by ``gather`` from git and by the judge from the catalog."""

    updates: list[RefUpdate]
    default_branch: str
    blobs: list[NewBlob] = field(default_factory=list)
    lfs_paths: dict[str, list[str]] = field(default_factory=dict)  # ref -> LFS/weight paths new at that tip
    attributes: dict[str, bytes | None] = field(default_factory=dict)  # ref -> .gitattributes at the tip
    cards: dict[str, bytes | None] = field(default_factory=dict)  # ref -> README.md (default branch, tags)
    oversize: list[tuple[str, str, int]] = field(default_factory=list)  # (ref, path, size) too large to read
    non_fast_forward: set[str] = field(default_factory=set)
    non_commit: frozenset[str] = frozenset()  # refs whose new value does not peel to a commit
    changed: dict[str, str] = field(default_factory=dict)  # path -> first ref changing it
    # From the catalog:
    linked: dict[str, int] = field(default_factory=dict)  # LFS oid -> size this repository holds
    deployed: dict[str, str] = field(default_factory=dict)  # ref -> deployment using it
    locks: dict[str, LockHolder] = field(default_factory=dict)  # path -> someone else's lock

    @property
    def pointer_oids(self) -> list[str]:
        return sorted({b.pointer.oid for b in self.blobs if b.pointer is not None})


async def gather(reader: GitReader, updates: list[RefUpdate], *, default_branch: str,
                 weight_patterns: Iterable[str], max_read: int) -> PushFacts:
    """The git half of the facts. ``max_read`` bounds README.md / .gitattributes reads."""
    patterns = tuple(weight_patterns)
    facts = PushFacts(list(updates), default_branch)
    live = [u for u in updates if not u.deleted and (u.is_branch or u.is_tag)]
    per_ref = {u.ref: await reader.new_objects(u.new) for u in live}
    all_oids = sorted({oid for pairs in per_ref.values() for oid, _ in pairs})
    sizes = await reader.describe(all_oids)
    small = [oid for oid, (kind, size) in sizes.items() if kind == "blob" and size < POINTER_MAX]
    small_data = await reader.contents(small)
    blobs: dict[str, NewBlob] = {}
    for ref, pairs in per_ref.items():
        needing = []
        for oid, path in pairs:
            kind, size = sizes.get(oid, ("", 0))
            if kind != "blob" or not path:
                continue
            facts.changed.setdefault(path, ref)
            data = small_data.get(oid)
            blob = blobs.setdefault(f"{oid}:{path}", NewBlob(
                oid, path, size, parse_pointer(data) if data is not None else None, ref))
            if needs_lfs(blob, patterns):
                needing.append(path)
        facts.lfs_paths[ref] = needing
    facts.blobs = list(blobs.values())
    for u in live:
        if u.is_branch and not u.created:
            for path in await reader.changed_paths(u.old, u.new):
                facts.changed.setdefault(path, u.ref)

    attr_specs = {u.ref: f"{u.new}:.gitattributes" for u in live if facts.lfs_paths.get(u.ref)}
    card_specs = {u.ref: f"{u.new}:README.md" for u in live if u.is_tag or u.short == default_branch}
    wanted = sorted(set(attr_specs.values()) | set(card_specs.values()))
    described = await reader.describe(wanted)
    too_large = {spec: size for spec, (kind, size) in described.items() if kind == "blob" and size > max_read}
    fetched = await reader.contents([spec for spec in wanted if spec not in too_large])
    facts.oversize = [(ref, spec.split(":", 1)[1], too_large[spec])
                      for ref, spec in sorted({**attr_specs, **card_specs}.items()) if spec in too_large]
    facts.attributes = {ref: fetched.get(spec) for ref, spec in attr_specs.items()}
    facts.cards = {ref: fetched.get(spec) for ref, spec in card_specs.items() if spec not in too_large}

    peeled = await reader.describe([f"{u.new}^{{}}" for u in live])
    facts.non_commit = frozenset(u.ref for u in live if peeled.get(f"{u.new}^{{}}", ("",))[0] != "commit")
    for u in live:
        if (u.is_branch and u.short == default_branch and not u.created and u.ref not in facts.non_commit
                and not await reader.is_ancestor(u.old, u.new)):
            facts.non_fast_forward.add(u.ref)
    return facts
