"""pre-receive: gather the facts about a push (quarantined objects, catalog) and apply push_rules.

The pushed objects are only reachable through git's quarantine environment, which the hook
forwards; we run git's own plumbing with it (rev-list --objects to find what is new, cat-file
--batch-check / --batch to size and read it), streaming, so a push of 10,000 files is judged in
well under a second.
"""

import asyncio
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modelrepo.inspect.policy import Finding, pickle_problems
from modelrepo.models.card import MAX_CARD_BYTES, parse_card
from modelrepo.push import rules as rules
from modelrepo.git.runner import GitRunner
from modelrepo.push.rules import NewBlob, RefUpdate

QUARANTINE_VARS = ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES")


@dataclass(frozen=True)
class PushLimits:
    max_plain_blob: int
    weight_patterns: tuple[str, ...]


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


class GitReader:
    """git plumbing in one repository, with the push's quarantine environment."""

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

    async def sizes(self, oids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """oid -> (type, size), one cat-file process for all of them."""
        data = "\n".join(oids).encode() + b"\n"
        _, out = await self.run("cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)", stdin=data)
        result = {}
        for line in out.decode().splitlines():
            parts = line.split()
            if len(parts) == 3:
                result[parts[0]] = (parts[1], int(parts[2]))
        return result

    async def types(self, specs: list[str]) -> dict[str, str]:
        """spec -> object type ('missing' if it does not resolve), one cat-file for all."""
        return {spec: kind for spec, (kind, _) in (await self.describe(specs)).items()}

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
        result: dict[str, bytes | None] = {}
        pos = 0
        for spec in specs:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) == 2 and header[1] == b"missing" or len(header) < 3:
                result[spec] = None
                continue
            size = int(header[2])
            result[spec] = out[pos:pos + size] if header[1] == b"blob" else None
            pos += size + 1
        return result

    async def is_ancestor(self, old: str, new: str) -> bool:
        rc, _ = await self.run("merge-base", "--is-ancestor", old, new, ok_codes=(0, 1))
        return rc == 0


@dataclass
class PushFacts:
    blobs: list[NewBlob]
    paths_by_ref: dict[str, list[str]]  # ref -> LFS/weight paths new at that tip
    attributes: dict[str, bytes | None]  # ref -> .gitattributes at the tip
    cards: dict[str, bytes | None]  # ref -> README.md at the tip (default branch and tags only)
    non_fast_forward: set[str]
    non_commit: frozenset[str] = frozenset()  # refs whose new value does not peel to a commit
    oversize: list[str] = field(default_factory=list)  # README.md / .gitattributes too large to judge


async def gather(reader: GitReader, updates: list[RefUpdate], default_branch: str,
                 weight_patterns: tuple[str, ...]) -> PushFacts:
    live = [u for u in updates if not u.deleted and (u.is_branch or u.is_tag)]
    per_ref = {u.ref: await reader.new_objects(u.new) for u in live}
    all_oids = {oid for pairs in per_ref.values() for oid, _ in pairs}
    sizes = await reader.sizes(sorted(all_oids)) if all_oids else {}
    small = [oid for oid, (kind, size) in sizes.items() if kind == "blob" and size < rules.POINTER_MAX]
    small_data = await reader.contents(small)
    blobs: dict[str, NewBlob] = {}
    paths_by_ref: dict[str, list[str]] = {}
    for ref, pairs in per_ref.items():
        needing = []
        for oid, path in pairs:
            kind, size = sizes.get(oid, ("", 0))
            if kind != "blob" or not path:
                continue
            data = small_data.get(oid)
            blob = NewBlob(oid, path, size, rules.parse_pointer(data) if data is not None else None)
            blobs.setdefault(f"{oid}:{path}", blob)
            if rules.needs_lfs(blob, weight_patterns):
                needing.append(path)
        paths_by_ref[ref] = needing
    attr_specs = {u.ref: f"{u.new}:.gitattributes" for u in live if paths_by_ref.get(u.ref)}
    card_specs = {u.ref: f"{u.new}:README.md" for u in live
                  if u.is_tag or (u.is_branch and u.short == default_branch)}
    # Read README.md / .gitattributes only when they are of a sane size: a writer must not be able
    # to make the daemon load a 1 GiB blob that compresses to 1 MiB on the wire.
    wanted = sorted(set(attr_specs.values()) | set(card_specs.values()))
    described = await reader.describe(wanted)
    too_large = {spec: size for spec, (kind, size) in described.items() if kind == "blob" and size > MAX_CARD_BYTES}
    fetched = await reader.contents([spec for spec in wanted if spec not in too_large])
    oversize = [f"{ref.split('/', 2)[-1]}: {spec.split(':', 1)[1]} is {rules.human(too_large[spec])}; "
                f"the limit is {rules.human(MAX_CARD_BYTES)}"
                for ref, spec in sorted({**attr_specs, **card_specs}.items()) if spec in too_large]
    types = await reader.types([f"{u.new}^{{}}" for u in live]) if live else {}
    non_commit = frozenset(u.ref for u in live if types.get(f"{u.new}^{{}}") != "commit")
    non_ff = set()
    for u in live:
        if u.is_branch and u.short == default_branch and not u.created and not await reader.is_ancestor(u.old, u.new):
            non_ff.add(u.ref)
    return PushFacts(
        blobs=list(blobs.values()),
        paths_by_ref=paths_by_ref,
        attributes={ref: fetched.get(spec) for ref, spec in attr_specs.items()},
        cards={ref: fetched.get(spec) for ref, spec in card_specs.items()},
        non_fast_forward=non_ff,
        non_commit=non_commit,
        oversize=oversize,
    )


def judge(facts: PushFacts, updates: list[RefUpdate], *, limits: PushLimits, namespace_admin: bool,
          default_branch: str, allow_force_push: bool, deployed: dict[str, str],
          linked: dict[str, int], schema_file: Path | None = None,
          pickles: list[Finding] = (), pickle_policy: str = "refuse") -> list[str]:
    """Every reason to refuse this push (empty: accept)."""
    problems = rules.check_ref_updates(updates, namespace_admin=namespace_admin, default_branch=default_branch,
                                       allow_force_push=allow_force_push, deployed=deployed,
                                       non_fast_forward=facts.non_fast_forward, non_commit=facts.non_commit)
    problems += facts.oversize
    problems += rules.check_blobs(facts.blobs, max_plain_blob=limits.max_plain_blob,
                                  weight_patterns=limits.weight_patterns)
    for ref, paths in facts.paths_by_ref.items():
        problems += rules.check_attributes(ref, paths, facts.attributes.get(ref))
    pointers = {b.path: b.pointer for b in facts.blobs if b.pointer is not None}
    branch = next((u.short for u in updates if u.is_branch and not u.deleted), default_branch)
    problems += rules.check_lfs_objects(pointers, linked, branch)
    for ref, readme in facts.cards.items():
        problems += rules.check_card(ref, parse_card(readme, schema_file))
    # inspect (issue 13): dangerous pickles under push.pickle_policy; moves into push/judge.py at merge
    problems += [message for _code, message, _path in pickle_problems(pickles, pickle_policy)]
    return problems


def pointer_oids(facts: PushFacts) -> list[str]:
    return sorted({b.pointer.oid for b in facts.blobs if b.pointer is not None})
