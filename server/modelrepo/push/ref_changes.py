"""Branch and tag changes made through the API, under the same rules and with the same effects
as a git push: immutable tags, refs pinned by deployments, catalog sync and events."""

import asyncio

import pygit2

from modelrepo.errors import Conflict, Forbidden, Unprocessable
from modelrepo.names import check_ref_name
from modelrepo.git import repos
from modelrepo.accounts.access import Identity
from modelrepo.inspect.policy import gather_findings, pickle_problems, repo_blob_reader, tree_files
from modelrepo.inspect.service import Inspections
from modelrepo.models.deployments import Deployments
from modelrepo.models.service import Model, Models
from modelrepo.push.effects import PushEffects
from modelrepo.push.rules import ZERO, RefUpdate, check_card, check_ref_updates
from modelrepo.git.snapshot import read_at


class RefChanges:
    def __init__(self, models: Models, effects: PushEffects, deployments: Deployments,
                 inspections: Inspections | None = None, pickle_policy: str = "refuse") -> None:
        self.models = models
        self.effects = effects
        self.deployments = deployments
        self.inspections = inspections
        self.pickle_policy = pickle_policy

    async def _guard(self, identity: Identity, model: Model, update: RefUpdate) -> None:
        problems = check_ref_updates(
            [update], namespace_admin=identity.namespace_admin(model.role),
            default_branch=model.default_branch, allow_force_push=model.allow_force_push,
            deployed=await self.deployments.live_refs(model.id), non_fast_forward=set())
        if problems:
            raise (Conflict if "deployment" in problems[0] else Forbidden)(problems[0])

    async def _card_ok(self, model: Model, revision: str, what: str) -> None:
        """A release tag (and the default branch) must carry a valid model card, as on push."""
        at = await asyncio.to_thread(read_at, self.models.path(model), revision)
        if at is None:
            return  # resolution errors are reported by the ref operation itself
        problems = check_card(what, at[1])
        if problems:
            raise Unprocessable("; ".join(problems), code="invalid_model_card")

    async def _weights_ok(self, model: Model, revision: str) -> None:
        """inspect (issue 13): a release tag over a dangerous pickle is refused as its push would be
        (push.pickle_policy), even when the file arrived under an older policy or before inspection."""
        if self.inspections is None:
            return
        path = self.models.path(model)
        at = await asyncio.to_thread(read_at, path, revision)
        if at is None:
            return
        found = await gather_findings(self.inspections, tree_files(at[2]), repo_blob_reader(path))
        refused = pickle_problems(found, self.pickle_policy)
        if refused:
            raise Unprocessable("; ".join(m for _c, m, _p in refused), code="dangerous_pickle")

    async def create_tag(self, identity: Identity, namespace: str, name: str, tag: str, revision: str,
                         message: str, clone_url: str) -> dict:
        model = await self.models.for_write(identity, namespace, name)
        await self._card_ok(model, revision, f"refs/tags/{tag}")
        await self._weights_ok(model, revision)
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
        if branch == model.default_branch:
            await self._card_ok(model, revision, f"refs/heads/{branch}")
        created = await asyncio.to_thread(repos.create_branch, self.models.path(model), branch, revision)
        await self.effects.apply(model, [RefUpdate(ZERO, created["commit"], f"refs/heads/{branch}")],
                                 pusher=identity.name, clone_url=clone_url)
        return created

    async def set_default_branch(self, identity: Identity, namespace: str, name: str, branch: str,
                                 clone_url: str) -> None:
        """Switching the default branch: it must exist and carry a valid card; then the catalog's
        card, files and sizes are rebuilt from it."""
        model = await self.models.for_admin(identity, namespace, name)
        check_ref_name(branch, "branch")
        await self._card_ok(model, f"refs/heads/{branch}", f"refs/heads/{branch}")
        updated = await self.models.update(identity, namespace, name, default_branch=branch)
        await self.effects.apply(updated, [], pusher=identity.name, clone_url=clone_url)

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
