"""Streaming and lifecycle: a big push and clone keep the daemon's memory flat; SIGTERM drains."""

import os
import signal
import subprocess
import threading
import time

import psutil
import pytest

from ..helpers import http, start_daemon

MiB = 1024 * 1024


class PeakRss:
    """Samples a process's RSS every 20 ms in a thread."""

    def __init__(self, daemon) -> None:
        self.daemon = daemon
        self.peak = daemon.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.daemon.rss())
            time.sleep(0.02)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_large_push_and_clone_keep_memory_flat(daemon, git, tmp_path):
    d = daemon
    d.ok("POST", "/api/v1/namespaces", body={"name": "big"})
    d.ok("POST", "/api/v1/models", body={"namespace": "big", "name": "blob", "visibility": "private"})
    work = git.new_repo(tmp_path / "w")
    # 128 MiB of incompressible data in plain git (files under push.max_plain_blob, names outside the
    # weight patterns): git can neither delta nor zip it away. 128 objects (> receive.unpackLimit)
    # keep the pushed pack whole, and pack.window=0 spares the client a pointless delta search, so
    # the time goes to moving bytes, which is what this test is about.
    for i in range(128):
        (work / f"part{i}.dat").write_bytes(os.urandom(MiB))
    git.commit(work, {}, "big")
    baseline = d.rss()
    with PeakRss(d) as push_rss:
        git.run("-c", "http.postBuffer=1048576", "-c", "pack.window=0", "push", "-q", d.git_url("big/blob.git", "admin"),
                "main", cwd=work)
    with PeakRss(d) as clone_rss:
        git.run("clone", "-q", "--no-checkout", d.git_url("big/blob.git", "admin"), str(tmp_path / "c"))
    assert git.out("rev-parse", "HEAD", cwd=tmp_path / "c") == git.out("rev-parse", "HEAD", cwd=work)
    growth_push = (push_rss.peak - baseline) / MiB
    growth_clone = (clone_rss.peak - baseline) / MiB
    print(f"\ndaemon RSS baseline {baseline / MiB:.1f} MiB; push of 128 MiB +{growth_push:.1f} MiB; "
          f"clone +{growth_clone:.1f} MiB")
    assert growth_push < 40, f"push grew the daemon by {growth_push:.1f} MiB"
    assert growth_clone < 40, f"clone grew the daemon by {growth_clone:.1f} MiB"


def _receiving_pack(pid: int, at_least: int) -> bool:
    """Has a git process under the daemon (receive-pack, index-pack, unpack-objects) read
    ``at_least`` bytes of a pack?"""
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "pack" in " ".join(child.cmdline()) and child.io_counters().read_chars >= at_least:
                return True
        except psutil.Error:
            continue
    return False


def test_sigterm_lets_inflight_push_finish(git, tmp_path):
    """SIGTERM mid-push: the push completes, new connections are refused, the daemon exits 0."""
    d = start_daemon()
    try:
        d.ok("POST", "/api/v1/namespaces", body={"name": "t"})
        d.ok("POST", "/api/v1/models", body={"namespace": "t", "name": "m"})
        work = git.new_repo(tmp_path / "w")
        for i in range(8):
            (work / f"data{i}.dat").write_bytes(os.urandom(5 * MiB))
        git.commit(work, {}, "data")
        # Throttle the client so the push is surely in flight when the signal lands.
        push = subprocess.Popen(
            ["git", "-c", "http.postBuffer=65536", "push", "-q", d.git_url("t/m.git", "admin"), "main"],
            cwd=work, env={**git.env, "GIT_HTTP_LOW_SPEED_LIMIT": "0"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # The signal must land while the pack itself streams in: git sends a probe request first
        # (postBuffer), and a SIGTERM between the probe and the push is a new connection refused,
        # which is right, but not what this test is about. So wait until one of the daemon's git
        # children has read a MiB of the pack.
        deadline = time.time() + 60
        while not _receiving_pack(d.proc.pid, MiB):
            assert time.time() < deadline and push.poll() is None, d.log()
            time.sleep(0.005)
        d.proc.send_signal(signal.SIGTERM)
        rc = push.wait(120)
        assert rc == 0, push.stderr.read()
        assert d.proc.wait(60) == 0
        assert '"stopped"' in d.log()
        with pytest.raises(OSError):
            http("GET", d.url + "/healthz")
    finally:
        d.stop(signal.SIGKILL)
