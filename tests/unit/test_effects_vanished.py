"""Post-receive's rebuild (and the REST/Hub ref changes that share it) on a repository a delete
renamed away meanwhile: left alone, like a model whose row is gone, never a 500 (the CI run's
'rest create tag' 500 in test_delete_races)."""

from pathlib import Path

import pygit2

from modelrepo.models.service import Model
from modelrepo.push.effects import PushEffects
from modelrepo.push.rules import ZERO, RefUpdate


class NoCatalog:
    def tx(self, *args, **kwargs):
        raise AssertionError("a vanished repository must not reach the catalog")


def model() -> Model:
    return Model(id=1, namespace="n", name="m", description="", visibility="public", default_branch="main",
                 created_at=1.0, updated_at=1.0)


async def test_a_repository_renamed_away_before_the_rebuild_is_left_alone(tmp_path: Path):
    path = tmp_path / "n" / "m.git"
    repo = pygit2.init_repository(str(path), bare=True)
    tree = repo.TreeBuilder().write()
    sig = pygit2.Signature("t", "t@example.com")
    commit = repo.create_commit("refs/heads/main", sig, sig, "c", tree, [])
    path.rename(tmp_path / "trash.git")  # what Models.delete does, inside its transaction
    effects = PushEffects(NoCatalog(), lambda _m: path, lambda: None)  # type: ignore[arg-type]
    await effects.apply(model(), [RefUpdate(ZERO, str(commit), "refs/tags/v1")], pusher="alice",
                        clone_url="http://x/n/m.git")
