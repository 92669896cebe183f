"""The one judge of every change to a repository's refs, whichever door it comes through: git
push (pre-receive), REST branch/tag changes, Hub commits, and the Hub's preupload question.

Built once from the settings, it decides which rules run and with which settings, so no door can
forget one or run it with other values (the bug that let a REST tag or a Hub upload past a custom
model card schema). Each door only says what would change: the refs, and where the objects are.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jsonschema

from modelrepo.git.runner import GitRunner
from modelrepo.models.card import MAX_CARD_BYTES, parse_card
from modelrepo.push import rules
from modelrepo.push.facts import GitReader, PushFacts, gather
from modelrepo.push.problems import Code, Problem
from modelrepo.push.rules import LockHolder, RefUpdate
from modelrepo.settings import ConfigError, PushSettings

SCHEMA_ROUTE = "/api/v1/model-card.schema.json"

Pins = Callable[[int], Awaitable[dict[str, str]]]  # model id -> {ref: deployment name}
Linked = Callable[[int, list[str]], Awaitable[dict[str, int]]]  # model id, oids -> {oid: size}
Locks = Callable[[int, int | None], Awaitable[dict[str, tuple[str, str]]]]  # model, user -> {path: (owner, id)}


class _Model(Protocol):
    id: int
    default_branch: str
    allow_force_push: bool
    role: str | None


class _Identity(Protocol):
    user_id: int | None

    def namespace_admin(self, role: str | None) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    problems: list[Problem]
    facts: PushFacts

    @property
    def ok(self) -> bool:
        return not self.problems


class Judge:
    def __init__(self, push: PushSettings, *, base_url: str, git: GitRunner, pins: Pins, linked: Linked,
                 locks: Locks) -> None:
        self.max_plain_blob = int(push.max_plain_blob)
        self.weight_patterns = tuple(push.weight_patterns)
        self.schema_file: Path | None = push.model_card_schema
        self.schema_url = base_url.rstrip("/") + SCHEMA_ROUTE
        self.git = git
        self.pins, self.linked, self.locks = pins, linked, locks
        # Load (and check) the schema now: a broken custom schema fails start-up, not a push.
        try:
            parse_card(b"---\n{}\n---\n", self.schema_file)
        except (OSError, ValueError, jsonschema.SchemaError) as exc:
            raise ConfigError(f"push.model_card_schema: cannot use {self.schema_file}: {exc}") from None

    def upload_mode(self, path: str, size: int) -> str:
        """The Hub's preupload answer: 'lfs' exactly when a plain blob would be refused."""
        why = rules.must_be_lfs(path, size, max_plain_blob=self.max_plain_blob, weight_patterns=self.weight_patterns)
        return "lfs" if why else "regular"

    def card_problems(self, readme: bytes) -> list[Problem]:
        """A README judged on its own, as the Hub client asks before committing one (validate-yaml):
        the schema every door uses, so the client's early answer is the commit's answer."""
        return rules.check_card(None, parse_card(readme, self.schema_file), self.schema_url)

    async def check(self, repo: Path, model: _Model, identity: _Identity, updates: list[RefUpdate], *,
                    env: dict[str, str] | None = None, default_branch: str | None = None) -> Verdict:
        """Judge ``updates`` to ``repo`` (objects in ``env``'s quarantine, if any). ``default_branch``
        overrides the model's, to ask whether a branch may become the default."""
        branch = default_branch or model.default_branch
        facts = await gather(GitReader(self.git, repo, env or {}), updates, default_branch=branch,
                             weight_patterns=self.weight_patterns, max_read=MAX_CARD_BYTES)
        facts.linked = await self.linked(model.id, facts.pointer_oids)
        facts.deployed = await self.pins(model.id)
        if facts.changed:
            held = await self.locks(model.id, identity.user_id)
            facts.locks = {path: LockHolder(owner, lock_id) for path, (owner, lock_id) in held.items()}
        # In a thread: YAML parsing and schema validation are CPU work.
        problems = await asyncio.to_thread(self.evaluate, facts, namespace_admin=identity.namespace_admin(model.role),
                                           allow_force_push=model.allow_force_push)
        return Verdict(problems, facts)

    def evaluate(self, facts: PushFacts, *, namespace_admin: bool, allow_force_push: bool) -> list[Problem]:
        """Every reason to refuse (empty: accept), in a fixed order: refs, then files, then the card."""
        problems = rules.check_ref_updates(
            facts.updates, namespace_admin=namespace_admin, default_branch=facts.default_branch,
            allow_force_push=allow_force_push, deployed=facts.deployed, non_fast_forward=facts.non_fast_forward,
            non_commit=facts.non_commit)
        for ref, path, size in facts.oversize:
            problems += rules.check_file_size(ref, path, size, MAX_CARD_BYTES)
        blob_problems = rules.check_blobs(facts.blobs, max_plain_blob=self.max_plain_blob,
                                          weight_patterns=self.weight_patterns)
        problems += blob_problems
        # A file refused as a plain blob is not also reported for its attributes: the migrate fix
        # writes .gitattributes too, and one problem should have one fix.
        in_git = {p.path for p in blob_problems}
        for ref, paths in facts.lfs_paths.items():
            problems += rules.check_attributes(ref, [p for p in paths if p not in in_git], facts.attributes.get(ref))
        pointers = {b.path: b.pointer for b in facts.blobs if b.pointer is not None}
        hint = next((u.short for u in facts.updates if u.is_branch and not u.deleted), facts.default_branch)
        problems += rules.check_lfs_objects(pointers, facts.linked, hint)
        for ref, readme in facts.cards.items():
            problems += rules.check_card(ref, parse_card(readme, self.schema_file), self.schema_url)
        problems += rules.check_locks(facts.changed, facts.locks)
        return problems


def metric_reasons(problems: list[Problem]) -> list[str]:
    """Bounded labels for the pushes metric: the codes, each once."""
    return sorted({str(p.code) for p in problems})


__all__ = ["Code", "Judge", "Problem", "Verdict", "metric_reasons"]
