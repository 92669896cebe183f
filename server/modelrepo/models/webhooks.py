"""Events, webhooks and their durable outbox.

``enqueue`` is called inside the transaction of the change that caused the event, so an event is
recorded if and only if the change committed. The delivery worker (webhook_worker.py) sends what
is due; a daemon killed in between delivers after restart, with the same delivery id.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from modelrepo.catalog.db import Catalog
from modelrepo.catalog.schema import deliveries, delivery_attempts, webhooks
from modelrepo.errors import InvalidInput, NotFound
from modelrepo.models.webhook_targets import allow_list, check_host
from modelrepo.settings import WebhookSettings

EVENTS = ("model.created", "model.deleted", "push", "tag.created", "tag.deleted",
          "deployment.requested", "deployment.updated")


def envelope(event: str, namespace: str, model: str | None, data: dict) -> dict:
    return {"event": event, "timestamp": time.time(), "namespace": namespace, "model": model, **data}


async def enqueue(conn: AsyncConnection, *, namespace_id: int, model_id: int | None, event: str,
                  payload: dict) -> int:
    """One pending delivery per active webhook (of the namespace or the model) that wants ``event``.
    Must run inside the caller's transaction."""
    assert event in EVENTS
    scope = webhooks.c.namespace_id == namespace_id
    if model_id is not None:
        scope = sa.or_(scope, webhooks.c.model_id == model_id)
    rows = (await conn.execute(sa.select(webhooks.c.id, webhooks.c.events).where(scope, webhooks.c.active))).all()
    targets = [r.id for r in rows if event in json.loads(r.events)]
    if not targets:
        return 0
    body = json.dumps(payload, sort_keys=True)
    now = time.time()
    await conn.execute(deliveries.insert(), [
        {"id": str(uuid.uuid4()), "webhook_id": wid, "event": event, "payload": body, "status": "pending",
         "attempts": 0, "next_attempt_at": now, "created_at": now} for wid in targets])
    return len(targets)


def _webhook_json(row: sa.Row) -> dict:
    # The secret is never returned after creation.
    return {"id": row.id, "url": row.url, "events": json.loads(row.events), "active": bool(row.active),
            "created_at": row.created_at, "has_secret": bool(row.secret)}


