"""The LFS pointer codec: what git-lfs writes parses, what we write is what git-lfs writes."""

import hashlib
import shutil
import subprocess

import pytest

from modelrepo.lfs.pointer import POINTER_MAX, LfsPointer, format_pointer, parse_pointer

OID = "a" * 64
POINTER = f"version https://git-lfs.github.com/spec/v1\noid sha256:{OID}\nsize 12345\n".encode()


def test_parse_pointer():
    assert parse_pointer(POINTER) == LfsPointer(OID, 12345)
    with_ext = POINTER.replace(b"oid", b"ext-0-foo sha256:" + b"b" * 64 + b"\noid")
    assert parse_pointer(with_ext) == LfsPointer(OID, 12345)
    for bad in (b"", b"hello", POINTER.replace(b"size 12345", b"size -1"), POINTER.upper(),
                POINTER.replace(b"sha256:", b"sha1:"), POINTER + b"x" * 2000, POINTER[:-1],
                POINTER.replace(OID.encode(), b"A" * 64), POINTER.replace(OID.encode(), b"a" * 63)):
        assert parse_pointer(bad) is None, bad


def test_format_round_trips():
    for p in (LfsPointer(OID, 0), LfsPointer("0123456789abcdef" * 4, 2**40)):
        text = format_pointer(p)
        assert parse_pointer(text) == p and len(text) < POINTER_MAX
    assert format_pointer(LfsPointer(OID, 12345)) == POINTER


@pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
def test_format_is_what_git_lfs_writes(tmp_path):
    data = b"some weights\n" * 100
    (tmp_path / "w").write_bytes(data)
    written = subprocess.run(["git", "lfs", "pointer", "--file=w"], capture_output=True, cwd=tmp_path,
                             check=True).stdout
    expected = LfsPointer(hashlib.sha256(data).hexdigest(), len(data))
    assert written == format_pointer(expected)
    assert parse_pointer(written) == expected
