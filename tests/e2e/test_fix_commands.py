"""Every ``Fix:`` the server prints, run literally (bash, in a real clone left in the state that
triggered it), must make the push go through. A fix that works only after some unsaid step
(a clean tree, a remote named differently, an editor for the commit message) fails here."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from modelrepo.push import rules

from ..helpers import Git, start_daemon

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
KiB = 1024
NS = "fix"
CARD = "---\nlicense: mit\n---\n# Fixes\n"
FIX = re.compile(r"^remote:\s+- .*?Fix: (.*?) \[([a-z_]+)\]\s*$", re.M)


@pytest.fixture(scope="module")
def fd(tmp_path_factory):
    d = start_daemon()
    d.ok("POST", "/api/v1/namespaces", body={"name": NS})
    d.user("wes", scope="write")
    d.ok("PUT", f"/api/v1/namespaces/{NS}/members/wes", body={"role": "writer"})
    yield d
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


@pytest.fixture
def world(fd, git, tmp_path, request):
    """A model with a README and one LFS weight, and a fresh clone of it by a writer."""
    name = request.node.name.split("[")[0].removeprefix("test_").replace("_", "-")[:60]
    fd.ok("POST", "/api/v1/models", body={"namespace": NS, "name": name})
    url = fd.git_url(f"{NS}/{name}.git", "wes")
    seed = git.new_repo(tmp_path / "seed")
    git.run("lfs", "track", "*.bin", cwd=seed)
    git.commit(seed, {"README.md": CARD, "weights/model.bin": os.urandom(4 * KiB)}, "seed")
    git.run("push", "-q", url, "main", cwd=seed)
    work = tmp_path / "clone"
    git.run("clone", "-q", url, str(work))
    return fd, git, work, f"{NS}/{name}"


def refused_fixes(git: Git, proc, code: str) -> list[str]:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and "pre-receive hook declined" in err, err
    found = FIX.findall(err)
    assert found and {c for _, c in found} == {code}, err
    return list(dict.fromkeys(cmd for cmd, _ in found))


def run_literally(git: Git, work: Path, command: str) -> None:
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=git.env, capture_output=True, timeout=300)
    assert proc.returncode == 0, (f"the printed fix failed: {command}\n{proc.stdout.decode(errors='replace')}\n"
                                  f"{proc.stderr.decode(errors='replace')}")


def assert_pushed(d, git: Git, work: Path, repo: str) -> None:
    """The fix pushed: the server's main is our HEAD, and pushing again has nothing to do."""
    head = git.out("rev-parse", "HEAD", cwd=work)
    branches = {b["name"]: b["commit"] for b in d.ok("GET", f"/api/v1/models/{repo}/refs", token="wes")["branches"]}
    assert branches["main"] == head
    assert git.run("push", "origin", "main", cwd=work).returncode == 0


def test_weights_committed_without_lfs(world):
    d, git, work, repo = world
    (work / "model.safetensors").write_bytes(os.urandom(3 * KiB))
    git.run("add", "model.safetensors", cwd=work)
    git.run("commit", "-q", "-m", "weights, plainly", cwd=work)
    git.commit(work, {"notes.txt": "a later commit\n"}, "notes")
    fixes = refused_fixes(git, git.run("push", "origin", "main", cwd=work, check=False), "lfs_required")
    assert fixes == ['git checkout main && git lfs migrate import --include="*.safetensors" && git push origin main']
    for fix in fixes:
        run_literally(git, work, fix)
    assert_pushed(d, git, work, repo)
    files = {f["path"]: f for f in d.ok("GET", f"/api/v1/models/{repo}", token="wes")["files"]}
    assert files["model.safetensors"].get("lfs_oid") and files["model.safetensors"]["size"] == 3 * KiB


def test_gitattributes_line_incomplete(world):
    d, git, work, repo = world
    (work / ".gitattributes").write_text("*.bin filter=lfs\n")  # hand-edited: diff, merge, -text lost
    git.commit(work, {"weights/new.bin": os.urandom(5 * KiB)}, "new weights")
    fixes = refused_fixes(git, git.run("push", "origin", "main", cwd=work, check=False), "gitattributes")
    assert len(fixes) == 1 and fixes[0].endswith("git push origin main"), fixes
    run_literally(git, work, fixes[0])
    assert_pushed(d, git, work, repo)


def test_gitattributes_deleted(world):
    d, git, work, repo = world
    git.commit(work, {"weights/second.bin": os.urandom(5 * KiB)}, "second weight")
    git.run("rm", "-q", ".gitattributes", cwd=work)
    git.run("commit", "-q", "-m", "drop attributes", cwd=work)
    fixes = refused_fixes(git, git.run("push", "origin", "main", cwd=work, check=False), "gitattributes")
    assert len(fixes) == 1, fixes
    run_literally(git, work, fixes[0])
    assert_pushed(d, git, work, repo)


def test_lfs_objects_not_uploaded(world):
    d, git, work, repo = world
    git.commit(work, {"weights/other.bin": os.urandom(6 * KiB)}, "skip the upload")
    proc = git.run("push", "origin", "main", cwd=work, check=False, env={"GIT_LFS_SKIP_PUSH": "1"})
    fixes = refused_fixes(git, proc, "lfs_missing")
    assert fixes == ["git lfs push --all origin main && git push origin main"]
    run_literally(git, work, fixes[0])
    assert_pushed(d, git, work, repo)


def test_forced_push_over_someone_elses_commit(world, tmp_path):
    d, git, work, repo = world
    other = tmp_path / "other"
    git.run("clone", "-q", d.git_url(f"{repo}.git", "wes"), str(other))
    git.commit(other, {"theirs.txt": "pushed first\n"}, "theirs")
    git.run("push", "-q", "origin", "main", cwd=other)
    git.commit(work, {"mine.txt": "pushed second\n"}, "mine")
    fixes = refused_fixes(git, git.run("push", "--force", "origin", "main", cwd=work, check=False),
                          "non_fast_forward")
    assert fixes == ["git pull --rebase origin main && git push origin main"]
    run_literally(git, work, fixes[0])
    assert_pushed(d, git, work, repo)
    assert (work / "theirs.txt").exists() and (work / "mine.txt").exists()


def test_every_fix_the_rules_can_print_is_covered():
    """If a rule learns a new ``Fix:``, it needs a test above: the rules' source names them all."""
    source = Path(rules.__file__).read_text()
    fixes = re.findall(r"Fix: (git (?:lfs )?[a-z]+)", source)
    assert sorted(fixes) == ["git checkout", "git lfs push", "git lfs untrack", "git pull"], fixes
