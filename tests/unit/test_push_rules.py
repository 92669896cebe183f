"""The push rules and model card parsing, without git."""

import pytest

from modelrepo.models.card import parse_card
from modelrepo.push.rules import (
    ZERO,
    LfsPointer,
    NewBlob,
    RefUpdate,
    check_attributes,
    check_blobs,
    check_card,
    check_lfs_objects,
    check_ref_updates,
    lfs_attributes,
    parse_pointer,
)
from modelrepo.settings import DEFAULT_WEIGHT_PATTERNS

OID = "a" * 64
POINTER = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n".encode()
MiB = 1024 * 1024


def test_parse_pointer():
    assert parse_pointer(POINTER) == LfsPointer(OID, 12345)
    with_ext = POINTER.replace(b"oid", b"ext-0-foo sha256:" + b"b" * 64 + b"\noid")
    assert parse_pointer(with_ext) == LfsPointer(OID, 12345)
    for bad in (b"", b"hello", POINTER.replace(b"size 12345", b"size -1"), POINTER.upper(),
                POINTER.replace(b"sha256:", b"sha1:"), POINTER + b"x" * 2000, POINTER[:-1]):
        assert parse_pointer(bad) is None, bad


def test_weights_and_big_blobs_must_be_lfs():
    blobs = [
        NewBlob("1" * 40, "model.safetensors", 512 * MiB, None),
        NewBlob("2" * 40, "sub/dir/weights.bin", 10, None),
        NewBlob("3" * 40, "data.csv", 11 * MiB, None),
        NewBlob("4" * 40, "README.md", 100, None),
        NewBlob("5" * 40, "ok.safetensors", 130, LfsPointer(OID, 5 * MiB)),
        NewBlob("6" * 40, "empty.bin", 0, None),
    ]
    problems = check_blobs(blobs, max_plain_blob=10 * MiB, weight_patterns=DEFAULT_WEIGHT_PATTERNS)
    assert len(problems) == 3
    assert problems[0].startswith("model.safetensors (512 MiB) must be stored with Git LFS")
    assert 'git lfs track "*.safetensors"' in problems[0] and "git lfs migrate import" in problems[0]
    assert problems[1].startswith("sub/dir/weights.bin (10 B) must be stored with Git LFS (matches a weight pattern)")
    assert problems[2].startswith("data.csv (11 MiB) must be stored with Git LFS (is larger than 10 MiB)")


def test_gitattributes_coverage():
    attrs = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\nweights/** filter=lfs diff=lfs merge=lfs -text\n"
    assert check_attributes("refs/heads/main", ["a/b/model.safetensors", "weights/x/y.bin"], attrs) == []
    problems = check_attributes("refs/heads/main", ["model.bin"], attrs)
    assert problems == ["main: .gitattributes does not give model.bin 'filter=lfs diff=lfs merge=lfs -text'. "
                        "Fix: git lfs track \"*.bin\" && git add .gitattributes && git commit && git push"]
    partial = b"*.bin filter=lfs\n"
    assert check_attributes("refs/heads/main", ["m.bin"], partial)
    unset = attrs + b"secret.safetensors -filter\n"
    assert check_attributes("refs/heads/main", ["secret.safetensors"], unset)
    missing = check_attributes("refs/tags/v1", ["m.bin"], None)
    assert missing[0].startswith("v1: 1 LFS/weight file(s) (e.g. m.bin) but no .gitattributes")
    assert check_attributes("refs/heads/main", [], None) == []
    assert lfs_attributes("deep/x.pt", [("/x.pt", ["filter=lfs"])]) == {}
    assert lfs_attributes("x.pt", [("/x.pt", ["filter=lfs"])]) == {"filter": "lfs"}


def _u(ref, old="1" * 40, new="2" * 40):
    return RefUpdate(old, new, ref)


@pytest.mark.parametrize("update, admin, deployed, nonff, allow_ff, fragment", [
    (_u("refs/tags/v1"), False, {}, set(), False, "tags are immutable releases; only a namespace admin can move"),
    (_u("refs/tags/v1", new=ZERO), False, {}, set(), False, "only a namespace admin can delete"),
    (_u("refs/tags/v1"), True, {}, set(), False, None),
    (_u("refs/tags/v1", old=ZERO), False, {}, set(), False, None),
    (_u("refs/tags/v1", new=ZERO), True, {"refs/tags/v1": "prod"}, set(), False, "deployment 'prod' uses it"),
    (_u("refs/heads/main"), False, {}, {"refs/heads/main"}, False, "non-fast-forward"),
    (_u("refs/heads/main"), False, {}, {"refs/heads/main"}, True, None),
    (_u("refs/heads/dev"), False, {}, {"refs/heads/dev"}, False, None),
    (_u("refs/heads/main", new=ZERO), True, {}, set(), False, "cannot delete the default branch"),
    (_u("refs/notes/commits"), True, {}, set(), False, "only branches"),
])
def test_ref_rules(update, admin, deployed, nonff, allow_ff, fragment):
    problems = check_ref_updates([update], namespace_admin=admin, default_branch="main", allow_force_push=allow_ff,
                                 deployed=deployed, non_fast_forward=nonff)
    if fragment is None:
        assert problems == []
    else:
        assert len(problems) == 1 and fragment in problems[0], problems


def test_lfs_objects_must_be_uploaded_here():
    pointers = {"a.bin": LfsPointer(OID, 10), "b.bin": LfsPointer("b" * 64, 20)}
    problems = check_lfs_objects(pointers, {OID: 10}, "main")
    assert problems == [f"b.bin: its Git LFS object {'b' * 12}… (20 B) was never uploaded to this repository. "
                        "Fix: git lfs push --all origin main && git push"]
    assert "pointer says 10 bytes" in check_lfs_objects({"a.bin": LfsPointer(OID, 10)}, {OID: 11}, "main")[0]


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
    msg = check_card("refs/tags/v2", bad)[0]
    assert msg.startswith("v2: README.md: metadata field inference.resources.gpu") and "front matter" in msg
