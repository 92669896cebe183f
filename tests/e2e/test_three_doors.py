"""One judge, three doors. For every push rule, under a configuration where nothing is default
(a model card schema that allows only ``license: mit``, a 2 MiB plain-blob limit, ``*.npz`` as the
only weight pattern, ``license`` as the field a deployment needs, a deployed tag, a non-admin
writer, an LFS lock), the same change is tried through

- git: a real ``git push`` from a real clone (pre-receive),
- rest: ``POST/DELETE /api/v1/models/{ns}/{name}/tags`` and ``…/branches``,
- hub: the unmodified ``huggingface_hub.HfApi`` (``upload_file``, ``create_commit``, ``delete_tag``,
  ``delete_branch``), in its own process; "hub-raw" is the same client with its own early checks
  (preupload, validate-yaml) bypassed, so the commit itself meets the judge,

and every door must give the same verdict with the same problem codes. A door a rule cannot
apply to (a REST tag adds no files) is left out of that rule's row, and the row says so.
"""

import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from modelrepo.push.problems import STATUS, Code

from ..helpers import Git, http, short_tmpdir, start_daemon
from .test_hub import hf

pytest.importorskip("huggingface_hub")
pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
KiB, MiB = 1024, 1024 * 1024
NS = "doors"
SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
          "properties": {"license": {"const": "mit"}}}
GOOD = "---\nlicense: mit\n---\n# Doors\n\nJudged the same way through every door.\n"
# Outside the bundled schema (tags must be a list there), inside the custom one: accepted here.
ODD_BUT_GOOD = "---\nlicense: mit\ntags: nlp\n---\n# Doors\n"
BAD = "---\nlicense: apache-2.0\n---\n# Doors\n"
LFS = "application/vnd.git-lfs+json"
ACCEPTED: frozenset[str] = frozenset()

HUB = """
api = HfApi()

def attempt(fn):
    try:
        fn()
        return {"ok": True}
    except HfHubHTTPError as e:
        return {"ok": False, "status": e.response.status_code,
                "problems": e.response.headers.get("X-Modelrepo-Problems", ""), "message": str(e)[-1500:]}
    except ValueError as e:  # the client's own early check (validate-yaml) refused
        return {"ok": False, "status": None, "problems": "", "message": str(e)}

def raw(path, data):
    '''A client that skips preupload: the file goes as a regular blob whatever the server said.'''
    op = CommitOperationAdd(path, data)
    op._upload_mode, op._should_ignore, op._remote_oid = "regular", False, None
    return op

def skip_checks():
    api._validate_yaml = lambda *a, **k: None
"""


def codes_in(text: str) -> set[str]:
    return set(re.findall(r"\[([a-z_]+)\](?=\s*(?:\||$|\n))", text, re.M))


def git_verdict(proc) -> frozenset[str]:
    err = proc.stderr.decode(errors="replace")
    if proc.returncode == 0:
        return ACCEPTED
    assert "pre-receive hook declined" in err, err
    lines = [line for line in err.splitlines() if line.startswith("remote:   - ")]
    codes = {c for line in lines for c in codes_in(line)}
    assert len(codes) >= 1 and len(lines) >= 1, err
    return frozenset(codes)


def rest_verdict(r) -> frozenset[str]:
    if 200 <= r.status < 300:
        return ACCEPTED
    error = r.json()["error"]
    codes = set(r.headers.get("X-Modelrepo-Problems", "").split(","))
    assert error["code"] in codes and r.status == STATUS[error["code"]], (r.status, r.body)
    assert codes == codes_in(error["message"]), error
    return frozenset(codes)


def hub_verdict(out: dict) -> frozenset[str]:
    if out["ok"]:
        return ACCEPTED
    if out["status"] is None:  # refused by the client's validate-yaml call: the codes are in the text
        codes = codes_in(out["message"])
        assert codes, out
        return frozenset(codes)
    listed = out["problems"].split(",")
    assert out["status"] == STATUS[listed[0]], out
    # The client words some statuses itself (403: "make sure your token has the correct
    # permissions"); where the server's text shows, it names the same codes.
    assert codes_in(out["message"]) <= set(listed), out
    return frozenset(listed)


