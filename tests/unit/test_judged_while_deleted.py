"""A REST ref change judged while a delete (by any process) renames the repository away: the judge
then sees a model whose LFS links the delete took with it and refuses ("lfs_missing", 422). The
answer must be the delete that won, the missing model's 404 — the clean-clone CI run's
'rest create tag' 422 in test_delete_races."""

from pathlib import Path

import pytest

from modelrepo.errors import NotFound
from modelrepo.git import repos
from modelrepo.models.service import Model
from modelrepo.push.judge import Verdict
from modelrepo.push.problems import Code, Problem, PushRefused
from modelrepo.push.ref_changes import RefChanges
from modelrepo.push.rules import ZERO, RefUpdate


def model() -> Model:
    return Model(id=1, namespace="n", name="m", description="", visibility="public", default_branch="main",
                 created_at=1.0, updated_at=1.0)


class Paths:
    def __init__(self, path: Path) -> None:
        self._path = path

    def path(self, _model: Model) -> Path:
        return self._path


class RefusingJudge:
    """Refuses as the real judge does when the LFS links are gone; renames the repository first
    when told to, as Models.delete does inside its transaction."""

    def __init__(self, store: repos.RepoStore, delete: bool) -> None:
        self.store, self.delete = store, delete

    async def check(self, path, model, identity, updates, **kwargs) -> Verdict:
        if self.delete:
            self.store.trash("n", "m")
        problem = Problem(Code.LFS_MISSING, "weights.bin: the LFS object is not on the server.", path="weights.bin")
        return Verdict(problems=[problem], facts=None)  # type: ignore[arg-type]


@pytest.mark.parametrize("delete", [True, False])
async def test_a_refusal_of_a_model_deleted_meanwhile_is_the_missing_model(tmp_path: Path, delete: bool):
    store = repos.RepoStore(tmp_path / "repos")
    path = store.create("n", "m", "main")
    changes = RefChanges(Paths(path), None, RefusingJudge(store, delete))  # type: ignore[arg-type]
    update = RefUpdate(ZERO, "a" * 40, "refs/tags/v1")
    if delete:
        with pytest.raises(NotFound) as caught:
            await changes._judge(None, model(), update)  # type: ignore[arg-type]
        assert (caught.value.code, caught.value.message) == ("model_not_found", "model not found")
    else:  # the model still there: the refusal stands
        with pytest.raises(PushRefused):
            await changes._judge(None, model(), update)  # type: ignore[arg-type]
