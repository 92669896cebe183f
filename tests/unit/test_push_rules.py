"""The push rules and model card parsing, without git: each rule's Problem codes and messages."""

import pytest

from modelrepo.models.card import parse_card
from modelrepo.push.problems import STATUS, Code, Problem, PushRefused
from modelrepo.push.rules import (
    ZERO,
    LockHolder,
    NewBlob,
    RefUpdate,
    check_attributes,
    check_blobs,
    check_card,
    check_file_size,
    check_lfs_objects,
    check_locks,
    check_ref_updates,
    must_be_lfs,
)
from modelrepo.lfs.pointer import LfsPointer
from modelrepo.settings import DEFAULT_WEIGHT_PATTERNS

OID = "a" * 64
MiB = 1024 * 1024
URL = "http://models.example/api/v1/model-card.schema.json"


def test_weights_and_big_blobs_must_be_lfs():
    blobs = [
        NewBlob("1" * 40, "model.safetensors", 512 * MiB, None, "refs/heads/main"),
        NewBlob("2" * 40, "sub/dir/weights.bin", 10, None, "refs/heads/main"),
        NewBlob("3" * 40, "data.csv", 11 * MiB, None, "refs/heads/dev"),
        NewBlob("4" * 40, "README.md", 100, None, "refs/heads/main"),
        NewBlob("5" * 40, "ok.safetensors", 130, LfsPointer(OID, 5 * MiB), "refs/heads/main"),
        NewBlob("6" * 40, "empty.bin", 0, None, "refs/heads/main"),
        NewBlob("7" * 40, "model.safetensors", 512 * MiB, None, "refs/heads/other"),  # same path: once
    ]
    problems = check_blobs(blobs, max_plain_blob=10 * MiB, weight_patterns=DEFAULT_WEIGHT_PATTERNS)
    assert [(p.code, p.path, p.ref) for p in problems] == [
        (Code.LFS_REQUIRED, "model.safetensors", "refs/heads/main"),
        (Code.LFS_REQUIRED, "sub/dir/weights.bin", "refs/heads/main"),
        (Code.LFS_REQUIRED, "data.csv", "refs/heads/dev")]
    assert problems[0].message.startswith("model.safetensors (512 MiB) must be stored with Git LFS")
    assert problems[0].message.endswith(
        'Fix: git checkout main && git lfs migrate import --include="*.safetensors" && git push origin main')
    assert "--everything would rewrite" in problems[0].message and "--no-rewrite" in problems[0].message
    assert "(matches a weight pattern)" in problems[1].message
    assert "(is larger than 10 MiB)" in problems[2].message and problems[2].message.endswith("git push origin dev")
    tagged = check_blobs([NewBlob("8" * 40, "w.bin", 5, None, "refs/tags/v1")], max_plain_blob=MiB,
                         weight_patterns=("*.bin",))
    assert "Fix:" not in tagged[0].message and "tag v1" in tagged[0].message


def test_must_be_lfs_is_the_preupload_line():
    args = {"max_plain_blob": 1000, "weight_patterns": ("*.bin",)}
    assert must_be_lfs("a/b.bin", 1, **args) == "matches a weight pattern"
    assert must_be_lfs("a/b.bin", 0, **args) is None  # an empty file is never a weight
    assert must_be_lfs("x.txt", 1000, **args) is None
    assert must_be_lfs("x.txt", 1001, **args) == "is larger than 1000 B"