class Doors:
    """The daemon, its users, and one helper per door."""

    def __init__(self, d, tmp: Path) -> None:
        self.d, self.tmp = d, tmp
        self.git = Git(tmp / "home")
        self.n = 0

    def fresh(self, name: str) -> str:
        """A model seeded by the namespace admin: a valid card, an LFS weight, tag v1."""
        d, git = self.d, self.git
        d.ok("POST", "/api/v1/models", body={"namespace": NS, "name": name}, token="ada")
        work = git.new_repo(self.tmp / f"seed-{name}")
        git.run("lfs", "track", "*.bin", cwd=work)
        git.commit(work, {"README.md": GOOD, "weights/model.bin": os.urandom(4 * KiB)}, "seed")
        git.run("tag", "-a", "v1", "-m", "v1", cwd=work)
        git.run("push", "-q", d.git_url(f"{NS}/{name}.git", "ada"), "main", "v1", cwd=work)
        return f"{NS}/{name}"

    def clone(self, repo: str, who: str) -> Path:
        self.n += 1
        work = self.tmp / f"c{self.n}"
        self.git.run("clone", "-q", self.d.git_url(f"{repo}.git", who), str(work))
        return work

    def push(self, work: Path, *refspecs: str, env: dict | None = None, config: tuple[str, ...] = ()):
        args = [a for c in config for a in ("-c", c)]
        return self.git.run(*args, "push", "origin", *refspecs, cwd=work, check=False, env=env)

    def locked_change(self, repo: str) -> Path:
        """bob locks the seed's weight; wes's clone changes it in a commit (not pushed yet)."""
        r = http("POST", f"{self.d.url}/{repo}.git/info/lfs/locks", token=self.d.tokens["bob"],
                 raw=json.dumps({"path": "weights/model.bin"}).encode(), headers={"Content-Type": LFS, "Accept": LFS})
        assert r.status == 201, r.body
        work = self.clone(repo, "wes")
        self.git.commit(work, {"weights/model.bin": os.urandom(4 * KiB)}, "retrain")
        return work

    def lfs_file_commit(self, repo: str, path: str, oid: str, size: int) -> frozenset[str]:
        """A Hub commit naming an LFS object it never uploaded (HfApi always uploads first)."""
        lines = [{"key": "header", "value": {"summary": "s"}},
                 {"key": "lfsFile", "value": {"path": path, "algo": "sha256", "oid": oid, "size": size}}]
        r = http("POST", f"{self.d.url}/api/models/{repo}/commit/main", token=self.d.tokens["wes"],
                 headers={"Content-Type": "application/x-ndjson"},
                 raw="".join(json.dumps(line) + "\n" for line in lines).encode())
        return hub_verdict({"ok": r.status < 300, "status": r.status, "message": r.json().get("error", ""),
                            "problems": r.headers.get("X-Modelrepo-Problems", "")})

    def rest(self, method: str, repo: str, path: str, who: str, body=None):
        return self.d.api(method, f"/api/v1/models/{repo}{path}", token=who, body=body)

    def hub(self, who: str, code: str) -> dict:
        return hf(self.d, self.d.tokens[who], HUB + textwrap.dedent(code), self.tmp)


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("doors")
    schema = short_tmpdir() / "card.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    d = start_daemon(extra_env={
        "MODELREPO_PUSH__MAX_PLAIN_BLOB": str(2 * MiB),
        "MODELREPO_PUSH__WEIGHT_PATTERNS": '["*.npz"]',
        "MODELREPO_PUSH__MODEL_CARD_SCHEMA": str(schema),
        "MODELREPO_DEPLOY__REQUIRED_FIELDS": '["license"]',
    })
    d.ok("POST", "/api/v1/namespaces", body={"name": NS})
    for user, role, scope in (("ada", "admin", "admin"), ("wes", "writer", "write"), ("bob", "writer", "write")):
        d.user(user, scope=scope)
        d.ok("PUT", f"/api/v1/namespaces/{NS}/members/{user}", body={"role": role})
    yield Doors(d, tmp)
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)
    shutil.rmtree(schema.parent, ignore_errors=True)


# -- one function per rule: returns {door: verdict} ----------------------------------------------

