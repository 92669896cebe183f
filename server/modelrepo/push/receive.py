"""The daemon's side of the receive hooks: judge a push (pre-receive) and apply it (post-receive)."""

import asyncio
import time
from pathlib import Path

import structlog

from modelrepo.inspect.policy import gather_findings, pickle_warnings, pushed_files
from modelrepo.inspect.service import Inspections
from modelrepo.metrics import Metrics
from modelrepo.settings import Settings
from modelrepo.models.deployments import Deployments
from modelrepo.git.runner import GitRunner
from modelrepo.lfs.service import Lfs
from modelrepo.models.service import Models
from modelrepo.push.effects import PushEffects
from modelrepo.push.facts import GitReader, PushLimits, gather, judge, pointer_oids, quarantine_env
from modelrepo.push.rules import RefUpdate, reason_of
from modelrepo.push.sessions import PushSession

log = structlog.get_logger("modelrepo.receive")


def parse_updates(raw: object) -> list[RefUpdate]:
    if not isinstance(raw, list):
        return []
    out = []
    for item in raw:
        if isinstance(item, dict) and all(isinstance(item.get(k), str) for k in ("old", "new", "ref")):
            out.append(RefUpdate(item["old"], item["new"], item["ref"]))
    return out


class Receive:
    def __init__(self, settings: Settings, models: Models, lfs: Lfs, deployments: Deployments,
                 effects: PushEffects, git: GitRunner, metrics: Metrics, inspections: Inspections | None = None) -> None:
        self.settings = settings
        self.models = models
        self.lfs = lfs
        self.deployments = deployments
        self.effects = effects
        self.git = git
        self.metrics = metrics
        self.inspections = inspections
        self.limits = PushLimits(settings.push.max_plain_blob, tuple(settings.push.weight_patterns))

    async def pre(self, session: PushSession, updates: list[RefUpdate], env: dict, cwd: str) -> list[str]:
        started = time.perf_counter()
        model = await self.models.for_write(session.identity, session.namespace, session.name)
        path = self.models.path(model)
        if Path(cwd).resolve() != path:
            return ["push refused: hook ran in an unexpected repository"]
        reader = GitReader(self.git, path, quarantine_env(env, cwd))
        facts = await gather(reader, updates, model.default_branch, self.limits.weight_patterns)
        linked = await self.lfs.linked_sizes(model.id, pointer_oids(facts))
        pickles = await self._pickles(reader, facts, linked)
        identity = session.identity
        # In a thread: YAML parsing and schema validation are CPU work.
        problems = await asyncio.to_thread(
            judge, facts, updates, limits=self.limits,
            namespace_admin=identity.namespace_admin(model.role),
            default_branch=model.default_branch, allow_force_push=model.allow_force_push,
            deployed=await self.deployments.live_refs(model.id), linked=linked,
            schema_file=self.settings.push.model_card_schema,
            pickles=pickles, pickle_policy=self.settings.push.pickle_policy)
        for _code, message, path in pickle_warnings(pickles, self.settings.push.pickle_policy):
            log.warning("dangerous_pickle_accepted", model=model.full_name, path=path, detail=message)
            session.warnings.append(message)
        if problems:
            for reason in sorted({reason_of(p) for p in problems}):
                self.metrics.pushes.labels("refused", reason).inc()
        else:
            self.metrics.pushes.labels("accepted", "").inc()
        log.info("pre_receive", model=model.full_name, refs=[u.ref for u in updates], blobs=len(facts.blobs),
                 refused=len(problems), duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return problems

    async def _pickles(self, reader: GitReader, facts, linked: dict[str, int]) -> list:
        """inspect (issue 13): what the pushed weights hold; plain blobs are read from the quarantine."""
        if self.inspections is None:
            return []

        async def read_blob(oid: str) -> bytes | None:
            return (await reader.contents([oid])).get(oid)

        return await gather_findings(self.inspections, pushed_files(facts.blobs, linked), read_blob)

    async def post(self, session: PushSession, updates: list[RefUpdate]) -> None:
        model = await self.models.for_read(session.identity, session.namespace, session.name)
        await self.effects.apply(model, updates, pusher=session.identity.name,
                                 clone_url=f"{session.base_url}/{model.full_name}.git")
        log.info("post_receive", model=model.full_name, refs=[u.ref for u in updates])
