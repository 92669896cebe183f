"""Schemathesis against a real daemon's /api/v1/openapi.json: every operation, every check, a fixed
seed and a bounded example budget. Passing means no input gives a 5xx and every response matches
what the spec says (status codes, content types, schemas, auth, positive data accepted, negative
data refused)."""

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..helpers import start_daemon

pytest.importorskip("schemathesis")
SEED = 20261130
EXAMPLES = 6  # per operation: keeps the run near a minute on a 2-core machine


def test_api_fuzz_finds_no_5xx_and_no_schema_violation(tmp_path):
    # The fuzzer sends wrong credentials on purpose (ignored_auth); the brute-force guard would
    # answer everything after that with 429.
    d = start_daemon(extra_env={"MODELREPO_AUTH__MAX_FAILURES": "1000000"})
    try:
        st = Path(sys.executable).parent / "st"
        started = time.time()
        proc = subprocess.run(
            [str(st), "run", f"{d.url}/api/v1/openapi.json", "--checks", "all", "--phases", "examples,fuzzing",
             "--seed", str(SEED), "--max-examples", str(EXAMPLES), "--workers", "2",
             "--request-timeout", "30", "--no-color", "-H", f"Authorization: Bearer {d.admin_token}"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)
        took = time.time() - started
        out = proc.stdout + proc.stderr
        summary = re.search(r"Test cases:\s*\n\s*(.+)", out)
        print(f"\nschemathesis: {summary.group(1).strip() if summary else '?'} in {took:.0f} s (seed {SEED})")
        assert proc.returncode == 0, out[-6000:]
        assert "Selected: " in out and "🚫" not in out.split("Test Phases:")[-1].split("Failures")[0], out[-3000:]
        assert "Status: 5" not in d.log() and '"status": 500' not in d.log(), "a 5xx reached the access log"
    finally:
        assert d.stop(signal.SIGTERM) == 0, d.log()[-3000:]
        shutil.rmtree(d.data.parent, ignore_errors=True)
