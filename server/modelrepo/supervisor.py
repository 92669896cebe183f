"""``server.workers: N`` (N > 1): a supervisor process and N worker processes behind one port.

Why processes: one event loop reads every socket, so a single daemon uses one core however many
the machine has (the LFS bench: 8 concurrent uploads at 0.29 of the machine's ceiling). N fresh
interpreters, each with its own loop, all accepting on the same port with SO_REUSEPORT (the
kernel spreads connections over them), use N cores without sharing memory: everything they share
already lives where concurrent processes are safe — the catalog, the repositories (git's own ref
locks), the object store.

The parent does what must happen once, before anyone serves: migrations, the bootstrap admin,
hooks brought up to date, start-up recovery. Then it starts the workers as fresh interpreters
(``python -m modelrepo serve … --worker I --supervisor PID``; never a fork of a running event loop)
and keeps them:

- a worker that exits is restarted, after a pause that doubles while it keeps dying young (a
  crash loop must not spin); one that dies before the first READY fails start-up instead;
- SIGTERM/SIGINT go to every worker, each drains as the single daemon does, and the parent exits
  0 once all of them did; SIGHUP goes to every worker (each reloads as the single daemon does);
- systemd (Type=notify): the workers notify the parent on a NOTIFY_SOCKET the parent owns; the
  parent tells systemd READY=1 only once every worker serves, STOPPING=1 on stop, and pings the
  watchdog itself — and kills (so restarts) a worker whose own pings stopped;
- Prometheus: the workers run prometheus-client's multiprocess mode in a fresh directory the
  parent made; any worker answers /metrics with the sum over all; a dead worker's live gauges go.

The parent holds the port bound (never listening: the kernel hands connections to listening
sockets only), so a port in use fails start-up at once, port 0 picks one port for all workers,
and nobody else can take it while a worker restarts.
"""

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from prometheus_client import multiprocess

from modelrepo import sdnotify
from modelrepo.app import hook_socket, reinstall_hooks
from modelrepo.daemon import first_start
from modelrepo.log import configure_logging
from modelrepo.ops import recovery
from modelrepo.services import build_services
from modelrepo.settings import ConfigError, Settings

log = structlog.get_logger("modelrepo.supervisor")

# A worker that dies younger than this (seconds) counts towards a crash loop.
STABLE_AFTER = 30.0
# The first restart waits this long; each further early death doubles it, up to BACKOFF_MAX.
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 30.0
# On stop, how long past server.shutdown_timeout a worker may take before it is killed.
STOP_GRACE = 15.0
# Exit statuses of a worker that stopped because it was asked to.
CLEAN_EXITS = (0, -signal.SIGTERM, -signal.SIGINT)

