"""Branch and tag changes made through the API, judged by the same judge as a git push (immutable
tags, refs pinned by deployments, the model card at a release tag or the default branch, …) and
given the same effects (catalog sync, events)."""

import asyncio

import pygit2

from modelrepo.accounts.access import Identity
from modelrepo.errors import NotFound
from modelrepo.git import repos
from modelrepo.models.service import Model, Models
from modelrepo.names import check_ref_name
from modelrepo.push.effects import PushEffects
from modelrepo.push.judge import Judge
from modelrepo.push.problems import PushRefused
from modelrepo.push.rules import ZERO, RefUpdate


class RefChanges:
    def __init__(self, models: Models, effects: PushEffects, judge: Judge) -> None:
        self.models = models
        self.effects = effects
        self.judge = judge

    async def _judge(self, identity: Identity, model: Model, update: RefUpdate,
                     default_branch: str | None = None) -> None:
        path = self.models.path(model)
        held = await asyncio.to_thread(repos.Held, path)
        try:
            verdict = await self.judge.check(path, model, identity, [update], default_branch=default_branch)
        finally:
            # A delete meanwhile makes git fail, or makes the facts look wrong (the delete took the
            # model's LFS links with it: "object missing", a 422): either way the answer is its 404.
            await asyncio.to_thread(held.check)
        if not verdict.ok:
            raise PushRefused(verdict.problems)

    async def _commit_of(self, model: Model, revision: str) -> str:
        """The commit a revision names, with the ref operations' own checks (a commit some branch or
        tag reaches; 400/404 otherwise), so what is judged is exactly what will be pointed at."""
        def resolve(path) -> str:
            # _resolve_commit is the one resolver the ref operations use; not re-implemented here.
            return str(repos._resolve_commit(pygit2.Repository(str(path)), revision).id)
        return await self.models.read(model, resolve)

    async def create_tag(self, identity: Identity, namespace: str, name: str, tag: str, revision: str,
                         message: str, clone_url: str) -> dict:
        model = await self.models.for_write(identity, namespace, name)
        check_ref_name(tag, "tag")
        commit = await self._commit_of(model, revision)
        await self._judge(identity, model, RefUpdate(ZERO, commit, f"refs/tags/{tag}"))
        revision = commit  # tag exactly what was judged, even if the branch moves meanwhile
        tagger = pygit2.Signature(identity.name or "modelrepo", f"{identity.name}@modelrepo.invalid")
        created = await self.models.read(model, repos.create_tag, tag, revision, message, tagger)
        await self.effects.apply(model, [RefUpdate(ZERO, created["object"], f"refs/tags/{tag}")],
                                 pusher=identity.name, clone_url=clone_url)
        return created

    async def delete_tag(self, identity: Identity, namespace: str, name: str, tag: str, clone_url: str) -> None:
        model = await self.models.for_write(identity, namespace, name)
        check_ref_name(tag, "tag")
        old = await self.models.read(model, repos.ref_target, f"refs/tags/{tag}", "tag")
        update = RefUpdate(old, ZERO, f"refs/tags/{tag}")
        await self._judge(identity, model, update)
        await self.models.read(model, repos.delete_ref, update.ref, "tag")
        await self.effects.apply(model, [update], pusher=identity.name, clone_url=clone_url)

    async def create_branch(self, identity: Identity, namespace: str, name: str, branch: str, revision: str,
                            clone_url: str) -> dict:
        model = await self.models.for_write(identity, namespace, name)
        check_ref_name(branch, "branch")
        commit = await self._commit_of(model, revision)
        await self._judge(identity, model, RefUpdate(ZERO, commit, f"refs/heads/{branch}"))
        revision = commit
        created = await self.models.read(model, repos.create_branch, branch, revision)
        await self.effects.apply(model, [RefUpdate(ZERO, created["commit"], f"refs/heads/{branch}")],
                                 pusher=identity.name, clone_url=clone_url)
        return created

    async def set_default_branch(self, identity: Identity, namespace: str, name: str, branch: str,
                                 clone_url: str) -> None:
        """Switching the default branch: it must exist and pass as the default (a valid card); then
        the catalog's card, files and sizes are rebuilt from it."""
        model = await self.models.for_admin(identity, namespace, name)
        check_ref_name(branch, "branch")
        try:
            commit = await self._commit_of(model, f"refs/heads/{branch}")
        except NotFound:
            commit = None  # an empty repository may name its future default branch
        if commit is not None:
            await self._judge(identity, model, RefUpdate(ZERO, commit, f"refs/heads/{branch}"), default_branch=branch)
        updated = await self.models.update(identity, namespace, name, default_branch=branch)
        await self.effects.apply(updated, [], pusher=identity.name, clone_url=clone_url)

    async def delete_branch(self, identity: Identity, namespace: str, name: str, branch: str, clone_url: str) -> None:
        model = await self.models.for_write(identity, namespace, name)
        check_ref_name(branch, "branch")
        old = await self.models.read(model, repos.ref_target, f"refs/heads/{branch}", "branch")
        update = RefUpdate(old, ZERO, f"refs/heads/{branch}")
        await self._judge(identity, model, update)
        await self.models.read(model, repos.delete_ref, update.ref, "branch")
        await self.effects.apply(model, [update], pusher=identity.name, clone_url=clone_url)
