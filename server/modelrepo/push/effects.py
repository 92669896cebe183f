"""post-receive (and the API's ref changes): rebuild the catalog's view of a repository from the
repository itself, and record the events the change caused, in one transaction."""

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import model_card_tags, model_files, model_refs, models
from modelrepo.errors import NotFound
from modelrepo.git import repos
from modelrepo.models.service import Model
from modelrepo.push.rules import ZERO, RefUpdate
from modelrepo.git.snapshot import read_at, read_snapshot
from modelrepo.models.webhooks import enqueue, envelope


class PushEffects:
    def __init__(self, catalog: Catalog, path_of: Callable[[Model], object], wake: Callable[[], None],
                 card_schema: Path | None = None) -> None:
        self.catalog = catalog
        # The catalog's card (and its errors) must be the judge's verdict: the same schema.
        self.card_schema = card_schema
        self.path_of = path_of
        self.wake = wake

    async def apply(self, model: Model, updates: list[RefUpdate], *, pusher: str | None, clone_url: str,
                    unless_caught_up: bool = False) -> None:
        """Rebuild the mirror and queue the events of ``updates``. A model deleted meanwhile is left
        alone (its rows are gone; the push landed in a repository on its way to the trash).

        ``unless_caught_up``: announce only if the catalog still records every update's ``old``
        tip, checked inside the transaction. Start-up convergence passes it: two replicas starting
        together both find the same drift, and only the first rebuild announces it."""
        path = self.path_of(model)
        created_tags = {}
        try:  # read as every repository read is: a delete racing it is the model's 404 (repos.Held)
            snap = await asyncio.to_thread(repos.stable_read, path, read_snapshot, model.default_branch,
                                           self.card_schema)
            for u in updates:
                if u.is_tag and not u.deleted:
                    created_tags[u.short] = await asyncio.to_thread(repos.stable_read, path, read_at, u.ref,
                                                                    self.card_schema)
        except NotFound:
            return  # deleted meanwhile: left alone, as when the row lock below finds no model
        card = snap.card.metadata if snap.card.valid else {}
        tags = card.get("tags") if isinstance(card.get("tags"), list) else []
        base = {"clone_url": clone_url, "pusher": pusher}
        async with self.catalog.tx() as conn:
            # The row lock keeps a concurrent delete waiting until this rebuild is committed.
            if (await conn.execute(sa.select(models.c.id).where(models.c.id == model.id).with_for_update())).first() is None:
                return
            if unless_caught_up and updates and not await _still_recorded(conn, model.id, updates):
                updates = []  # another process rebuilt (and announced) this drift already
            await conn.execute(model_refs.delete().where(model_refs.c.model_id == model.id))
            if snap.refs:
                await conn.execute(model_refs.insert(), [{"model_id": model.id, **r.row()} for r in snap.refs])
            await conn.execute(model_files.delete().where(model_files.c.model_id == model.id))
            if snap.files:
                await conn.execute(model_files.insert(), [
                    {"model_id": model.id, "path": f.path, "size": f.size, "blob_oid": f.blob_oid, "lfs_oid": f.lfs_oid}
                    for f in snap.files])
            await conn.execute(model_card_tags.delete().where(model_card_tags.c.model_id == model.id))
            clean_tags = sorted({t for t in tags if isinstance(t, str)})
            if clean_tags:
                await conn.execute(model_card_tags.insert(), [{"model_id": model.id, "tag": t} for t in clean_tags])
            await conn.execute(models.update().where(models.c.id == model.id).values(
                card_json=json.dumps(card) if card else None, summary=snap.card.summary,
                library_name=_str(card.get("library_name")), pipeline_tag=_str(card.get("pipeline_tag")),
                total_size=snap.total_size, head_commit=snap.head_commit, updated_at=time.time()))

            scope = {"namespace_id": await _namespace_id(conn, model.id), "model_id": model.id}
            branch_updates = [u for u in updates if u.is_branch]
            if branch_updates:
                await enqueue(conn, **scope, event="push", payload=envelope("push", model.namespace, model.name, {
                    **base, "updates": [{"ref": u.ref, "before": None if u.created else u.old,
                                         "after": None if u.deleted else u.new} for u in branch_updates]}))
            for u in updates:
                if not u.is_tag:
                    continue
                if not u.created:
                    await enqueue(conn, **scope, event="tag.deleted", payload=envelope(
                        "tag.deleted", model.namespace, model.name, {**base, "tag": u.short, "commit_was": u.old}))
                if u.deleted or created_tags.get(u.short) is None:
                    continue
                commit, tag_card, files = created_tags[u.short]
                ref = next((r for r in snap.refs if r.kind == "tag" and r.name == u.short), None)
                await enqueue(conn, **scope, event="tag.created", payload=envelope(
                    "tag.created", model.namespace, model.name, {
                        **base, "tag": u.short, "commit": commit,
                        "tagger": ref.tagger if ref else None, "message": ref.message if ref else None,
                        "card": tag_card.metadata if tag_card.valid else {},
                        "card_valid": tag_card.valid,
                        "lfs_files": [{"path": f.path, "oid": f.lfs_oid, "size": f.size} for f in files if f.lfs_oid],
                    }))
        self.wake()


async def _still_recorded(conn, model_id: int, updates: list[RefUpdate]) -> bool:
    """Whether the catalog records each update's ``old`` tip (ZERO: no such ref) right now."""
    rows = await conn.execute(sa.select(model_refs.c.kind, model_refs.c.name, model_refs.c.commit)
                              .where(model_refs.c.model_id == model_id))
    recorded = {(r.kind, r.name): r.commit for r in rows}
    return all(recorded.get(("tag" if u.is_tag else "branch", u.short), ZERO) == u.old for u in updates)


async def _namespace_id(conn, model_id: int) -> int:
    return (await conn.execute(sa.select(models.c.namespace_id).where(models.c.id == model_id))).scalar_one()


def _str(value: object) -> str | None:
    return value[:100] if isinstance(value, str) else None