def card_outside_schema(x: Doors) -> dict:
    repo = x.fresh("card-bad")
    work = x.clone(repo, "wes")
    x.git.commit(work, {"README.md": BAD}, "apache card")
    out = {"git": git_verdict(x.push(work, "main"))}
    # A side branch is not card-checked; a release tag of it is, whichever door makes it.
    assert git_verdict(x.push(work, "main:exp")) == ACCEPTED
    out["rest"] = rest_verdict(x.rest("POST", repo, "/tags", "wes", {"name": "v2", "revision": "exp", "message": "m"}))
    out["rest-branch"] = rest_verdict(x.rest("PATCH", repo, "", "ada", {"default_branch": "exp"}))
    out["hub"] = hub_verdict(x.hub("wes", f"""
        print(json.dumps(attempt(lambda: api.upload_file(path_or_fileobj={BAD.encode()!r}, path_in_repo="README.md",
                                                         repo_id={repo!r}))))"""))
    out["hub-raw"] = hub_verdict(x.hub("wes", f"""
        skip_checks()
        print(json.dumps(attempt(lambda: api.create_commit({repo!r}, [raw("README.md", {BAD.encode()!r})],
                                                           commit_message="apache card"))))"""))
    return out


def card_inside_custom_schema(x: Doors) -> dict:
    repo = x.fresh("card-odd")
    work = x.clone(repo, "wes")
    x.git.commit(work, {"README.md": ODD_BUT_GOOD}, "odd card")
    out = {"git": git_verdict(x.push(work, "main"))}
    out["rest"] = rest_verdict(x.rest("POST", repo, "/tags", "wes", {"name": "v2", "revision": "main", "message": "m"}))
    out["hub"] = hub_verdict(x.hub("wes", f"""
        print(json.dumps(attempt(lambda: api.upload_file(path_or_fileobj={(ODD_BUT_GOOD + "more").encode()!r},
                                                         path_in_repo="README.md", repo_id={repo!r}))))"""))
    return out


def readme_too_large(x: Doors) -> dict:
    repo = x.fresh("readme-big")
    big = GOOD + "x" * (MiB + KiB)  # over the 1 MiB card limit, under the 2 MiB plain-blob limit
    work = x.clone(repo, "wes")
    x.git.commit(work, {"README.md": big}, "big readme")
    out = {"git": git_verdict(x.push(work, "main"))}
    assert git_verdict(x.push(work, "main:exp")) == ACCEPTED
    out["rest"] = rest_verdict(x.rest("POST", repo, "/tags", "wes", {"name": "v2", "revision": "exp", "message": "m"}))
    (x.tmp / "big-readme.md").write_text(big)
    out["hub-raw"] = hub_verdict(x.hub("wes", f"""
        skip_checks()
        print(json.dumps(attempt(lambda: api.upload_file(path_or_fileobj={str(x.tmp / "big-readme.md")!r},
                                                         path_in_repo="README.md", repo_id={repo!r}))))"""))
    return out


def weight_pattern_outside_lfs(x: Doors) -> dict:
    repo = x.fresh("npz")
    work = x.clone(repo, "wes")
    x.git.commit(work, {"arrays.npz": b"\x93NUMPY" + os.urandom(100)}, "plain npz")
    out = {"git": git_verdict(x.push(work, "main"))}
    out["hub-raw"] = hub_verdict(x.hub("wes", f"""
        print(json.dumps(attempt(lambda: api.create_commit({repo!r}, [raw("arrays.npz", b"x" * 100)],
                                                           commit_message="plain npz"))))"""))
    # The unmodified client asks preupload first, which draws the same line: the file goes to LFS.
    hub = x.hub("wes", f"""
        api.upload_file(path_or_fileobj=b"x" * 100, path_in_repo="arrays.npz", repo_id={repo!r})
        s = api.model_info({repo!r}, files_metadata=True).siblings
        print(json.dumps({{"lfs": [f.rfilename for f in s if f.lfs]}}))""")
    assert "arrays.npz" in hub["lfs"], hub
    return out


def default_weight_pattern_is_not_one_here(x: Doors) -> dict:
    """*.safetensors is a weight by default, not under this configuration: plain git is fine."""
    repo = x.fresh("st")
    work = x.clone(repo, "wes")
    x.git.commit(work, {"small.safetensors": os.urandom(300 * KiB)}, "plain safetensors")
    out = {"git": git_verdict(x.push(work, "main"))}
    out["hub-raw"] = hub_verdict(x.hub("wes", f"""
        print(json.dumps(attempt(lambda: api.create_commit({repo!r}, [raw("b.safetensors", b"x" * 1000)],
                                                           commit_message="plain"))))"""))
    r = http("POST", f"{x.d.url}/api/models/{repo}/preupload/main", token=x.d.tokens["wes"],
             body={"files": [{"path": "c.safetensors", "size": 1000}, {"path": "d.npz", "size": 1000},
                             {"path": "e.txt", "size": 2 * MiB + 1}]})
    assert [f["uploadMode"] for f in r.json()["files"]] == ["regular", "lfs", "lfs"], r.body
    return out