_PR_SET_PDEATHSIG = 1
_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def attach_to_supervisor(parent: int) -> None:
    """In a worker, first thing: SIGTERM (so a drain) when the supervisor dies, however it dies,
    rather than serving on as an orphan nobody restarts or stops."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it died before the line above
        raise SystemExit("modelrepo: the supervisor is gone; worker not started")


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    started: float = 0.0
    last_ping: float = 0.0
    early_deaths: int = 0
    exit_status: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def signal(self, sig: int) -> None:
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)  # type: ignore[union-attr]


class Supervisor:
    """``worker_args``: the command line after ``python -m modelrepo`` that reproduces these
    settings in a worker (``serve`` with the same --config/--data); the supervisor adds --listen
    (the port it reserved), --worker and --supervisor. ``load_settings`` re-reads them for SIGHUP."""

    def __init__(self, settings: Settings, worker_args: Sequence[str],
                 load_settings: Callable[[], Settings]) -> None:
        self.settings = settings
        self.worker_args = list(worker_args)
        self.load_settings = load_settings
        self.workers = [Worker(i) for i in range(settings.server.workers)]
        self.listen = settings.server.listen
        self.failure: str | None = None
        self._stopping = asyncio.Event()
        self._all_ready = asyncio.Event()
        self._metrics_dir: Path | None = None

    async def run(self) -> int:
        """Start-up work, then the workers until a stop; the exit status (0: all drained cleanly)."""
        run_dir = self.settings.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)
        with self._reserve_port():
            await self._startup_work()
            with self._metrics_directory() as metrics_dir, self._notify_socket() as (notify, notify_path):
                self._metrics_dir = metrics_dir
                return await self._supervise(self._worker_env(metrics_dir, notify_path), notify)

    @contextlib.contextmanager
    def _reserve_port(self) -> Iterator[None]:
        host, port = self.settings.server.host, self.settings.server.port
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio's own server does
            sock.bind(address)
            self.listen = listen_address(host, sock.getsockname()[1])
            yield
        finally:
            sock.close()

    async def _startup_work(self) -> None:
        services = build_services(self.settings)  # opening the catalog migrates it
        try:
            await first_start(self.settings, services.accounts)
            await reinstall_hooks(services.models.store)
            await recovery.recover(services)
        finally:
            await services.close()

    @contextlib.contextmanager
    def _metrics_directory(self) -> Iterator[Path]:
        path = self.settings.run_dir / f"metrics-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)  # a previous supervisor's, with our pid
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    @contextlib.contextmanager
    def _notify_socket(self) -> Iterator[tuple[socket.socket, Path]]:
        path = self.settings.run_dir / f"notify-{os.getpid()}.sock"
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # The kernel attaches each sender's pid: a message is believed for the worker it came from.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(str(path))
            sock.setblocking(False)
            yield sock, path
        finally:
            sock.close()
            path.unlink(missing_ok=True)

    def _worker_env(self, metrics_dir: Path, notify_path: Path) -> dict[str, str]:
        env = dict(os.environ)
        env["NOTIFY_SOCKET"] = str(notify_path)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env.pop("WATCHDOG_PID", None)
        # With a systemd watchdog, each worker pings us as often as we ping systemd.
        if sdnotify.watchdog_interval() is None:
            env.pop("WATCHDOG_USEC", None)
        return env

    async def _supervise(self, env: dict[str, str], notify: socket.socket) -> int:
        loop = asyncio.get_running_loop()
        loop.add_reader(notify.fileno(), self._on_notify, notify)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        interval = sdnotify.watchdog_interval()
        watchdog: asyncio.Task | None = None
        slots = [asyncio.create_task(self._keep(worker, env)) for worker in self.workers]
        try:
            ready = asyncio.create_task(self._all_ready.wait())
            stop = asyncio.create_task(self._stopping.wait())
            await asyncio.wait((ready, stop), return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not self._stopping.is_set():
                sdnotify.notify(f"READY=1\nSTATUS={self._status()}\nMAINPID={os.getpid()}")
                log.info("workers_ready", workers=len(self.workers), listen=self.listen,
                         pids=[w.pid for w in self.workers])
                if interval:  # as the single daemon: pings from READY on
                    watchdog = asyncio.create_task(self._watchdog(interval))
            await stop
            sdnotify.notify("STOPPING=1\nSTATUS=draining")
            log.info("stopping", workers=sum(w.alive for w in self.workers))
            for worker in self.workers:
                worker.signal(signal.SIGTERM)
            _, late = await asyncio.wait(slots, timeout=self.settings.server.shutdown_timeout + STOP_GRACE)
            for worker in self.workers:
                if worker.alive:
                    log.error("worker_stop_timeout", worker=worker.index, pid=worker.pid)
                    worker.signal(signal.SIGKILL)
            if late:
                await asyncio.wait(late)
        finally:
            for task in slots:
                task.cancel()
            if watchdog is not None:
                watchdog.cancel()
            loop.remove_reader(notify.fileno())
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        unclean = {w.index: w.exit_status for w in self.workers if w.exit_status not in CLEAN_EXITS}
        if self.failure or unclean:
            log.error("stopped", failure=self.failure, unclean_exits=unclean)
            return 1
        log.info("stopped")
        return 0

    async def _keep(self, worker: Worker, env: dict[str, str]) -> None:
        """One worker slot: start it, and start it again whenever it exits, until we stop."""
        loop = asyncio.get_running_loop()
        delay = 0.0
        while not self._stopping.is_set():
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "modelrepo", *self.worker_args, "--listen", self.listen,
                "--worker", str(worker.index), "--supervisor", str(os.getpid()), env=env)
            worker.ready, worker.exit_status = False, None
            worker.started = worker.last_ping = loop.time()
            if self._stopping.is_set():  # the stop's SIGTERM went out while we were spawning
                worker.signal(signal.SIGTERM)
            log.info("worker_started", worker=worker.index, pid=worker.pid)
            status = worker.exit_status = await worker.proc.wait()
            self._forget(worker)
            if self._stopping.is_set():
                return
            if not self._all_ready.is_set():
                self.failure = f"worker {worker.index} exited with status {status} before it served"
                log.error("worker_failed_to_start", worker=worker.index, pid=worker.pid, status=status)
                self._stop()
                return
            lived = loop.time() - worker.started
            worker.early_deaths = worker.early_deaths + 1 if lived < STABLE_AFTER else 1
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (worker.early_deaths - 1))
            log.error("worker_exited", worker=worker.index, pid=worker.pid, status=status,
                      lived_s=round(lived, 1), restart_in_s=delay)
            sdnotify.notify(f"STATUS={self._status()}")

    def _forget(self, worker: Worker) -> None:
        """What a dead worker leaves behind: its live gauges and its hook socket."""
        worker.ready = False
        pid = worker.pid
        if pid is None:
            return
        if self._metrics_dir is not None:
            multiprocess.mark_process_dead(pid, str(self._metrics_dir))
        hook_socket(self.settings, worker.index, pid).unlink(missing_ok=True)

    def _on_notify(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            except (BlockingIOError, InterruptedError):
                return
            sender = next((_CREDENTIALS.unpack(cdata[:_CREDENTIALS.size])[0] for level, kind, cdata in ancillary
                           if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None)
            worker = next((w for w in self.workers if w.pid is not None and w.pid == sender and w.alive), None)
            if worker is None:
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode(errors="replace").splitlines())
            worker.last_ping = loop.time()
            if fields.get("READY") == "1" and not worker.ready:
                worker.ready = True
                log.info("worker_ready", worker=worker.index, pid=worker.pid)
                if all(w.ready for w in self.workers):
                    if self._all_ready.is_set():
                        sdnotify.notify(f"STATUS={self._status()}")
                    self._all_ready.set()

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd from our loop; kill a worker silent for a whole WatchdogSec (its loop is
        stuck), which ``_keep`` then restarts."""
        loop = asyncio.get_running_loop()
        while True:
            sdnotify.notify("WATCHDOG=1")
            now = loop.time()
            for worker in self.workers if not self._stopping.is_set() else ():  # a drain stops pinging
                if worker.ready and worker.alive and now - worker.last_ping > 2 * interval:
                    log.error("worker_hung", worker=worker.index, pid=worker.pid,
                              silent_s=round(now - worker.last_ping, 1))
                    worker.signal(signal.SIGKILL)
            await asyncio.sleep(interval)

    def _status(self) -> str:
        return f"{sum(w.ready for w in self.workers)}/{len(self.workers)} workers serving on {self.listen}"

    def _stop(self) -> None:
        self._stopping.set()

    def _reload(self) -> None:
        """SIGHUP: our own log settings, then every worker reloads (and logs) its own."""
        try:
            new = self.load_settings()
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
        else:
            configure_logging(new.log.level, new.log.format)
        # Only to workers that serve: they handle SIGHUP; one still starting reads the new file anyway.
        ready = [w for w in self.workers if w.ready and w.alive]
        for worker in ready:
            worker.signal(signal.SIGHUP)
        log.info("reload_forwarded", workers=[w.pid for w in ready])
