"""Prometheus metrics (prometheus-client), one registry per application.

Request counts, durations and bytes are recorded by the access logger once a response is done,
so streamed git and LFS bodies count in full; routes are labelled by their pattern
(/api/v1/models/{ns}/{name}), never by the raw path, to keep cardinality bounded.

Worker processes (``server.workers`` > 1) run prometheus-client's multiprocess mode: the
supervisor sets PROMETHEUS_MULTIPROC_DIR before it starts them (the client reads it at import),
every process writes its values to files there, and whichever worker answers /metrics reads them
all, so counters sum across workers. A gauge says how it combines: transfers in progress add up
over the live workers; the queue depth, a catalog-wide count every worker may take, is the latest
any live worker took.
"""

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


def protocol_of(path: str) -> str:
    if "/info/lfs/" in path:
        return "lfs"
    if path.startswith("/xet/"):
        return "xet"
    if path.endswith(("/info/refs", "/git-upload-pack", "/git-receive-pack")):
        return "git"
    if path.startswith("/api/v1/"):
        return "api"
    if path.startswith("/api/") or "/resolve/" in path:
        return "hub"
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("modelrepo_http_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.duration = Histogram("modelrepo_http_request_duration_seconds", "HTTP request duration",
                                  ["route", "method"], registry=r,
                                  buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))
        self.bytes_in = Counter("modelrepo_bytes_in_total", "Request body bytes by protocol", ["protocol"], registry=r)
        self.bytes_out = Counter("modelrepo_bytes_out_total", "Response body bytes by protocol", ["protocol"],
                                 registry=r)
        self.active = Gauge("modelrepo_active_transfers", "Git RPCs and LFS transfers in progress", ["protocol"],
                            registry=r, multiprocess_mode="livesum")
        self.pushes = Counter("modelrepo_pushes_total", "Pushes judged by pre-receive", ["outcome", "reason"],
                              registry=r)
        self.deliveries = Counter("modelrepo_webhook_deliveries_total", "Webhook delivery attempts by outcome",
                                  ["outcome"], registry=r)
        self.queue = Gauge("modelrepo_webhook_queue_depth", "Webhook deliveries pending", registry=r,
                           multiprocess_mode="livemostrecent")
        self.storage_errors = Counter("modelrepo_storage_errors_total", "Object store errors", registry=r)
        self.auth_failures = Counter("modelrepo_auth_failures_total", "Failed authentications", ["limited"],
                                     registry=r)

    def observe(self, route: str, method: str, status: int, seconds: float, path: str,
                bytes_in: int | None, bytes_out: int | None) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.duration.labels(route, method).observe(seconds)
        proto = protocol_of(path)
        if bytes_in:
            self.bytes_in.labels(proto).inc(bytes_in)
        if bytes_out:
            self.bytes_out.labels(proto).inc(bytes_out)

    def render(self) -> bytes:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        MultiProcessCollector(combined, path=directory)
        return generate_latest(combined)
