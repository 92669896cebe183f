"""Pieces both benchmarks use: free loopback ports, stopping servers, sampling a process's RSS."""

import socket
import subprocess
import threading

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RssSampler(threading.Thread):
    """Samples one process's RSS every `interval` seconds until stopped. ``tree``: the largest RSS
    among the process and its descendants (a supervisor's workers each hold their own memory)."""

    def __init__(self, pid: int, interval: float = 0.05, tree: bool = False) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.tree = tree
        self.baseline = self._rss()
        self.peak = self.last = self.baseline
        self._stopped = threading.Event()

    def _rss(self) -> int:
        if not self.tree:
            return self.process.memory_info().rss
        largest = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                largest = max(largest, child.memory_info().rss)
            except psutil.Error:
                pass
        return largest

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.last = self._rss()
            except psutil.Error:
                return
            self.peak = max(self.peak, self.last)

    def stop(self) -> None:
        self._stopped.set()
        self.join()
