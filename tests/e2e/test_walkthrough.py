"""The README walkthrough runs as written.

Its ```sh blocks are extracted from README.md and run in order by one bash that stops at the first
failing command, on a simulated fresh machine: an empty HOME (no git identity, no credentials, no
git-lfs set-up), a PATH without the virtualenv, and a "checkout" directory holding `.venv` (the
test's own virtualenv) and `data/` (the directory a daemon started with the defaults serves, as
`./quickstart.sh serve` would). The one change made to the text is the port: the blocks name
127.0.0.1:8080 and the test's daemon listens on a free port. The outcome is then checked through the
API, the data directory and the files the walkthrough leaves — never through message wording.
"""

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ..helpers import WEBHOOK_OPT_IN, rmtree, short_tmpdir, start_daemon

README = Path(__file__).resolve().parents[2] / "README.md"
MiB = 1024 * 1024

pytestmark = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")


def section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)


def test_quick_start_is_two_commands():
    (block,) = sh_blocks(section(README.read_text(), "Quick start"))
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]
    assert commands == ["./quickstart.sh serve", "./quickstart.sh test"]


@pytest.fixture
def fresh_machine():
    root = short_tmpdir("walk")
    checkout, home = root / "checkout", root / "home"
    checkout.mkdir()
    home.mkdir()
    (checkout / ".venv").symlink_to(sys.prefix)
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and Path(p).resolve() != Path(venv_bin).resolve())
    env = {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb",
           # No prompt can be answered here: a missing credential must fail, not wait.
           "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
           # pip must find huggingface_hub already installed (the test extras have it): no network.
           "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    assert shutil.which("modelrepo", path=path) is None, "the walkthrough must put modelrepo on PATH itself"
    # A daemon as the quick start runs it: default settings (no webhook opt-in), data in the checkout,
    # its catalog created and migrated from nothing by this first start (no seeded copy).
    daemon = start_daemon(checkout / "data", extra_env={key: None for key in WEBHOOK_OPT_IN}, seed=False)
    yield checkout, home, env, daemon
    assert daemon.stop() == 0, daemon.log()[-3000:]
    rmtree(root)


def test_walkthrough_runs_as_written(fresh_machine):
    checkout, home, env, d = fresh_machine
    blocks = sh_blocks(section(README.read_text(), "Walkthrough"))
    assert len(blocks) >= 8 and "127.0.0.1:8080" in blocks[0]
    script = ["set -euo pipefail", f"cd {checkout}"]
    for n, block in enumerate(blocks, 1):
        script += [f"echo '=== walkthrough block {n} ==='", block.replace("127.0.0.1:8080", f"127.0.0.1:{d.port}")]
    proc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=checkout, env=env, capture_output=True,
                          timeout=600)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, f"walkthrough failed ({proc.returncode}):\n{out[-6000:]}\n{err[-6000:]}"

    # The work happened outside the checkout, with both clones holding the real weights.
    work = home / "modelrepo-walkthrough"
    assert not (checkout / "resnet50").exists()
    weights = (work / "resnet50" / "model.safetensors").read_bytes()
    assert len(weights) == 4 * MiB and (work / "resnet50-copy" / "model.safetensors").read_bytes() == weights
    oid = hashlib.sha256(weights).hexdigest()
    assert (d.data / "lfs/objects" / oid[:2] / oid[2:4] / oid).stat().st_size == 4 * MiB
    assert stat.S_IMODE((home / ".git-credentials").stat().st_mode) == 0o600

    # The catalog: the card, the files (weights in LFS), the release tag.
    model = d.ok("GET", "/api/v1/models/acme/resnet50")
    assert model["card"]["library_name"] == "transformers" and model["pipeline_tag"] == "image-classification"
    files = {f["path"]: f for f in model["files"]}
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors"}
    assert files["model.safetensors"]["lfs_oid"] == oid and files["model.safetensors"]["size"] == 4 * MiB
    refs = d.ok("GET", "/api/v1/models/acme/resnet50/refs")
    assert [t["name"] for t in refs["tags"]] == ["v1.0"] and [b["name"] for b in refs["branches"]] == ["main"]
    members = d.ok("GET", "/api/v1/namespaces/acme/members")
    assert {"user": "alice", "role": "writer"} in members, members

    # The Hub client downloaded the release, config.json included.
    snapshots = list((home / ".cache/huggingface/hub/models--acme--resnet50/snapshots").iterdir())
    assert len(snapshots) == 1 and (snapshots[0] / "config.json").read_bytes() == (work / "resnet50/config.json").read_bytes()
    assert (snapshots[0] / "model.safetensors").read_bytes() == weights

    # One webhook (the metadata address was refused), which queued the deployment's events.
    (hook,) = d.ok("GET", "/api/v1/namespaces/acme/webhooks")
    assert hook["url"] == "https://deployer.example.com/hook"
    events = sorted(e["event"] for e in d.ok("GET", f"/api/v1/namespaces/acme/webhooks/{hook['id']}/deliveries"))
    assert events == ["deployment.requested", "deployment.updated"]

    # The deployment of v1.0 passed the card gate and was reported active.
    (dep,) = d.ok("GET", "/api/v1/models/acme/resnet50/deployments")
    assert dep["revision"] == "v1.0" and dep["status"] == "active" and dep["name"] == "prod"
