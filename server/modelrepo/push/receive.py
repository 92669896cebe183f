"""The daemon's side of the receive hooks: judge a push (pre-receive) and apply it (post-receive)."""

import time
from pathlib import Path

import structlog

from modelrepo.metrics import Metrics
from modelrepo.models.service import Models
from modelrepo.push.effects import PushEffects
from modelrepo.push.facts import quarantine_env
from modelrepo.push.judge import Judge, metric_reasons
from modelrepo.push.rules import RefUpdate
from modelrepo.push.sessions import PushSession

log = structlog.get_logger("modelrepo.receive")


class Receive:
    def __init__(self, models: Models, judge: Judge, effects: PushEffects, metrics: Metrics) -> None:
        self.models = models
        self.judge = judge
        self.effects = effects
        self.metrics = metrics

    async def pre(self, session: PushSession, updates: list[RefUpdate], env: dict, cwd: str) -> list[str]:
        """The lines to refuse the push with (empty: accept)."""
        started = time.perf_counter()
        model = await self.models.for_write(session.identity, session.namespace, session.name)
        path = self.models.path(model)
        if Path(cwd).resolve() != path:
            return ["push refused: hook ran in an unexpected repository"]
        verdict = await self.judge.check(path, model, session.identity, updates, env=quarantine_env(env, cwd))
        for reason in metric_reasons(verdict.problems):
            self.metrics.pushes.labels("refused", reason).inc()
        if verdict.ok:
            self.metrics.pushes.labels("accepted", "").inc()
        log.info("pre_receive", model=model.full_name, refs=[u.ref for u in updates], blobs=len(verdict.facts.blobs),
                 refused=len(verdict.problems), codes=metric_reasons(verdict.problems),
                 duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return [p.line() for p in verdict.problems]

    async def post(self, session: PushSession, updates: list[RefUpdate]) -> None:
        model = await self.models.for_read(session.identity, session.namespace, session.name)
        await self.effects.apply(model, updates, pusher=session.identity.name,
                                 clone_url=f"{session.base_url}/{model.full_name}.git")
        log.info("post_receive", model=model.full_name, refs=[u.ref for u in updates])
