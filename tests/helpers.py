"""Test helpers: a real daemon in a subprocess, the real git client, plain HTTP on loopback."""

import atexit
import base64
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

VENV_BIN = Path(sys.executable).parent
MODELREPO = str(VENV_BIN / "modelrepo")
# The tests' webhook receivers listen on 127.0.0.1, which the SSRF guard refuses by default: test
# daemons opt it in as an operator would. A test that wants the default passes {KEY: None}.
WEBHOOK_OPT_IN = {"MODELREPO_WEBHOOKS__ALLOWED_HOSTS": "[127.0.0.1]"}


def _unassigned_ports() -> range:
    """Ports the kernel never picks by itself: below its ephemeral range (from 20000 on)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ports = range(20000, low) if low > 21000 else range(low - 1000, low)
    # Under pytest-xdist each worker draws from its own share: two workers never pick one port in
    # the moment between its check here and its server's bind.
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")
    if worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 1:
        return ports[int(worker[2:])::int(count)]
    return ports


def free_port() -> int:
    """A loopback port nothing listens on now, for a server started a moment later.

    Not one from bind(0): that is in the kernel's ephemeral range, which it also hands out to
    every outgoing connection (the suite makes thousands), so one could take the port before the
    server binds it and the server would fail with "address in use" once in a while. A random port
    below that range is only ever taken by another test picking the same one at the same moment."""
    ports = _unassigned_ports()
    while True:
        port = random.choice(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def wait_until(predicate, what: str, timeout: float = 60, interval: float = 0.05, detail=None):
    """Poll ``predicate`` until it returns something true, and return that.

    Tests wait on the condition itself, never for a fixed time: a loaded CI machine may take many
    times longer than a quiet one, so ``timeout`` only bounds a real hang and is deliberately
    generous. ``detail`` (a callable) adds context, e.g. a daemon's log, to the timeout message."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f"\n{detail()}" if detail else ""))
        time.sleep(interval)


def short_tmpdir(prefix: str = "mr") -> Path:
    # Unix socket paths are limited to 107 bytes: keep data dirs short, not under pytest's tmp_path.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


_catalog_template: list[Path] = []


def seed_catalog(data: Path) -> None:
    """Give a new data directory the catalog its first start would make: a copy of one catalog that
    ``migrate()`` brought from empty to the newest schema once per test run.

    Running every migration costs ~0.8 s of CPU, and the suite starts well over a hundred daemons
    and apps on fresh data directories. Each still runs ``migrate()`` at start-up (it finds nothing
    to do) and bootstraps its admin, since the copy has no users. Migrating from empty stays tested
    by the template itself, tests/unit/test_catalog_schema.py and the README walkthrough's daemon,
    which starts without a seed as a user's first start does."""
    if not _catalog_template:
        from modelrepo.catalog.db import migrate

        root = short_tmpdir("mrcat")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        migrate(root / "catalog.db")
        _catalog_template.append(root / "catalog.db")
    data.mkdir(parents=True, exist_ok=True)
    tmp = data / f".catalog.db.seed-{os.getpid()}-{threading.get_ident()}"
    shutil.copyfile(_catalog_template[0], tmp)
    os.replace(tmp, data / "catalog.db")  # never a half-copied catalog, even for two daemons at once