def big_plain_file(x: Doors) -> dict:
    repo = x.fresh("big")
    work = x.clone(repo, "wes")
    x.git.commit(work, {"data.txt": os.urandom(2 * MiB + 1)}, "big text")
    return {"git": git_verdict(x.push(work, "main"))}  # hub: preupload says lfs (see above)


def delete_everywhere(x: Doors, repo: str, who: str, ref: str) -> dict:
    """Delete one ref through each door (each attempt must be refused, so the next one still finds it)."""
    kind, name = ("tag", ref.removeprefix("refs/tags/")) if ref.startswith("refs/tags/") else \
        ("branch", ref.removeprefix("refs/heads/"))
    work = x.clone(repo, who)
    return {"git": git_verdict(x.push(work, f":{ref}")),
            "rest": rest_verdict(x.rest("DELETE", repo, f"/{kind}es/{name}" if kind == "branch" else f"/tags/{name}",
                                        who)),
            "hub": hub_verdict(x.hub(who, f"print(json.dumps(attempt(lambda: api.delete_{kind}({repo!r}, "
                                          f"{kind}={name!r}))))"))}


def deployed_tag(x: Doors) -> dict:
    repo = x.fresh("deployed")
    x.d.ok("POST", f"/api/v1/models/{repo}/deployments", token="ada", body={"name": "prod", "revision": "v1"})
    return delete_everywhere(x, repo, "ada", "refs/tags/v1")


def immutable_tag(x: Doors) -> dict:
    return delete_everywhere(x, x.fresh("immutable"), "wes", "refs/tags/v1")


def default_branch_delete(x: Doors) -> dict:
    return delete_everywhere(x, x.fresh("keep-main"), "ada", "refs/heads/main")


def locked_path(x: Doors) -> dict:
    repo = x.fresh("locked")
    work = x.locked_change(repo)
    # git-lfs would check locks itself if told to; switched off here so the server's check is what
    # refuses (it must hold for any client).
    lfs_url = x.d.url + f"/{repo}.git/info/lfs"
    out = {"git": git_verdict(x.push(work, "main", config=(f"lfs.{lfs_url}.locksverify=false",)))}
    out["hub"] = hub_verdict(x.hub("wes", f"""
        print(json.dumps(attempt(lambda: api.upload_file(path_or_fileobj=b"new weights" * 500,
                                                         path_in_repo="weights/model.bin", repo_id={repo!r}))))"""))
    # The lock's owner may change it.
    bob = x.clone(repo, "bob")
    x.git.commit(bob, {"weights/model.bin": os.urandom(4 * KiB)}, "owner's change")
    assert git_verdict(x.push(bob, "main")) == ACCEPTED
    return out


def lfs_object_missing(x: Doors) -> dict:
    repo = x.fresh("missing")
    work = x.clone(repo, "wes")
    x.git.commit(work, {"weights/other.bin": os.urandom(5 * KiB)}, "skip upload")
    out = {"git": git_verdict(x.push(work, "main", env={"GIT_LFS_SKIP_PUSH": "1"}))}
    out["hub-raw"] = x.lfs_file_commit(repo, "weights/x.bin", "c" * 64, 5)
    return out


def lfs_size_mismatch(x: Doors) -> dict:
    """A pointer to an object the repository holds, claiming another size."""
    repo = x.fresh("size")
    work = x.clone(repo, "wes")
    pointer = x.git.run("show", "HEAD:weights/model.bin", cwd=work).stdout
    oid = re.search(rb"oid sha256:([0-9a-f]{64})", pointer).group(1).decode()
    wrong = pointer.replace(b"size 4096", b"size 4097")
    assert wrong != pointer
    x.git.commit(work, {"weights/wrong.bin": wrong}, "wrong size")  # git-lfs keeps pointer text as it is
    out = {"git": git_verdict(x.push(work, "main", env={"GIT_LFS_SKIP_PUSH": "1"}))}
    out["hub-raw"] = x.lfs_file_commit(repo, "weights/wrong.bin", oid, 4097)
    return out


