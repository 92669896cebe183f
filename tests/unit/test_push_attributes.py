"""`.gitattributes` coverage, checked against git's own `git check-attr` on the same file."""

import shutil
import subprocess

import pytest

from modelrepo.push.attributes import attr_lines, lfs_attributes, lfs_covered, track_pattern

ATTRS = (b"# comment\n[attr]binary -diff -merge -text\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
         b"weights/** filter=lfs diff=lfs merge=lfs -text\n/top.pt filter=lfs diff=lfs merge=lfs -text\n"
         b"*.bin filter=lfs\nsecret.safetensors -filter\ndocs/*.gguf filter=lfs diff=lfs merge=lfs -text\n")
PATHS = ["a/b/model.safetensors", "model.safetensors", "secret.safetensors", "weights/x/y.bin", "weights/z",
         "top.pt", "deep/top.pt", "m.bin", "docs/a.gguf", "docs/sub/a.gguf", "x.txt"]


def test_attr_lines_skip_comments_and_macros():
    lines = attr_lines(ATTRS)
    assert lines[0] == ("*.safetensors", ["filter=lfs", "diff=lfs", "merge=lfs", "-text"])
    assert all(not p.startswith(("#", "[")) for p, _ in lines)


def test_coverage():
    lines = attr_lines(ATTRS)
    covered = {p for p in PATHS if lfs_covered(p, lines)}
    assert covered == {"a/b/model.safetensors", "model.safetensors", "weights/x/y.bin", "weights/z", "top.pt",
                       "docs/a.gguf"}
    assert lfs_attributes("m.bin", lines) == {"filter": "lfs"}
    assert lfs_attributes("deep/x.pt", [("/x.pt", ["filter=lfs"])]) == {}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_agrees_with_git_check_attr(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitattributes").write_bytes(ATTRS)
    out = subprocess.run(["git", "check-attr", "filter", "diff", "merge", "text", "--", *PATHS], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    got: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        path, attr, value = line.rsplit(": ", 2)
        got.setdefault(path, {})[attr] = value
    lines = attr_lines(ATTRS)
    for path in PATHS:
        git_says = got[path] == {"filter": "lfs", "diff": "lfs", "merge": "lfs", "text": "unset"}
        assert lfs_covered(path, lines) == git_says, (path, got[path])


def test_track_pattern():
    assert track_pattern("a/b/model.safetensors") == "*.safetensors"
    assert track_pattern("weights") == "weights"
