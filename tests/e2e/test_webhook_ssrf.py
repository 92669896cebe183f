"""The webhook SSRF guard, end to end: a real daemon with its default settings refuses internal
targets when a webhook is saved, re-checks the addresses at delivery (after a SIGHUP narrows the
allow list, as DNS rebinding would change them), never follows redirects, and lets the operator opt
hosts in with ``webhooks.allowed_hosts``. Real HTTP receivers on loopback."""

import shutil
import signal
import time

import pytest
from aiohttp import web

from ..helpers import WEBHOOK_OPT_IN, short_tmpdir, start_daemon
from .test_hooks_webhooks import Receiver

DEFAULTS = {key: None for key in WEBHOOK_OPT_IN}  # no opt-in: the guard as shipped
HOOKS = "/api/v1/namespaces/acme/webhooks"

REFUSED = [
    ("http://127.0.0.1:9/hook", "loopback"),
    ("http://localhost:9/hook", "loopback"),  # a name: resolved at create time
    ("http://0x7f.1/hook", "loopback"),  # a legacy numeric form the resolver maps to 127.0.0.1
    ("http://[::1]/hook", "loopback"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://10.0.0.5/hook", "private"),
    ("https://172.16.3.4/hook", "private"),
    ("http://192.168.1.1:8080/hook", "private"),
    ("http://[fd00::1]/hook", "unique-local"),
    ("http://0.0.0.0:8080/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://[::ffff:127.0.0.1]/hook", "IPv4-mapped loopback"),
    ("http://[::ffff:169.254.169.254]/hook", "IPv4-mapped link-local"),
    ("http://[::ffff:10.0.0.1]/hook", "IPv4-mapped private"),
    ("http://100.64.0.1/hook", "not globally routable"),
]


def _daemon(tmp_path, allowed_hosts=None, **webhooks):
    """A daemon reading its webhook settings from a config file (so SIGHUP can change them)."""
    cfg = tmp_path / "config.yaml"
    _write_config(cfg, allowed_hosts, **webhooks)
    d = start_daemon(args=["--config", str(cfg)], extra_env=DEFAULTS)
    d.config = cfg
    d.ok("POST", "/api/v1/namespaces", body={"name": "acme"})
    return d


def _write_config(cfg, allowed_hosts, **webhooks):
    lines = ["webhooks:", "  backoff_base: 0.2", "  backoff_max: 1"]
    lines += [f"  {k}: {v}" for k, v in webhooks.items()]
    if allowed_hosts is not None:
        lines.append(f"  allowed_hosts: {allowed_hosts!r}")
    cfg.write_text("\n".join(lines) + "\n")


def _stop(d):
    assert d.stop() == 0, d.log()[-3000:]
    shutil.rmtree(d.data.parent, ignore_errors=True)


def _latest_delivery(d, hook_id, done, timeout=60):  # bounds a hang only
    deadline = time.time() + timeout
    while True:
        rows = d.ok("GET", f"{HOOKS}/{hook_id}/deliveries")
        if rows and done(rows[0]) or time.time() > deadline:
            return rows[0] if rows else None
        time.sleep(0.05)


def test_internal_targets_are_refused_when_saved(tmp_path):
    d = _daemon(tmp_path)
    try:
        for url, kind in REFUSED:
            r = d.api("POST", HOOKS, body={"url": url, "secret": "k", "events": ["model.created"]})
            assert r.status == 400, (url, r.status, r.body)
            text = r.body.decode()
            assert kind in text and "webhooks.allowed_hosts" in text, (url, text)
        assert d.ok("GET", HOOKS) == []  # nothing was saved

        # A public target is fine; changing it to an internal one is refused and changes nothing.
        hook = d.ok("POST", HOOKS, body={"url": "http://1.1.1.1/hook", "secret": "k", "events": ["model.deleted"]})
        r = d.api("PATCH", f"{HOOKS}/{hook['id']}", body={"url": "http://localhost/hook"})
        assert r.status == 400 and b"loopback" in r.body, r.body
        assert d.ok("GET", f"{HOOKS}/{hook['id']}")["url"] == "http://1.1.1.1/hook"
    finally:
        _stop(d)


def test_opt_in_then_delivery_time_check_after_reload(tmp_path):
    """Opted in by name (localhost) and by network (127.0.0.0/8), deliveries arrive; once the
    operator removes the opt-in (SIGHUP), the same webhooks are refused at delivery, on the
    addresses the name resolves to then, and nothing reaches the receiver."""
    d = _daemon(tmp_path, ["localhost", "127.0.0.0/8"], max_attempts=2)
    try:
        with Receiver() as rx:
            by_name = d.ok("POST", HOOKS, body={"url": f"http://localhost:{rx.port}/hook", "secret": "k",
                                               "events": ["model.created"]})
            by_address = d.ok("POST", HOOKS, body={"url": rx.url, "secret": "k", "events": ["model.created"]})
            d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "first"})
            assert len(rx.wait(2)) == 2
            assert {r["headers"]["X-Modelrepo-Event"] for r in rx.requests} == {"model.created"}

            _write_config(d.config, [], max_attempts=2)
            d.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 60  # bounds a hang only: a loaded machine is slow
            while '"reloaded"' not in d.log():
                assert time.time() < deadline, d.log()[-2000:]
                time.sleep(0.05)

            d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "second"})
            for hook in (by_name, by_address):
                row = _latest_delivery(d, hook["id"], lambda r: r["status"] == "failed")
                assert row["status"] == "failed" and row["attempts"] == 2, row
                assert row["response_code"] is None and "loopback" in row["error"], row
                assert "webhooks.allowed_hosts" in row["error"], row
            assert len(rx.requests) == 2  # nothing got through
    finally:
        _stop(d)


class Redirector(Receiver):
    """Answers every delivery with a redirect to ``location``."""

    location = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append({"headers": dict(request.headers), "body": await request.read()})
        return web.Response(status=307, headers={"Location": self.location})


def test_redirects_are_not_followed(tmp_path):
    d = _daemon(tmp_path, ["localhost"], max_attempts=1)
    try:
        with Receiver() as inner, Redirector() as outer:
            outer.location = inner.url  # a loopback address the operator did not opt in
            r = d.api("POST", HOOKS, body={"url": inner.url, "secret": "k", "events": ["model.created"]})
            assert r.status == 400 and b"loopback" in r.body  # the name is trusted, the address is not
            hook = d.ok("POST", HOOKS, body={"url": f"http://localhost:{outer.port}/hook", "secret": "k",
                                            "events": ["model.created"]})
            d.ok("POST", "/api/v1/models", body={"namespace": "acme", "name": "bounced"})
            row = _latest_delivery(d, hook["id"], lambda r: r["status"] == "failed")
            assert row["status"] == "failed" and row["response_code"] == 307, row
            assert len(outer.requests) == 1 and inner.requests == []
    finally:
        _stop(d)


@pytest.mark.parametrize("entry", ["not a host", "10.0.0.0/33"])
def test_a_bad_allowed_hosts_entry_stops_start_up(tmp_path, entry):
    cfg = tmp_path / "config.yaml"
    _write_config(cfg, [entry])
    data = short_tmpdir() / "data"
    try:
        with pytest.raises(RuntimeError, match="webhooks.allowed_hosts"):
            start_daemon(data, args=["--config", str(cfg)], extra_env=DEFAULTS)
    finally:
        shutil.rmtree(data.parent, ignore_errors=True)
