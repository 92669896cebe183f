"""Until Xet is served, huggingface_hub with hf_xet installed asks for a Xet write token before an
LFS upload. The real client, run without HF_HUB_DISABLE_XET, must show its user the setting."""

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("huggingface_hub")
pytest.importorskip("hf_xet")


def test_upload_without_disable_xet_tells_the_user_what_to_set(daemon, tmp_path):
    d = daemon
    d.ok("POST", "/api/v1/namespaces", body={"name": "xet"})
    d.user("xavier")
    d.ok("PUT", "/api/v1/namespaces/xet/members/xavier", body={"role": "writer"})
    d.ok("POST", "/api/v1/models", body={"namespace": "xet", "name": "m"})
    (tmp_path / "model.safetensors").write_bytes(os.urandom(64 * 1024))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update({"HF_ENDPOINT": d.url, "HF_TOKEN": d.tokens["xavier"], "HF_HOME": str(tmp_path / "hf-home"),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    code = textwrap.dedent("""
        from huggingface_hub import HfApi
        HfApi().upload_file(path_or_fileobj="model.safetensors", path_in_repo="model.safetensors",
                            repo_id="xet/m")
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode != 0, "the upload cannot succeed over Xet"
    assert "HF_HUB_DISABLE_XET=1" in proc.stderr, proc.stderr[-3000:]

    # And with the setting, the same upload goes through LFS.
    env["HF_HUB_DISABLE_XET"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
