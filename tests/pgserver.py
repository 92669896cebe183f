"""Throw-away PostgreSQL server for tests (Debian's ``postgresql`` package), stdlib only.

    pg = start_pg_server()
    try:
        url = pg.url("mydb")   # postgresql://modelrepo:PASSWORD@127.0.0.1:PORT/mydb (created)
    finally:
        pg.stop()

``initdb`` + ``pg_ctl`` on a free loopback port, data and socket directory under a private temporary
directory. PostgreSQL refuses to run as root, so when the tests run as root (CI) the cluster is
created and started as the ``postgres`` user that Debian's package creates; the temporary directory is
handed to that user. Password authentication (scram) over TCP only, like a real deployment.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_HOST = "127.0.0.1"
USER = "modelrepo"


def pg_bindir() -> Path | None:
    """Debian installs the server binaries outside PATH, under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).resolve().parent if which else None


def _free_port() -> int:
    from .helpers import free_port  # outside the ephemeral range: see there

    return free_port()


@dataclass
class PgServer:
    port: int
    password: str
    workdir: Path
    bindir: Path
    run_as: str | None

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def psql(self, sql: str, db: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        out = subprocess.run([str(self.bindir / "psql"), "-h", _HOST, "-p", str(self.port), "-U", USER,
                              "-d", db, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                             env=env, check=True, capture_output=True, text=True, timeout=60)
        return out.stdout

    def create_database(self, name: str) -> None:
        self.psql(f'CREATE DATABASE "{name}"')

    def url(self, db: str | None = None, *, create: bool = True) -> str:
        """A URL to a database; a fresh randomly named one unless ``db`` is given."""
        db = db or f"t_{secrets.token_hex(6)}"
        if create:
            self.create_database(db)
        return f"postgresql://{USER}:{self.password}@{_HOST}:{self.port}/{db}"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.workdir / "pg.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        subprocess.run(self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                                 "-w", "stop"), capture_output=True, timeout=60)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pg_server() -> PgServer:
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    run_as = "postgres" if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="mrpg-"))
    password = secrets.token_hex(16)
    if run_as:
        pw = pwd.getpwnam(run_as)
        os.chown(workdir, pw.pw_uid, pw.pw_gid)
    os.chmod(workdir, 0o700)
    pwfile = workdir / "pw"
    pwfile.write_text(password + "\n")
    if run_as:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    srv = PgServer(port=port, password=password, workdir=workdir, bindir=bindir, run_as=run_as)

    def run(*args: str) -> None:
        res = subprocess.run(srv._cmd(*args), capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{srv.log_tail()}")

    run(str(bindir / "initdb"), "-D", str(srv.datadir), "-U", USER, "--pwfile", str(pwfile),
        "-A", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync")
    opts = (f"-c listen_addresses={_HOST} -c port={port} -c unix_socket_directories={workdir} "
            f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    run(str(bindir / "pg_ctl"), "-D", str(srv.datadir), "-o", opts, "-l", str(workdir / "pg.log"), "-w",
        "-t", "60", "start")
    deadline = time.time() + 30
    while True:
        try:
            srv.psql("SELECT 1")
            return srv
        except subprocess.CalledProcessError:
            if time.time() > deadline:
                srv.stop()
                raise
            time.sleep(0.2)
