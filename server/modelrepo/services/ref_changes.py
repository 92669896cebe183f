"""Branch and tag changes made through the API, under the same rules and with the same effects
as a git push: immutable tags, refs pinned by deployments, catalog sync and events."""

import asyncio

import pygit2

from ..errors import Conflict, Forbidden
from ..names import check_ref_name
from . import repos
from .access import Identity
from .deployments import Deployments
from .models import Model, Models
from .push_effects import PushEffects
from .push_rules import ZERO, RefUpdate, check_ref_updates


class RefChanges:
    def __init__(self, models: Models, effects: PushEffects, deployments: Deployments) -> None:
        self.models = models
        self.effects = effects
        self.deployments = deployments

    async def _guard(self, identity: Identity, model: Model, update: RefUpdate) -> None:
        problems = check_ref_updates(
            [update], namespace_admin=identity.namespace_admin(model.role),
            default_branch=model.default_branch, allow_force_push=model.allow_force_push,
            deployed=await self.deployments.live_refs(model.id), non_fast_forward=set())
        if problems:
            raise (Conflict if "deployment" in problems[0] else Forbidden)(problems[0])

    async def create_tag(self, identity: Identity, namespace: str, name: str, tag: str, revision: str,
                         message: str, clone_url: str) -> dict:
        model = await self.models.for_write(identity, namespace, name)
        tagger = pygit2.Signature(identity.name or "modelrepo", f"{identity.name}@modelrepo.invalid")
        created = await asyncio.to_thread(repos.create_tag, self.models.path(model), tag, revision, message, tagger)
        await self.effects.apply(model, [RefUpdate(ZERO, created["object"], f"refs/tags/{tag}")],
                                 pusher=identity.name, clone_url=clone_url)
        return created

    async def delete_tag(self, identity: Identity, namespace: str, name: str, tag: str, clone_url: str) -> None:
        model = await self.models.for_write(identity, namespace, name)
        check_ref_name(tag, "tag")
        old = await asyncio.to_thread(repos.ref_target, self.models.path(model), f"refs/tags/{tag}", "tag")
        update = RefUpdate(old, ZERO, f"refs/tags/{tag}")
        await self._guard(identity, model, update)
        await asyncio.to_thread(repos.delete_ref, self.models.path(model), update.ref, "tag")
        await self.effects.apply(model, [update], pusher=identity.name, clone_url=clone_url)

    async def create_branch(self, identity: Identity, namespace: str, name: str, branch: str, revision: str,
                            clone_url: str) -> dict:
        model = await self.models.for_write(identity, namespace, name)
        created = await asyncio.to_thread(repos.create_branch, self.models.path(model), branch, revision)
        await self.effects.apply(model, [RefUpdate(ZERO, created["commit"], f"refs/heads/{branch}")],
                                 pusher=identity.name, clone_url=clone_url)
        return created

    async def delete_branch(self, identity: Identity, namespace: str, name: str, branch: str, clone_url: str) -> None:
        model = await self.models.for_write(identity, namespace, name)
        check_ref_name(branch, "branch")
        if branch == model.default_branch:
            raise Conflict(f"cannot delete the default branch {branch!r}; change default_branch first",
                           code="default_branch")
        old = await asyncio.to_thread(repos.ref_target, self.models.path(model), f"refs/heads/{branch}", "branch")
        update = RefUpdate(old, ZERO, f"refs/heads/{branch}")
        await self._guard(identity, model, update)
        await asyncio.to_thread(repos.delete_ref, self.models.path(model), update.ref, "branch")
        await self.effects.apply(model, [update], pusher=identity.name, clone_url=clone_url)
