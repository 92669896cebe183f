"""The push facts parsers: the hook's ref lines, its quarantine variables, cat-file's batch output."""

from modelrepo.push.facts import parse_cat_file_batch, parse_updates, quarantine_env
from modelrepo.push.rules import RefUpdate

A, B = "a" * 40, "b" * 40


def test_parse_updates_keeps_only_well_formed_lines():
    raw = [{"old": A, "new": B, "ref": "refs/heads/main"},
           {"old": A, "new": B},  # no ref
           {"old": A, "new": "--output=/tmp/x", "ref": "refs/heads/x"},  # not an object name
           {"old": A.upper(), "new": B, "ref": "refs/heads/y"},
           {"old": 1, "new": B, "ref": "refs/heads/z"},
           "refs/heads/main",
           {"old": "0" * 64, "new": "c" * 64, "ref": "refs/tags/v1"}]
    assert parse_updates(raw) == [RefUpdate(A, B, "refs/heads/main"), RefUpdate("0" * 64, "c" * 64, "refs/tags/v1")]
    assert parse_updates({"refs": []}) == [] and parse_updates(None) == []


def test_quarantine_env_is_absolute_and_limited():
    env = {"GIT_OBJECT_DIRECTORY": "./objects/incoming-x", "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/abs:rel",
           "GIT_QUARANTINE_PATH": "", "PATH": "/evil", "GIT_DIR": "/elsewhere"}
    assert quarantine_env(env, "/repos/a.git") == {
        "GIT_OBJECT_DIRECTORY": "/repos/a.git/./objects/incoming-x",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "/abs:/repos/a.git/rel"}


def test_cat_file_batch_output():
    out = (b"1111 blob 5\nhello\n"
           b"2222 missing\n"
           b"3333 tree 3\nabc\n"
           b"4444 blob 0\n\n")
    assert parse_cat_file_batch(out, ["1111", "x:README.md", "3333", "4444"]) == {
        "1111": b"hello", "x:README.md": None, "3333": None, "4444": b""}
