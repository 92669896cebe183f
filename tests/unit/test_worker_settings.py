"""server.workers and server.run_dir: parsed, resolved and refused in words."""

import os
from pathlib import Path

import pytest

from modelrepo.settings import ConfigError, load_settings


def test_workers_default_count_and_auto():
    assert load_settings(None, environ={}).server.workers == 1
    assert load_settings(None, environ={"MODELREPO_SERVER__WORKERS": "3"}).server.workers == 3
    assert load_settings(None, environ={"MODELREPO_SERVER__WORKERS": "auto"}).server.workers == os.cpu_count()
    # The command-line flag arrives as text.
    assert load_settings(None, environ={}, overrides={"server.workers": "2"}).server.workers == 2


@pytest.mark.parametrize("bad", ["0", "-1", "many", "true", "1.5", "100000"])
def test_bad_worker_counts_are_refused_naming_the_key(bad):
    with pytest.raises(ConfigError, match="server.workers"):
        load_settings(None, environ={"MODELREPO_SERVER__WORKERS": bad})


def test_run_dir_defaults_to_data_run_and_is_made_absolute(tmp_path, monkeypatch):
    s = load_settings(None, environ={"MODELREPO_DATA_DIR": str(tmp_path / "d")})
    assert s.run_dir == tmp_path / "d" / "run"
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, environ={"MODELREPO_SERVER__RUN_DIR": "sockets"})
    assert s.run_dir == tmp_path / "sockets" and s.run_dir.is_absolute()
    assert load_settings(None, environ={"MODELREPO_SERVER__RUN_DIR": "/run/modelrepo"}).run_dir == Path("/run/modelrepo")