class Webhooks:
    def __init__(self, catalog: Catalog, settings: WebhookSettings, wake: Callable[[], None]) -> None:
        self.catalog = catalog
        self.settings = settings
        self.wake = wake  # nudges the worker after a commit that enqueued something

    async def check_url(self, url: object) -> str:
        """An http(s) URL whose host the SSRF guard lets through (webhook_targets.py)."""
        if not isinstance(url, str) or len(url) > 2000:
            raise InvalidInput("url must be an http(s) URL")
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidInput("url has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput("url must be an http(s) URL")
        reason = await check_host(parts.hostname, port, allow_list(self.settings.allowed_hosts),
                                  self.settings.timeout)
        if reason:
            raise InvalidInput(reason, code="webhook_target_refused")
        return url

    @staticmethod
    def check_events(events: object) -> list[str]:
        if not isinstance(events, list) or not events or not all(e in EVENTS for e in events):
            raise InvalidInput(f"events must be a non-empty list drawn from {', '.join(EVENTS)}")
        return sorted(set(events))

    async def create(self, *, namespace_id: int | None, model_id: int | None, url: str, secret: str,
                     events: list[str], active: bool = True) -> dict:
        values = {"namespace_id": namespace_id, "model_id": model_id, "url": await self.check_url(url),
                  "secret": secret, "events": json.dumps(self.check_events(events)), "active": active,
                  "created_at": time.time()}
        async with self.catalog.tx() as conn:
            res = await conn.execute(webhooks.insert().values(**values))
            row = (await conn.execute(sa.select(webhooks).where(webhooks.c.id == res.inserted_primary_key[0]))).one()
        return _webhook_json(row)

    def _scope(self, namespace_id: int | None, model_id: int | None) -> sa.ColumnElement:
        if model_id is not None:
            return webhooks.c.model_id == model_id
        return sa.and_(webhooks.c.namespace_id == namespace_id, webhooks.c.model_id.is_(None))

    async def list(self, *, namespace_id: int | None, model_id: int | None) -> list[dict]:
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(webhooks).where(self._scope(namespace_id, model_id))
                                       .order_by(webhooks.c.id))).all()
        return [_webhook_json(r) for r in rows]

    async def get(self, webhook_id: int, *, namespace_id: int | None, model_id: int | None) -> dict:
        async with self.catalog.read() as conn:
            row = (await conn.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id,
                                                                self._scope(namespace_id, model_id)))).first()
        if row is None:
            raise NotFound("webhook not found", code="webhook_not_found")
        return _webhook_json(row)

    async def update(self, webhook_id: int, changes: dict, *, namespace_id: int | None, model_id: int | None) -> dict:
        await self.get(webhook_id, namespace_id=namespace_id, model_id=model_id)
        values: dict = {}
        if "url" in changes:
            values["url"] = await self.check_url(changes["url"])
        if "secret" in changes:
            values["secret"] = changes["secret"]
        if "events" in changes:
            values["events"] = json.dumps(self.check_events(changes["events"]))
        if "active" in changes:
            values["active"] = bool(changes["active"])
        if values:
            async with self.catalog.tx() as conn:
                await conn.execute(webhooks.update().where(webhooks.c.id == webhook_id).values(**values))
        return await self.get(webhook_id, namespace_id=namespace_id, model_id=model_id)

    async def delete(self, webhook_id: int, *, namespace_id: int | None, model_id: int | None) -> None:
        await self.get(webhook_id, namespace_id=namespace_id, model_id=model_id)
        async with self.catalog.tx() as conn:
            await conn.execute(webhooks.delete().where(webhooks.c.id == webhook_id))

    async def deliveries(self, webhook_id: int, *, namespace_id: int | None, model_id: int | None,
                         limit: int = 100) -> list[dict]:
        await self.get(webhook_id, namespace_id=namespace_id, model_id=model_id)
        async with self.catalog.read() as conn:
            rows = (await conn.execute(sa.select(deliveries).where(deliveries.c.webhook_id == webhook_id)
                                       .order_by(deliveries.c.created_at.desc()).limit(limit))).all()
            ids = [r.id for r in rows]
            attempts = (await conn.execute(sa.select(delivery_attempts).where(delivery_attempts.c.delivery_id.in_(ids))
                                           .order_by(delivery_attempts.c.id))).all() if ids else []
        by_delivery: dict[str, list[dict]] = {}
        for a in attempts:
            by_delivery.setdefault(a.delivery_id, []).append(
                {"attempt": a.attempt, "at": a.at, "response_code": a.response_code,
                 "duration_ms": round(a.duration_ms, 1), "error": a.error})
        return [{"id": r.id, "event": r.event, "status": r.status, "attempts": r.attempts,
                 "response_code": r.last_response_code, "error": r.last_error, "created_at": r.created_at,
                 "delivered_at": r.delivered_at, "next_attempt_at": r.next_attempt_at if r.status == "pending" else None,
                 "duration_ms": by_delivery.get(r.id, [{}])[-1].get("duration_ms"),
                 "attempt_log": by_delivery.get(r.id, [])} for r in rows]

    async def redeliver(self, webhook_id: int, delivery_id: str, *, namespace_id: int | None,
                        model_id: int | None) -> dict:
        """Queue the same delivery (same id, same payload) again, now."""
        await self.get(webhook_id, namespace_id=namespace_id, model_id=model_id)
        async with self.catalog.tx() as conn:
            res = await conn.execute(deliveries.update().where(
                deliveries.c.id == delivery_id, deliveries.c.webhook_id == webhook_id).values(
                status="pending", next_attempt_at=time.time()))
        if res.rowcount == 0:
            raise NotFound("delivery not found", code="delivery_not_found")
        self.wake()
        return {"id": delivery_id, "status": "pending"}
