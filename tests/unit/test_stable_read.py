"""repos.stable_read: a read of a repository that a delete (by any process) removed, or a delete and a
create replaced, under it is the missing model's 404; a read that failed for its own reasons keeps
its own error. Real bare repositories made by RepoStore, real renames, as Models.delete does them."""

import pytest

from modelrepo.errors import InvalidInput, NotFound
from modelrepo.git import reads, repos


@pytest.fixture
def store(tmp_path):
    return repos.RepoStore(tmp_path / "repos")


def _is_missing_model(exc: NotFound) -> bool:
    return (exc.code, exc.message) == ("model_not_found", "model not found")


def test_a_repository_already_gone_is_the_missing_model(store):
    path = store.create("acme", "m", "main")
    store.trash("acme", "m")
    with pytest.raises(NotFound) as caught:
        repos.stable_read(path, repos.list_refs)
    assert _is_missing_model(caught.value)


def test_a_repository_renamed_away_during_the_read_is_the_missing_model(store):
    path = store.create("acme", "m", "main")

    def read(p):
        store.trash("acme", "m")
        return reads.resolve(p, "main")  # libgit2 finds nothing: None, which would be "no such revision"

    with pytest.raises(NotFound) as caught:
        repos.stable_read(path, read)
    assert _is_missing_model(caught.value)


def test_a_repository_replaced_during_a_successful_read_is_the_missing_model(store):
    """Deleted and created again under the read: what it read may be either model's."""
    path = store.create("acme", "m", "main")

    def read(p):
        refs = repos.list_refs(p)
        store.trash("acme", "m")
        store.create("acme", "m", "main")
        return refs

    with pytest.raises(NotFound) as caught:
        repos.stable_read(path, read)
    assert _is_missing_model(caught.value)


def test_a_read_failing_on_a_repository_still_there_keeps_its_own_error(store):
    path = store.create("acme", "m", "main")
    with pytest.raises(InvalidInput):
        repos.stable_read(path, lambda p: repos.create_branch(p, "x", "-bad"))
    assert repos.stable_read(path, reads.resolve, "main") is None  # an empty repository: no error at all


def test_a_directory_no_model_owns_is_moved_aside_by_a_create(store):
    """A write that raced a delete once left a directory at the deleted model's path; creating the
    model again must not be refused forever ("repository directory already exists")."""
    path = store.create("acme", "m", "main")
    (path / "refs" / "heads" / "stray").write_text("0" * 40 + "\n")
    store.trash("acme", "m")
    (path / "refs" / "heads").mkdir(parents=True)  # what the racing write left behind
    (path / "refs" / "heads" / "stray").write_text("0" * 40 + "\n")
    again = store.create("acme", "m", "main")
    assert repos.list_refs(again)["branches"] == []
    aside = [p for p in path.parent.iterdir() if p.name.startswith(".orphaned.m.git.")]
    assert len(aside) == 1 and (aside[0] / "refs" / "heads" / "stray").exists()