def foreign_ref(x: Doors) -> dict:
    work = x.clone(x.fresh("notes"), "ada")
    return {"git": git_verdict(x.push(work, "HEAD:refs/notes/mine"))}  # no API door names such a ref


def tag_of_a_blob(x: Doors) -> dict:
    work = x.clone(x.fresh("blobtag"), "ada")
    blob = x.git.out("rev-parse", "HEAD:README.md", cwd=work)
    x.git.run("tag", "readme", blob, cwd=work)
    return {"git": git_verdict(x.push(work, "refs/tags/readme"))}  # the API resolves revisions to commits


def gitattributes_incomplete(x: Doors) -> dict:
    """A new LFS file under a hand-edited .gitattributes that lost diff, merge and -text."""
    repo = x.fresh("attrs")
    work = x.clone(repo, "wes")
    (work / ".gitattributes").write_text("*.bin filter=lfs\n")
    x.git.commit(work, {"weights/new.bin": os.urandom(5 * KiB)}, "new weights, broken attributes")
    pointer = x.git.run("show", "HEAD:weights/new.bin", cwd=work).stdout
    assert pointer.startswith(b"version https://git-lfs.github.com/spec/v1"), pointer
    # git-lfs uploads the object before git sends the commits; only the ref update is refused.
    out = {"git": git_verdict(x.push(work, "main"))}
    out["hub-raw"] = hub_verdict(x.hub("wes", f"""
        print(json.dumps(attempt(lambda: api.create_commit({repo!r}, [
            raw(".gitattributes", b"*.bin filter=lfs\\n"), raw("weights/new.bin", {pointer!r})],
            commit_message="pointer"))))"""))
    return out


def non_fast_forward(x: Doors) -> dict:
    repo = x.fresh("linear")
    work = x.clone(repo, "wes")
    x.git.run("commit", "-q", "--amend", "-m", "history rewritten", cwd=work)
    return {"git": git_verdict(x.push(work, "+main"))}  # no REST or Hub operation moves a branch backwards


CASES = [
    (card_outside_schema, {"model_card"}),
    (card_inside_custom_schema, set()),
    (readme_too_large, {"file_too_large"}),
    (weight_pattern_outside_lfs, {"lfs_required"}),
    (default_weight_pattern_is_not_one_here, set()),
    (big_plain_file, {"lfs_required"}),
    (deployed_tag, {"deployed_ref"}),
    (immutable_tag, {"immutable_tag"}),
    (default_branch_delete, {"default_branch"}),
    (locked_path, {"locked_path"}),
    (lfs_object_missing, {"lfs_missing"}),
    (gitattributes_incomplete, {"gitattributes"}),
    (non_fast_forward, {"non_fast_forward"}),
    (lfs_size_mismatch, {"lfs_size"}),
    (foreign_ref, {"ref_namespace"}),
    (tag_of_a_blob, {"not_a_commit"}),
]


@pytest.mark.parametrize("case, expected", CASES, ids=[c.__name__ for c, _ in CASES])
def test_same_verdict_through_every_door(doors, case, expected):
    verdicts = case(doors)
    assert verdicts and "git" in verdicts
    assert verdicts == {door: frozenset(expected) for door in verdicts}, verdicts


def test_lfsconfig_makes_every_clone_verify_locks(doors):
    """The server enforces locks whatever the client does (above). A repository that commits
    `.lfsconfig` with `locksverify = true` makes git-lfs check them too, before uploading, with no
    per-user configuration; without it, git-lfs only warns and the server refuses."""
    x = doors
    repo = x.fresh("lfsconfig")
    work = x.locked_change(repo)
    unset = x.push(work, "main")
    assert git_verdict(unset) == {"locked_path"}
    assert "would have halted this push" in unset.stderr.decode()  # git-lfs's own warning
    x.git.commit(work, {".lfsconfig": "[lfs]\n\tlocksverify = true\n"}, "verify locks")
    verified = x.push(work, "main")
    err = verified.stderr.decode()
    assert verified.returncode != 0 and "Cannot update locked files." in err and "pre-receive" not in err, err


def test_every_rule_has_a_row():
    """A new rule (a new code) is not done until it is driven through the doors above."""
    assert {code for _, expected in CASES for code in expected} == {str(c) for c in Code}