def cli_in_process(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``modelrepo ARGS`` run by click in this process: the same command functions, exit status,
    stdout and stderr as the executable gives, without the ~2 s of CPU a new process spends
    importing the services. For tests about what a command does; what only a real process shows
    (the entry point, a TTY, signals) stays with tests that run the executable.

    MODELREPO_* variables are removed, as for the subprocesses, then ``env`` is set for the call
    only; the logging a command configures (onto the stderr it was given) is put back afterwards."""
    import logging

    import structlog
    from click.testing import CliRunner

    from modelrepo.cli.main import main

    saved_structlog, root = structlog.get_config(), logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    env = {**{k: None for k in os.environ if k.startswith("MODELREPO_")}, **(env or {})}
    try:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    finally:
        structlog.configure(**saved_structlog)
        root.setLevel(saved_root[0])
        root.handlers[:] = saved_root[1]
    return subprocess.CompletedProcess(["modelrepo", *args], result.exit_code, result.stdout, result.stderr)


@dataclass
class Response:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(method: str, url: str, *, token: str | None = None, body=None, headers: dict | None = None,
         basic: tuple[str, str] | None = None, raw: bytes | None = None,
         context: ssl.SSLContext | None = None) -> Response:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None and raw is None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if basic:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode())
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            return Response(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers), err.read())


@dataclass
class Daemon:
    data: Path
    port: int
    proc: subprocess.Popen
    log_path: Path
    admin_token: str = ""
    tokens: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, token: str | None = "admin", body=None, **kw) -> Response:
        tok = self.tokens.get(token, token) if token else None
        return http(method, self.url + path, token=tok, body=body, **kw)

    def ok(self, method: str, path: str, token: str | None = "admin", body=None) -> dict | list | None:
        r = self.api(method, path, token, body)
        assert 200 <= r.status < 300, (method, path, r.status, r.body)
        return r.json() if r.body else None

    def user(self, name: str, *, admin: bool = False, scope: str = "write") -> str:
        """Create a user with a token of ``scope``; the token is remembered under the user's name."""
        self.ok("POST", "/api/v1/users", body={"name": name, "admin": admin})
        tok = self.ok("POST", f"/api/v1/users/{name}/tokens", body={"scopes": [scope], "name": "test"})["token"]
        self.tokens[name] = tok
        return tok

    def git_url(self, repo: str, user: str | None = None) -> str:
        if user is None:
            return f"{self.url}/{repo}"
        return f"http://{user}:{self.tokens[user]}@127.0.0.1:{self.port}/{repo}"

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# MODELREPO_TESTS_CATALOG=postgresql runs every test daemon (that names no catalog itself) on a fresh
# database of one throw-away PostgreSQL: the suites written for the SQLite default, on PostgreSQL.
# A restart on the same data directory gets the same database. Tests that open DATA/catalog.db with
# sqlite3, or run the CLI on the data directory, themselves do not apply in that mode.
_PG_FOR_ALL = None
_PG_URLS: dict[Path, str] = {}


_PG_LOCK = threading.Lock()  # daemons started together on one data directory get one database


def _catalog_env(data: Path) -> dict:
    global _PG_FOR_ALL
    if os.environ.get("MODELREPO_TESTS_CATALOG") != "postgresql":
        return {}
    with _PG_LOCK:
        if _PG_FOR_ALL is None:
            import atexit

            from .pgserver import start_pg_server

            _PG_FOR_ALL = start_pg_server()
            atexit.register(_PG_FOR_ALL.stop)
        if data not in _PG_URLS:
            _PG_URLS[data] = _PG_FOR_ALL.url()
        return {"MODELREPO_CATALOG__URL": _PG_URLS[data]}


def _catalog_configured(args: list[str], env: dict) -> bool:
    if any(k.startswith("MODELREPO_CATALOG") for k in env):
        return True
    if "--config" in args:
        config = Path(args[args.index("--config") + 1])
        return not config.is_file() or "catalog" in config.read_text(errors="replace")
    return False


def start_daemon(data: Path | None = None, *, extra_env: dict | None = None, args: list[str] | None = None,
                 wait: bool = True, port: int | None = None, seed: bool = True) -> Daemon:
    """A daemon on ``data`` (a new directory by default). A data directory without a catalog gets a
    seeded one (``seed_catalog``) unless ``seed`` is false or the settings may put the catalog
    elsewhere (MODELREPO_CATALOG* variables, a --config file that mentions it)."""
    data = data or short_tmpdir() / "data"
    if seed and not (data / "catalog.db").exists() and not _catalog_configured(args or [], extra_env or {}):
        seed_catalog(data)
    port = port or free_port()
    log_path = data.parent / f"daemon-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}
    env.update({"MODELREPO_LOG__FORMAT": "json", **WEBHOOK_OPT_IN, **_catalog_env(data)})
    env.update(extra_env or {})
    env = {k: v for k, v in env.items() if v is not None}
    logf = open(log_path, "wb")
    proc = subprocess.Popen([MODELREPO, "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}", *(args or [])],
                            stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    d = Daemon(data=data, port=port, proc=proc, log_path=log_path)
    if wait:
        deadline = time.time() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {proc.returncode}:\n{d.log()}")
            try:
                if http("GET", d.url + "/healthz").status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                d.stop(signal.SIGKILL)
                raise RuntimeError(f"daemon did not start:\n{d.log()}")
            time.sleep(0.05)
        d.admin_token = (data / "admin.token").read_text().strip()
        d.tokens["admin"] = d.admin_token
    return d


class Git:
    """The real git client in an isolated HOME: no user config, no credential helper, no prompts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ["PATH"], "HOME": str(home), "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Tester", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "Tester", "GIT_COMMITTER_EMAIL": "t@example.com", "LANG": "C",
        }
        (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
        if shutil.which("git-lfs"):
            self.run("lfs", "install", "--skip-repo")

    def run(self, *args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None,
            input: bytes | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(["git", *args], cwd=cwd, env={**self.env, **(env or {})}, capture_output=True,
                              input=input, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
        return proc

    def out(self, *args: str, cwd: Path | None = None) -> str:
        return self.run(*args, cwd=cwd).stdout.decode().strip()

    def new_repo(self, path: Path, files: dict[str, bytes | str] | None = None, message: str = "init") -> Path:
        path.mkdir(parents=True, exist_ok=True)
        self.run("init", "-q", str(path))
        if files:
            self.commit(path, files, message)
        return path

    def commit(self, path: Path, files: dict[str, bytes | str], message: str = "change") -> str:
        for name, content in files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
        self.run("add", "-A", cwd=path)
        self.run("commit", "-q", "-m", message, cwd=path)
        return self.out("rev-parse", "HEAD", cwd=path)


def rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def catalog_sql(data: Path, sql: str, **params) -> list[tuple]:
    """Run ``sql`` (named ``:params``) on the catalog of the daemon on ``data``, committed, whichever
    engine this run put it on (the SQLite file, or its database when MODELREPO_TESTS_CATALOG=postgresql);
    the rows as tuples, [] for a statement that returns none. For tests that look behind the API."""
    import asyncio

    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    statement = sa.text(sql)
    url = _PG_URLS.get(data)
    if url is None:
        engine = sa.create_engine(f"sqlite:///{data / 'catalog.db'}", poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(statement, params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    async def on_postgresql() -> list[tuple]:
        engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1),
                                     poolclass=sa.pool.NullPool)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(statement, params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(on_postgresql())


def catalog_env(data: Path) -> dict:
    """The environment naming the catalog this run gives ``data`` (for the admin CLI run beside a
    daemon, or before one starts on it): its PostgreSQL database when MODELREPO_TESTS_CATALOG=postgresql
    (the daemon's, or a fresh one), else none (the SQLite file in ``data``)."""
    return _catalog_env(data)


def run_catalog_url(data: Path) -> str | None:
    """The catalog URL this test run gives a new in-process app on ``data``: a fresh PostgreSQL
    database when MODELREPO_TESTS_CATALOG=postgresql, else None (the SQLite default)."""
    return catalog_env(data).get("MODELREPO_CATALOG__URL")


def operator_env(data: Path) -> dict:
    """The environment an operator runs the admin CLI with beside the daemon on ``data``: no test
    switches (MODELREPO_*), the daemon's catalog."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MODELREPO_")}, **catalog_env(data)}
