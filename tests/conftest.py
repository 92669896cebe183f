import compileall
import shutil
import signal
from pathlib import Path

import modelrepo
import pytest

from .helpers import Git, short_tmpdir, start_daemon

if shutil.which("git") is None:  # pragma: no cover - CI installs git
    raise pytest.UsageError("the tests drive the real git client: install git")


def pytest_sessionstart(session):
    """Byte-compile the package once, so the daemons and CLI commands the tests start (well over a
    hundred) read cached bytecode instead of compiling every module again (~0.7 s of CPU each).
    Where PYTHONDONTWRITEBYTECODE is set (CI images often set it) Python never writes the cache
    itself, but it still reads one; `__pycache__/` is git-ignored."""
    compileall.compile_dir(Path(modelrepo.__file__).parent, quiet=1)


@pytest.fixture(scope="module")
def daemon():
    """A real `modelrepo serve` on a free loopback port, shared by the tests of one module."""
    d = start_daemon()
    yield d
    rc = d.stop(signal.SIGTERM)
    assert rc == 0, f"daemon exited with {rc} on SIGTERM:\n{d.log()[-4000:]}"
    shutil.rmtree(d.data.parent, ignore_errors=True)


@pytest.fixture
def git(tmp_path):
    return Git(tmp_path / "home")


@pytest.fixture
def short_tmp():
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    """One throw-away PostgreSQL for the whole run; each test takes a fresh database (``pg_server.url()``)."""
    from .pgserver import start_pg_server

    srv = start_pg_server()
    yield srv
    srv.stop()