def test_gitattributes_coverage_problems():
    attrs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\nweights/** filter=lfs diff=lfs merge=lfs -text\n"
    assert check_attributes("refs/heads/main", ["a/b/model.safetensors", "weights/x/y.bin"], attrs) == []
    problems = check_attributes("refs/heads/main", ["model.bin"], attrs)
    assert problems == [Problem(
        Code.GITATTRIBUTES, "main: .gitattributes does not give model.bin 'filter=lfs diff=lfs merge=lfs -text'. "
        'Fix: git lfs untrack "*.bin" && git lfs track "*.bin" && git add .gitattributes && '
        'git commit -m "Track *.bin with Git LFS" && git push origin main', path="model.bin", ref="refs/heads/main")]
    assert check_attributes("refs/heads/main", ["m.bin"], b"*.bin filter=lfs\n")[0].code == Code.GITATTRIBUTES
    missing = check_attributes("refs/tags/v1", ["m.bin"], None)
    assert missing[0].code == Code.GITATTRIBUTES
    assert missing[0].message.startswith("v1: 1 LFS/weight file(s) (e.g. m.bin) but no .gitattributes")
    assert check_attributes("refs/heads/main", [], None) == []
    many = check_attributes("refs/heads/main", [f"{i}.bin" for i in range(30)], b"")
    assert len(many) == 21 and many[-1].message.endswith("and more files without LFS attributes")


def _u(ref, old="1" * 40, new="2" * 40):
    return RefUpdate(old, new, ref)


@pytest.mark.parametrize("update, admin, deployed, nonff, allow_ff, code, fragment", [
    (_u("refs/tags/v1"), False, {}, set(), False, Code.IMMUTABLE_TAG, "only a namespace admin can move"),
    (_u("refs/tags/v1", new=ZERO), False, {}, set(), False, Code.IMMUTABLE_TAG, "only a namespace admin can delete"),
    (_u("refs/tags/v1"), True, {}, set(), False, None, None),
    (_u("refs/tags/v1", old=ZERO), False, {}, set(), False, None, None),
    (_u("refs/tags/v1", new=ZERO), True, {"refs/tags/v1": "prod"}, set(), False, Code.DEPLOYED_REF,
     "deployment 'prod' uses it"),
    (_u("refs/heads/main"), False, {}, {"refs/heads/main"}, False, Code.NON_FAST_FORWARD,
     "Fix: git pull --rebase origin main && git push origin main"),
    (_u("refs/heads/main"), False, {}, {"refs/heads/main"}, True, None, None),
    (_u("refs/heads/dev"), False, {}, {"refs/heads/dev"}, False, None, None),
    (_u("refs/heads/main", new=ZERO), True, {}, set(), False, Code.DEFAULT_BRANCH, "cannot delete the default branch"),
    (_u("refs/notes/commits"), True, {}, set(), False, Code.REF_NAMESPACE, "only branches"),
])
def test_ref_rules(update, admin, deployed, nonff, allow_ff, code, fragment):
    problems = check_ref_updates([update], namespace_admin=admin, default_branch="main", allow_force_push=allow_ff,
                                 deployed=deployed, non_fast_forward=nonff)
    if code is None:
        assert problems == []
    else:
        assert [p.code for p in problems] == [code] and fragment in problems[0].message, problems
        assert problems[0].ref == update.ref


def test_ref_pointing_at_a_blob():
    problems = check_ref_updates([_u("refs/tags/w", old=ZERO)], namespace_admin=True, default_branch="main",
                                 allow_force_push=False, deployed={}, non_fast_forward=set(),
                                 non_commit=frozenset({"refs/tags/w"}))
    assert [p.code for p in problems] == [Code.NOT_A_COMMIT]


def test_lfs_objects_must_be_uploaded_here():
    pointers = {"a.bin": LfsPointer(OID, 10), "b.bin": LfsPointer("b" * 64, 20)}
    problems = check_lfs_objects(pointers, {OID: 10}, "main")
    assert problems == [Problem(Code.LFS_MISSING, f"b.bin: its Git LFS object {'b' * 12}… (20 B) was never uploaded "
                                "to this repository. Fix: git lfs push --all origin main && git push origin main",
                                path="b.bin")]
    wrong = check_lfs_objects({"a.bin": LfsPointer(OID, 10)}, {OID: 11}, "main")
    assert wrong[0].code == Code.LFS_SIZE and "pointer says 10 bytes" in wrong[0].message


def test_card_problems_point_to_the_served_schema():
    bad = parse_card(b"---\ntags: nlp\n---\n")
    problems = check_card("refs/tags/v2", bad, URL)
    assert [(p.code, p.ref, p.path) for p in problems] == [(Code.MODEL_CARD, "refs/tags/v2", "README.md")]
    assert problems[0].message.startswith("v2: README.md: metadata field tags") and URL in problems[0].message
    assert "config/" not in problems[0].message
    assert check_card("refs/heads/main", parse_card(b"---\nlicense: mit\n---\n"), URL) == []


def test_file_size_and_locks():
    assert check_file_size("refs/heads/main", "README.md", 10, 10) == []
    big = check_file_size("refs/heads/main", "README.md", 64 * MiB, MiB)
    assert big[0].code == Code.FILE_TOO_LARGE and big[0].message == "main: README.md is 64 MiB; the limit is 1 MiB"
    locks = {"w/model.bin": LockHolder("bob", "7"), "other.bin": LockHolder("bob", "8")}
    problems = check_locks({"w/model.bin": "refs/heads/main", "free.bin": "refs/heads/main"}, locks)
    assert [(p.code, p.path, p.ref) for p in problems] == [(Code.LOCKED_PATH, "w/model.bin", "refs/heads/main")]
    assert "locked by bob (lock 7)" in problems[0].message and "--force --id 7" in problems[0].message


def test_every_code_has_a_status_and_refusals_take_it_from_the_first_problem():
    assert set(STATUS) == set(Code)
    refused = PushRefused([Problem(Code.DEPLOYED_REF, "v1: in use"), Problem(Code.MODEL_CARD, "bad card")], "no: ")
    assert refused.status == 409 and refused.code == "deployed_ref"
    assert refused.message == "no: v1: in use [deployed_ref] | bad card [model_card]"
    assert refused.headers == {"X-Modelrepo-Problems": "deployed_ref,model_card"}


def test_model_card():
    card = parse_card(b"---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-classification\n"
                      b"tags: [nlp, bert]\ninference:\n  runtime: vllm\n  resources: {gpu: 1, memory: 16Gi}\n---\n"
                      b"# BERT\n\n![badge](x.svg)\n\nA small BERT\nfor tests.\n\nMore text.\n")
    assert card.valid and card.metadata["library_name"] == "transformers"
    assert card.summary == "A small BERT for tests."
    assert parse_card(None).valid and parse_card(b"no front matter\n").summary == "no front matter"

    bad = parse_card(b"---\nlicense: [mit]\ntags: nlp\ninference:\n  resources:\n    gpu: -1\n---\n")
    assert bad.errors == (
        "README.md: metadata field inference.resources.gpu: -1 is less than the minimum of 0",
        "README.md: metadata field license: ['mit'] is not of type 'string'",
        "README.md: metadata field tags: 'nlp' is not of type 'array'",
    )
    broken = parse_card(b"---\nlicense: mit\n  oops: [\n---\n")
    assert len(broken.errors) == 1 and "not valid YAML (line" in broken.errors[0]
    assert parse_card(b"---\n- a\n- b\n---\n").errors == ("README.md: front matter must be a YAML mapping (key: value)",)
