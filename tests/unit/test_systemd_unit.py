import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "modelrepo.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_verifies(tmp_path):
    """systemd-analyze verify passes once ExecStart points at a real modelrepo executable."""
    exe = Path(sys.executable).parent / "modelrepo"
    text = UNIT.read_text().replace("/opt/modelrepo/bin/modelrepo", str(exe))
    unit = tmp_path / "modelrepo.service"
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines()
                if line.strip() and "Failed to" not in line and "System has not been booted" not in line
                and "User and group" not in line]
    assert proc.returncode == 0 or not problems, proc.stdout + proc.stderr
    assert not problems, problems


def test_unit_is_hardened():
    text = UNIT.read_text()
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/modelrepo",
                      "PrivateTmp=yes", "ProtectHome=yes", "User=modelrepo",
                      "ExecStart=/opt/modelrepo/bin/modelrepo serve --config /etc/modelrepo/config.yaml"):
        assert directive in text, directive


def test_run_dir_is_a_runtime_directory_the_docs_name():
    """The hook sockets' directory: a tmpfs systemd creates for the service user and removes at
    stop, named the same in the unit, the example config's comment and the README's install steps."""
    text = UNIT.read_text()
    assert "RuntimeDirectory=modelrepo" in text and "RuntimeDirectoryMode=0700" in text
    assert "server.run_dir: /run/modelrepo" in text
    root = UNIT.parents[1]
    assert "/run/modelrepo" in (root / "config" / "modelrepo.example.yaml").read_text()
    assert "run_dir: /run/modelrepo" in (root / "README.md").read_text()
