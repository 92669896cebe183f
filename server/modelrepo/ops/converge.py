"""Bring the catalog's mirror of each repository back in step with the repository.

The catalog mirrors every model's branch and tag tips (``model_refs``) and what its default branch
holds (``models.head_commit``, files, size, card). Whoever moves a ref rebuilds the mirror right
after (post-receive for pushes, ref_changes for the API, hub.commits for Hub commits): git first,
the catalog second, because a ref is the truth and the catalog only describes it. A crash between
the two (SIGKILL, power loss, OOM) leaves the mirror describing the old tips, and nothing else
would ever notice: the next push rebuilds it, but a model nobody pushes to stays wrong.

``find_drift`` compares the recorded tips with the refs (cheap: refs only, no tree walk) and
``converge_catalog`` rebuilds the models that differ with ``PushEffects.apply``, the very rebuild
post-receive does. The daemon runs it at start-up, before it listens; ``modelrepo fsck`` reports
drift and ``fsck --repair`` fixes it.

Events: at start-up the changes are announced (a ``push``/``tag.*`` event as post-receive would
have queued, with the catalog's old tip as "before"): the push was accepted and its webhooks were
lost with the crash. ``fsck --repair`` runs next to a live daemon, where a drift may just be a
push whose post-receive is running and will announce it itself, so it rebuilds without events.
A rebuild that raced a push is compared again and redone (``ATTEMPTS``): the mirror converges to
whatever the refs are when the comparison finally agrees. Replicas starting together on one
catalog converge at once: the rebuild announces only while the catalog still records the drift's
old tips (checked in its transaction), so each lost event is announced once, by the first.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pygit2
import sqlalchemy as sa
import structlog

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import model_refs, models, namespaces
from modelrepo.git.snapshot import read_refs
from modelrepo.models.service import Models
from modelrepo.push.effects import PushEffects
from modelrepo.push.rules import ZERO, RefUpdate

log = structlog.get_logger("modelrepo.converge")

ATTEMPTS = 3
_PREFIX = {"branch": "refs/heads/", "tag": "refs/tags/"}


@dataclass(frozen=True)
class Drift:
    """A model whose catalog mirror does not describe its repository."""

    model_id: int
    namespace: str
    name: str
    updates: tuple[RefUpdate, ...]  # old: what the catalog recorded, new: what the ref is
    head: tuple[str | None, str | None]  # default branch tip: recorded, actual

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def describe(self) -> str:
        parts = [f"{u.ref} is {_short(u.new)} in the repository, {_short(u.old)} in the catalog"
                 for u in self.updates]
        if not parts:
            parts.append(f"the default branch tip is {_short(self.head[1])} in the repository, "
                         f"{_short(self.head[0])} in the catalog")
        return f"{self.full_name}: catalog out of step with the repository: " + "; ".join(parts)


def _short(commit: str | None) -> str:
    return commit[:12] if commit and commit != ZERO else "absent"


def repository_tips(path: Path) -> dict[str, str] | None:
    """ref -> commit (tags peeled, as the catalog records them), or None without a repository.
    Synchronous pygit2: run it in a thread."""
    try:
        repo = pygit2.Repository(str(path))
    except pygit2.GitError:
        return None
    return {_PREFIX[r.kind] + r.name: r.commit for r in read_refs(repo)}


def compare(recorded: dict[str, str], actual: dict[str, str]) -> list[RefUpdate]:
    return [RefUpdate(recorded.get(ref, ZERO), actual.get(ref, ZERO), ref)
            for ref in sorted(recorded.keys() | actual.keys()) if recorded.get(ref) != actual.get(ref)]


async def find_drift(catalog: Catalog, models_: Models, only: int | None = None) -> list[Drift]:
    query = (sa.select(models.c.id, models.c.name, models.c.default_branch, models.c.head_commit,
                       namespaces.c.name.label("ns"))
             .join(namespaces, namespaces.c.id == models.c.namespace_id).order_by(models.c.id))
    refs_query = sa.select(model_refs.c.model_id, model_refs.c.kind, model_refs.c.name, model_refs.c.commit)
    if only is not None:
        query = query.where(models.c.id == only)
        refs_query = refs_query.where(model_refs.c.model_id == only)
    async with catalog.read() as conn:
        rows = (await conn.execute(query)).all()
        recorded: dict[int, dict[str, str]] = {}
        for r in await conn.execute(refs_query):
            recorded.setdefault(r.model_id, {})[_PREFIX.get(r.kind, "") + r.name] = r.commit
    out = []
    for row in rows:
        actual = await asyncio.to_thread(repository_tips, models_.store.path(row.ns, row.name))
        if actual is None:
            continue  # no repository: fsck reports that on its own
        head = (row.head_commit, actual.get(f"refs/heads/{row.default_branch}"))
        updates = compare(recorded.get(row.id, {}), actual)
        if updates or head[0] != head[1]:
            out.append(Drift(row.id, row.ns, row.name, tuple(updates), head))
    return out


async def converge_catalog(catalog: Catalog, models_: Models, effects: PushEffects, clone_url: Callable[[str], str],
                           *, announce: bool, only: int | None = None) -> list[Drift]:
    """Rebuild the mirror of every model (or ``only`` one) that drifted; return what was found.
    ``clone_url(full_name)`` goes into the events' payloads."""
    found = await find_drift(catalog, models_, only)
    for drift in found:
        await _rebuild(catalog, models_, effects, clone_url, drift, announce)
    return found


async def _rebuild(catalog: Catalog, models_: Models, effects: PushEffects, clone_url: Callable[[str], str],
                   drift: Drift, announce: bool) -> None:
    current: Drift | None = drift
    for _ in range(ATTEMPTS):
        model = await models_.find(drift.namespace, drift.name)
        if current is None or model is None or model.id != drift.model_id:
            return  # in step now, or deleted meanwhile
        await effects.apply(model, list(current.updates) if announce else [], pusher=None,
                            clone_url=clone_url(model.full_name), unless_caught_up=True)
        announce = False  # announced once; a re-run only catches up with a concurrent push
        log.info("catalog_converged", model=model.full_name, refs=[u.ref for u in current.updates])
        again = await find_drift(catalog, models_, drift.model_id)
        current = again[0] if again else None
    if current is not None:
        log.warning("catalog_not_converged", model=drift.full_name, attempts=ATTEMPTS)
