"""Deployments: the one-click launch of a tagged model, and the inference platform's reports.

A deployment pins a tag's commit. While it is requested or active, the tag cannot be deleted (push
rules) and the model cannot be deleted (Models.delete)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import deployments, models, namespaces
from modelrepo.errors import Conflict, InvalidInput, NotFound, Unauthenticated, Unprocessable, model_not_found
from modelrepo.names import check_name, check_ref_name
from modelrepo.accounts.access import Identity
from modelrepo.inspect.policy import deploy_problems, gather_findings, repo_blob_reader, tree_files
from modelrepo.inspect.service import Inspections
from modelrepo.models.card import ModelCard
from modelrepo.models.service import Model, Models
from modelrepo.git.snapshot import read_at
from modelrepo.models.webhooks import enqueue, envelope

LIVE = ("requested", "active")


class UnsafeWeights(Unprocessable):
    """422 whose body carries the findings (``details``) as well as the message."""

    def __init__(self, message: str, findings: list[dict]) -> None:
        super().__init__(message, code="unsafe_weights")
        self.details = {"findings": findings}


def _json(row: sa.Row, model: str) -> dict:
    return {"id": row.id, "model": model, "name": row.name, "revision": row.revision, "commit": row.commit,
            "target": row.target, "params": json.loads(row.params), "status": row.status, "endpoint": row.endpoint,
            "created_by": row.created_by, "created_at": row.created_at, "updated_at": row.updated_at}


class Deployments:
    def __init__(self, catalog: Catalog, models_: Models, required_fields: tuple[str, ...],
                 wake: Callable[[], None], clone_url: Callable[[Model], str], card_schema: Path | None = None,
                 inspections: Inspections | None = None, require_safe_weights: bool = False) -> None:
        self.catalog = catalog
        # The card gate reads cards with the schema the push judge uses (push.model_card_schema).
        self.card_schema = card_schema
        self.inspections = inspections
        self.require_safe_weights = require_safe_weights
        self.models = models_
        self.required = required_fields
        self.wake = wake
        self.clone_url = clone_url

    async def live_refs(self, model_id: int) -> dict[str, str]:
        """refs/tags/<revision> -> deployment name, for deployments still requested or active."""
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(deployments.c.revision, deployments.c.name).where(
                deployments.c.model_id == model_id, deployments.c.status.in_(LIVE)))).all()
        return {f"refs/tags/{r.revision}": r.name for r in rows}

    def gate(self, card: ModelCard, revision: str) -> list[str]:
        """Why the card at ``revision`` cannot be deployed (empty: it can). The web UI shows the
        same list next to each release."""
        reasons = list(card.errors)
        if card.valid:
            reasons += [f"README.md at {revision}: model card lacks required field '{f}'"
                        for f in self.required if not card.metadata.get(f)]
            if card.metadata.get("inference") is False:
                reasons.append(f"README.md at {revision}: 'inference: false' marks this model as not deployable")
        return reasons

    async def create(self, identity: Identity, namespace: str, name: str, body: dict) -> dict:
        model = await self.models.for_write(identity, namespace, name)
        dep_name = check_name(body.get("name"), "deployment")
        revision = check_ref_name(body.get("revision"), "tag")
        target, params = body.get("target"), body.get("params", {})
        if target is not None and not isinstance(target, str):
            raise InvalidInput("target must be a string")
        if not isinstance(params, dict):
            raise InvalidInput("params must be an object")
        # Deleted (by another process) since we looked it up: the missing model's 404.
        at = await self.models.read(model, read_at, f"refs/tags/{revision}", self.card_schema)
        if at is None:
            raise Unprocessable(f"revision {revision!r} is not a tag of {model.full_name}: deployments are made "
                                f"from release tags (git tag -a {revision} && git push origin {revision})",
                                code="not_a_tag")
        commit, card, files = at
        reasons = self.gate(card, revision)
        if reasons:
            raise Unprocessable("cannot deploy: " + "; ".join(reasons), code="invalid_model_card")
        await self._weights_gate(model, revision, files)
        now = time.time()
        async with self.catalog.tx() as conn:
            # The lock Models.delete takes: a delete committed first means no model to deploy, one
            # waiting behind us sees this deployment and refuses; two requests for one name queue.
            if (await conn.execute(sa.select(models.c.id).where(models.c.id == model.id)
                                   .with_for_update())).first() is None:
                raise model_not_found()
            clash = (await conn.execute(sa.select(deployments.c.id).where(
                deployments.c.model_id == model.id, deployments.c.name == dep_name,
                deployments.c.status.in_(LIVE)))).first()
            if clash:
                raise Conflict(f"deployment {dep_name!r} of {model.full_name} is already live (id {clash.id})")
            res = await conn.execute(deployments.insert().values(
                model_id=model.id, name=dep_name, revision=revision, commit=commit, target=target,
                params=json.dumps(params), status="requested", created_by=identity.name, created_at=now,
                updated_at=now))
            row = (await conn.execute(sa.select(deployments).where(deployments.c.id == res.inserted_primary_key[0]))).one()
            out = _json(row, model.full_name)
            await enqueue(conn, namespace_id=await self._ns_id(conn, model.id), model_id=model.id,
                          event="deployment.requested", payload=envelope(
                              "deployment.requested", model.namespace, model.name, {
                                  "deployment": out, "card": card.metadata, "clone_url": self.clone_url(model),
                                  "lfs_files": [{"path": f.path, "oid": f.lfs_oid, "size": f.size}
                                                for f in files if f.lfs_oid]}))
        self.wake()
        return out

    async def _weights_gate(self, model: Model, revision: str, files: list) -> None:
        """A tag whose files hold a dangerous pickle (with deploy.require_safe_weights: any pickle) is
        not deployed: 422 with the findings."""
        if self.inspections is None:
            return
        found = await gather_findings(self.inspections, tree_files(files), repo_blob_reader(self.models.path(model)))
        problems = deploy_problems(found, self.require_safe_weights)
        if problems:
            raise UnsafeWeights(f"cannot deploy {revision}: " + "; ".join(m for _c, m, _p in problems),
                                [{"code": c, "path": p, "message": m, "inspection": f.inspection}
                                 for (c, m, p) in problems for f in found if f.path == p])

    async def list(self, identity: Identity, namespace: str, name: str) -> list[dict]:
        model = await self.models.for_read(identity, namespace, name)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(deployments).where(deployments.c.model_id == model.id)
                                       .order_by(deployments.c.id))).all()
        return [_json(r, model.full_name) for r in rows]

    async def _locate(self, identity: Identity, deployment_id: int, write: bool) -> tuple[Model, sa.Row]:
        async with self.catalog.read() as conn:
            row = (await conn.execute(
                sa.select(deployments, models.c.name.label("model_name"), namespaces.c.name.label("ns_name"))
                .join(models, models.c.id == deployments.c.model_id)
                .join(namespaces, namespaces.c.id == models.c.namespace_id)
                .where(deployments.c.id == deployment_id))).first()
        if row is None:
            if identity.anonymous:  # as for models: anonymous callers cannot tell missing from private
                raise Unauthenticated("authentication required")
            raise NotFound("deployment not found", code="deployment_not_found")
        try:
            check = self.models.for_write if write else self.models.for_read
            model = await check(identity, row.ns_name, row.model_name)
        except NotFound:
            raise NotFound("deployment not found", code="deployment_not_found") from None
        return model, row

    async def get(self, identity: Identity, deployment_id: int) -> dict:
        model, row = await self._locate(identity, deployment_id, write=False)
        return _json(row, model.full_name)

    async def update(self, identity: Identity, deployment_id: int, body: dict) -> dict:
        model, row = await self._locate(identity, deployment_id, write=True)
        status = body.get("status")
        if status not in ("active", "failed", "stopped"):
            raise InvalidInput("status must be one of active, failed, stopped")
        endpoint = body.get("endpoint", row.endpoint)
        if endpoint is not None and not isinstance(endpoint, str):
            raise InvalidInput("endpoint must be a string")
        async with self.catalog.tx() as conn:
            await conn.execute(deployments.update().where(deployments.c.id == deployment_id).values(
                status=status, endpoint=endpoint, updated_at=time.time()))
            new = (await conn.execute(sa.select(deployments).where(deployments.c.id == deployment_id))).one()
            out = _json(new, model.full_name)
            await enqueue(conn, namespace_id=await self._ns_id(conn, model.id), model_id=model.id,
                          event="deployment.updated", payload=envelope(
                              "deployment.updated", model.namespace, model.name,
                              {"deployment": out, "previous_status": row.status}))
        self.wake()
        return out

    @staticmethod
    async def _ns_id(conn, model_id: int) -> int:
        return (await conn.execute(sa.select(models.c.namespace_id).where(models.c.id == model_id))).scalar_one()
