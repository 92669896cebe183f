"""Several processes on one catalog: what each used to decide alone is decided in the catalog.

Every "process" here is its own set of services over its own engine on the same catalog (and, for
the daemon tests, its own OS process), so the catalog is the only thing they share: two webhook
workers deliver each event once, a claimer killed mid-delivery is taken over after its lease with
the same delivery id, the brute-force budget is one budget, the admin and the signing key are
created once, and racing creates, unlocks and start-up recoveries come out as one would alone.
The service-level tests run on SQLite and, where the catalog accepts a PostgreSQL URL, on
PostgreSQL (the ``pg_server`` fixture).
"""

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import web

from modelrepo.accounts.signing_keys import ACTIONS, load_or_create_key
from modelrepo.catalog.schema import (auth_failures, deliveries, delivery_attempts, deployments, model_refs, models,
                                      signing_keys, users)
from modelrepo.errors import Conflict, Forbidden, InsufficientStorage, NotFound
from modelrepo.lfs.action_tokens import ActionSigner
from modelrepo.models.webhook_worker import lease_seconds
from modelrepo.models.webhooks import enqueue
from modelrepo.ops.converge import converge_catalog, find_drift
from modelrepo.push.rules import ZERO, RefUpdate
from modelrepo.services import Services, build_services
from modelrepo.settings import ConfigError, load_settings

from ..helpers import catalog_sql, free_port, http, short_tmpdir, start_daemon, rmtree

ENGINES = ["sqlite", "postgresql"]


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(params=ENGINES)
async def close_all(request):
    """``close_all()`` builds another process's worth of services on one catalog (one data dir);
    all are closed at the end of the test. ``close_all.settings`` are the settings they share."""
    tmp = short_tmpdir()
    overrides = {"data_dir": str(tmp / "data"), "webhooks.allowed_hosts": ["127.0.0.1"], "webhooks.timeout": 1.0,
                 "webhooks.backoff_base": 0.2}
    if request.param == "postgresql":
        try:
            load_settings(None, environ={}, overrides={**overrides, "catalog.url": "postgresql://x@127.0.0.1/x"})
        except ConfigError:
            rmtree(tmp)
            pytest.skip("this branch has no PostgreSQL catalog (catalog.url): merge branch pg")
        overrides["catalog.url"] = request.getfixturevalue("pg_server").url()
    made: list[Services] = []

    def make() -> Services:
        made.append(build_services(make.settings))
        return made[-1]

    make.settings = load_settings(None, environ={}, overrides=overrides)
    make.overrides = overrides
    yield make
    for services in made:
        await services.close()
    rmtree(tmp)


class Receiver:
    """A real webhook receiver on loopback: records (delivery id, attempt) of every POST; a
    delivery id in ``hang`` is held open (the sender's attempt never completes) on its first try."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.hang: set[str] = set()
        self.hung = asyncio.Event()
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        delivery = request.headers["X-Modelrepo-Delivery"]
        self.seen.append((delivery, request.headers["X-Modelrepo-Attempt"]))
        if delivery in self.hang:
            self.hang.discard(delivery)
            self.hung.set()
            await asyncio.sleep(3600)
        return web.Response(text="ok")

    async def __aenter__(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def _admin(services: Services):
    token = await services.accounts.bootstrap_admin()
    return await services.accounts.authenticate(token)


async def _model_with_webhook(services: Services, url: str, name: str = "m") -> tuple:
    admin = await _admin(services)
    await services.accounts.create_namespace("team")
    model = await services.models.create(admin, "team", name, check_access=False)
    await services.webhooks.create(namespace_id=model.namespace_id, model_id=None, url=url, secret="s3cret",
                                   events=["push", "tag.created", "model.created", "model.deleted"])
    return admin, model


async def _queue(services: Services, model, count: int) -> list[str]:
    async with services.catalog.tx() as conn:
        for i in range(count):
            await enqueue(conn, namespace_id=model.namespace_id, model_id=model.id, event="push",
                          payload={"event": "push", "n": i})
        return list((await conn.execute(sa.select(deliveries.c.id).where(deliveries.c.status == "pending")))
                    .scalars())


async def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _statuses(services: Services) -> dict[str, str]:
    async with services.catalog.read() as conn:
        return {r.id: r.status for r in await conn.execute(sa.select(deliveries.c.id, deliveries.c.status))}


async def _attempts(services: Services) -> list[tuple[str, int]]:
    async with services.catalog.read() as conn:
        return [(r.delivery_id, r.attempt) for r in await conn.execute(
            sa.select(delivery_attempts.c.delivery_id, delivery_attempts.c.attempt))]


# -- the webhook outbox ------------------------------------------------------------------------------

async def test_two_workers_deliver_every_event_exactly_once(close_all):
    a, b = close_all(), close_all()
    async with Receiver() as receiver:
        _, model = await _model_with_webhook(a, receiver.url)
        # Queued before either worker runs, so both find the same due rows at once.
        ids = await _queue(a, model, 40)
        assert len(ids) == 40
        await asyncio.gather(a.worker.start(), b.worker.start())
        try:
            async def all_delivered() -> bool:
                return set((await _statuses(a)).values()) == {"delivered"}
            await _wait(all_delivered, "every delivery to be marked delivered")
        finally:
            await asyncio.gather(a.worker.stop(), b.worker.stop())
        assert sorted(d for d, _ in receiver.seen) == sorted(ids), "each delivery id exactly once"
        assert {n for _, n in receiver.seen} == {"1"}
        assert sorted(await _attempts(b)) == sorted((i, 1) for i in ids), "one recorded attempt each"
        async with a.catalog.read() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(deliveries)
                                       .where(deliveries.c.claimed_by.is_not(None)))).scalar() == 0


async def test_a_killed_claimer_is_taken_over_after_its_lease_with_the_same_delivery_id(close_all):
    """A real process claims a delivery and is SIGKILLed while its POST hangs; the other worker
    leaves the row alone while the lease runs, then delivers it under the same id."""
    b = close_all()
    settings = close_all.settings
    async with Receiver() as receiver:
        _, model = await _model_with_webhook(b, receiver.url)
        async with b.catalog.tx() as conn:  # only the one event under test
            await conn.execute(deliveries.delete())
        [delivery] = await _queue(b, model, 1)
        receiver.hang.add(delivery)
        # Its attempt may take 3 s: it is killed while the POST hangs, before it could time out.
        claimer = {**close_all.overrides, "webhooks.timeout": 3.0}
        script = ("import asyncio, sys\n"
                  "from modelrepo.services import build_services\n"
                  "from modelrepo.settings import load_settings\n"
                  "async def main():\n"
                  f"    s = build_services(load_settings(None, environ={{}}, overrides={json.dumps(claimer)}))\n"
                  "    await s.worker.start()\n"
                  "    await asyncio.sleep(3600)\n"
                  "asyncio.run(main())\n")
        proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
        try:
            await asyncio.wait_for(receiver.hung.wait(), 60)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        killed_at = time.time()
        async with b.catalog.read() as conn:
            row = (await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery))).one()
        assert row.claimed_by and row.lease_until > killed_at and row.status == "pending"
        # While the dead claimer's lease runs, nobody takes the row.
        assert await b.worker.claim() == []
        await b.worker.start()
        try:
            async def delivered() -> bool:
                return (await _statuses(b))[delivery] == "delivered"
            await _wait(delivered, "the take-over after the lease", timeout=lease_seconds(settings.webhooks) + 30)
        finally:
            await b.worker.stop()
        assert time.time() >= row.lease_until, "taken over only once the lease had passed"
        assert [d for d, _ in receiver.seen] == [delivery, delivery], "the same delivery id on the retry"
        assert await _attempts(b) == [(delivery, 1)], "only the holder's attempt is recorded"


async def test_an_outcome_is_recorded_only_while_the_claim_holds(close_all):
    a, b = close_all(), close_all()
    async with Receiver() as receiver:
        _, model = await _model_with_webhook(a, receiver.url)
        ids = await _queue(a, model, 2)
        stale = await a.worker.claim()
        assert sorted(r.id for r in stale) == sorted(ids)
        assert await b.worker.claim() == [], "claimed rows are not claimed twice"
        async with a.catalog.tx() as conn:  # a's lease passes (a hung past it)
            await conn.execute(deliveries.update().values(lease_until=time.time() - 1))
        await b.worker.start()
        try:
            assert await b.worker.run_once() == 2
        finally:
            await b.worker.stop()
        await a.worker.start()
        try:
            await asyncio.gather(*(a.worker._attempt(r) for r in stale))  # the late claimer finishes
        finally:
            await a.worker.stop()
        assert sorted(await _attempts(a)) == sorted((i, 1) for i in ids)
        assert set((await _statuses(a)).values()) == {"delivered"}


# -- bootstrap admin and signing key -------------------------------------------------------------------

async def test_admin_and_signing_key_are_created_once_by_processes_starting_together(close_all):
    legacy = close_all.settings.secret_key_path
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_bytes(os.urandom(32))
    made = [close_all() for _ in range(4)]
    assert {s.signing_key for s in made} == {legacy.read_bytes()}, "the old key is imported, once"
    tokens = await asyncio.gather(*(s.accounts.bootstrap_admin() for s in made))
    assert len([t for t in tokens if t]) == 1, tokens
    async with made[0].catalog.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar() == 1
        assert (await conn.execute(sa.select(sa.func.count()).select_from(signing_keys))).scalar() == 1
    # A token signed by one process is honoured by every other.
    token = ActionSigner(made[0].signing_key).sign("download", "1.2", "a" * 64, 1, 60)
    assert ActionSigner(made[3].signing_key).verify(token) is not None


async def test_signing_key_races_from_threads_agree(close_all):
    """Processes creating the key at the same moment (no file to import) all read the winner's."""
    first = close_all()
    async with first.catalog.tx() as conn:
        await conn.execute(signing_keys.delete())
    keys = await asyncio.gather(*(asyncio.to_thread(load_or_create_key, first.catalog, ACTIONS) for _ in range(6)))
    assert len(set(keys)) == 1 and len(keys[0]) == 32


# -- the brute-force guard -------------------------------------------------------------------------------

async def test_failure_budget_is_shared_and_the_table_stays_bounded(close_all):
    a, b = close_all(), close_all()
    for limiter in (a.limiter, b.limiter):
        limiter.max_failures = 5
    for _ in range(3):
        await a.limiter.record("192.0.2.7")
    for _ in range(2):
        assert await b.limiter.retry_after("192.0.2.7") is None
        await b.limiter.record("192.0.2.7")
    assert await a.limiter.retry_after("192.0.2.7") is not None, "five failures across two processes"
    assert await b.limiter.retry_after("192.0.2.7") is not None
    assert await a.limiter.retry_after("192.0.2.8") is None, "per address"
    for _ in range(10):  # a blocked address adds nothing
        await b.limiter.record("192.0.2.7")
    async with a.catalog.tx() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(auth_failures))).scalar() == 5
        await conn.execute(auth_failures.update().values(at=time.time() - a.limiter.window - 1))
    await a.limiter.record("192.0.2.9")  # the next write prunes what the window left behind
    assert await a.limiter.retry_after("192.0.2.7") is None
    async with a.catalog.read() as conn:
        assert (await conn.execute(sa.select(auth_failures.c.address))).scalars().all() == ["192.0.2.9"]


# -- check-then-act races ---------------------------------------------------------------------------------

async def test_racing_creates_of_one_model_give_one_409_and_one_repository(close_all):
    a, b = close_all(), close_all()
    admin = await _admin(a)
    await a.accounts.create_namespace("team")
    results = await asyncio.gather(*(s.models.create(admin, "team", "Same", check_access=False) for s in (a, b, a, b)),
                                   return_exceptions=True)
    assert len([r for r in results if not isinstance(r, BaseException)]) == 1, results
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException)), results
    repos_dir = close_all.settings.repos_dir / "team"
    assert [p.name for p in repos_dir.iterdir()] == ["same.git"], "no orphan or half-made repository"


async def test_model_quota_holds_against_racing_creates(close_all):
    a, b = close_all(), close_all()
    admin = await _admin(a)
    await a.accounts.create_namespace("team")
    await a.accounts.set_quota("team", bytes_=None, models_=2)
    results = await asyncio.gather(*(s.models.create(admin, "team", f"m{i}", check_access=False)
                                     for i, s in enumerate((a, b, a, b, a, b))), return_exceptions=True)
    assert len([r for r in results if not isinstance(r, BaseException)]) == 2, results
    assert all(isinstance(r, Forbidden) for r in results if isinstance(r, BaseException)), results
    assert (await b.accounts.usage((await b.accounts.get_namespace("team")).id))["models"] == 2


async def _chunks(data: bytes):
    yield data


async def test_lfs_quota_holds_against_uploads_racing_from_two_processes(close_all):
    """Each upload passed the batch's admission check; the links decide, under the namespace's
    row lock: of two 100-byte objects racing into a 150-byte quota, one is linked."""
    a, b = close_all(), close_all()
    admin = await _admin(a)
    await a.accounts.create_namespace("team")
    model = await a.models.create(admin, "team", "m", check_access=False)
    await a.accounts.set_quota("team", bytes_=150, models_=None)
    blobs = [bytes([i]) * 100 for i in range(4)]
    results = await asyncio.gather(*(s.lfs.receive(model.id, hashlib.sha256(d).hexdigest(), len(d), _chunks(d))
                                     for s, d in zip((a, b, a, b), blobs)), return_exceptions=True)
    assert len([r for r in results if r is None]) == 1, results
    assert all(isinstance(r, InsufficientStorage) for r in results if r is not None), results
    assert (await a.accounts.usage(model.namespace_id))["bytes"] == 100


async def test_racing_unlocks_of_one_lfs_lock_give_one_404(close_all):
    a, b = close_all(), close_all()
    admin = await _admin(a)
    await a.accounts.create_namespace("team")
    model = await a.models.create(admin, "team", "m", check_access=False)
    created = await asyncio.gather(*(s.locks.create(admin, model, "weights.bin", None) for s in (a, b, a, b)),
                                   return_exceptions=True)
    assert len([c for c in created if isinstance(c, dict)]) == 1, created
    lock_id = next(c for c in created if isinstance(c, dict))["id"]
    results = await asyncio.gather(*(s.locks.unlock(admin, model, lock_id, False) for s in (a, b, a, b)),
                                   return_exceptions=True)
    assert len([r for r in results if isinstance(r, dict)]) == 1, results
    assert all(isinstance(r, NotFound) for r in results if not isinstance(r, dict)), results


def _behind_the_catalog(git, bare: Path, work: Path, *refspecs: str) -> None:
    """Move refs of a model's repository the way a crash leaves them: no hook, no catalog update
    (a fetch into the bare repository runs no receive hooks)."""
    git.run("--git-dir", str(bare), "fetch", "--quiet", str(work), *refspecs)


async def test_two_recoveries_at_once_announce_a_lost_push_once(close_all, git, tmp_path):
    """A ref moved while no daemon followed it (the crash converge heals); two replicas starting
    together both find the drift, and the lost push is announced once."""
    a, b = close_all(), close_all()
    async with Receiver() as receiver:
        _, model = await _model_with_webhook(a, receiver.url)
        work = git.new_repo(tmp_path / "w", {"README.md": "hello\n"})
        bare = a.models.path(model)
        _behind_the_catalog(git, bare, work, "HEAD:refs/heads/main")
        url = lambda name: f"http://example.invalid/{name}.git"  # noqa: E731
        found = await asyncio.gather(converge_catalog(a.catalog, a.models, a.effects, url, announce=True),
                                     converge_catalog(b.catalog, b.models, b.effects, url, announce=True))
        assert any(found), "the drift was found"
        async with a.catalog.read() as conn:
            events = (await conn.execute(sa.select(deliveries.c.event).where(deliveries.c.event == "push"))).all()
        assert len(events) == 1, events
        assert await find_no_drift(a)


async def find_no_drift(services: Services) -> bool:
    return await find_drift(services.catalog, services.models) == []


CARD = "---\nlibrary_name: transformers\npipeline_tag: text-generation\n---\n# m\n"


async def test_delete_and_deployment_request_never_both_win(close_all, git, tmp_path):
    """Deleting a model while another process requests a deployment of it: either the delete
    refuses (the model is pinned) or the request finds no model; never a deleted model with a
    live deployment, never a deployment of a model that is gone."""
    a, b = close_all(), close_all()
    admin = await _admin(a)
    await a.accounts.create_namespace("team")
    work = git.new_repo(tmp_path / "w", {"README.md": CARD})
    git.run("tag", "-a", "v1", "-m", "release", cwd=work)
    for round_ in range(4):
        name = f"m{round_}"
        model = await a.models.create(admin, "team", name, check_access=False)
        _behind_the_catalog(git, a.models.path(model), work, "HEAD:refs/heads/main", "refs/tags/v1:refs/tags/v1")
        deleted, requested = await asyncio.gather(
            a.models.delete(admin, "team", name),
            b.deployments.create(admin, "team", name, {"name": "prod", "revision": "v1"}), return_exceptions=True)
        async with a.catalog.read() as conn:
            left = (await conn.execute(sa.select(sa.func.count()).select_from(models)
                                       .where(models.c.name == name))).scalar()
            live = (await conn.execute(sa.select(sa.func.count()).select_from(deployments)
                                       .where(deployments.c.model_id == model.id))).scalar()
        if left:  # the deployment won: the delete was refused because of it
            assert live == 1 and isinstance(deleted, Conflict) and isinstance(requested, dict), (deleted, requested)
        else:  # the delete won: the request found no model
            assert live == 0 and deleted is None and isinstance(requested, NotFound), (deleted, requested)


async def test_a_push_finishing_after_another_process_deleted_the_model_changes_nothing(close_all, git, tmp_path):
    """post-receive of a push that raced a delete: the model's rows are gone (the delete won the
    row lock); the rebuild leaves them gone and announces nothing, instead of failing the push's
    hook with a foreign-key error."""
    a, b = close_all(), close_all()
    admin, model = await _model_with_webhook(a, "http://127.0.0.1:9/hook")
    work = git.new_repo(tmp_path / "w", {"README.md": "hello\n"})
    _behind_the_catalog(git, a.models.path(model), work, "HEAD:refs/heads/main")
    head = git.out("rev-parse", "HEAD", cwd=work)
    snapshot = a.models.path(model)
    kept = tmp_path / "kept.git"
    shutil.copytree(snapshot, kept)  # what receive-pack still has open when the delete lands
    await b.models.delete(admin, "team", "m")
    a.effects.path_of = lambda _m: kept
    await a.effects.apply(model, [RefUpdate(ZERO, head, "refs/heads/main")], pusher="admin", clone_url="x")
    async with a.catalog.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(model_refs))).scalar() == 0
        assert (await conn.execute(sa.select(deliveries.c.event))).scalars().all() == ["model.deleted"]


# -- two daemons on one catalog ---------------------------------------------------------------------------

def test_two_daemons_starting_together_share_one_admin_one_key_and_one_failure_budget():
    """Two real daemons on one data directory, started at the same moment: one creates the admin
    (and writes admin.token), both sign with the one key, and failed logins at either count
    against one budget."""
    data = short_tmpdir() / "data"
    data.mkdir()
    # Not migrated beforehand: both daemons find a fresh catalog and race to migrate it too.
    env = {"MODELREPO_AUTH__MAX_FAILURES": "4"}
    with ThreadPoolExecutor(2) as pool:  # launched together, each waited for until it serves
        starts = [pool.submit(start_daemon, data, extra_env=env, seed=False) for _ in range(2)]
    daemons = [f.result() for f in starts if f.exception() is None]
    try:
        for f in starts:
            f.result()  # a daemon that failed to start fails the test; the other is stopped below
        created = [d for d in daemons if "created user 'admin'" in d.log()]
        assert len(created) == 1, [d.log()[-2000:] for d in daemons]
        token = (data / "admin.token").read_text().strip()
        for d in daemons:
            d.tokens["admin"] = token
            assert d.ok("GET", "/api/v1/user")["name"] == "admin"
        assert catalog_sql(data, "select count(*) from users") == [(1,)]
        assert catalog_sql(data, "select count(*) from signing_keys") == [(1,)]
        # An LFS upload action planned by one daemon is accepted by the other.
        a, b = daemons
        a.ok("POST", "/api/v1/namespaces", body={"name": "team"})
        a.ok("POST", "/api/v1/models", body={"namespace": "team", "name": "m"})
        payload = b"shared key"
        oid = hashlib.sha256(payload).hexdigest()
        r = http("POST", f"{a.url}/team/m.git/info/lfs/objects/batch", token=token,
                 body={"operation": "upload", "objects": [{"oid": oid, "size": len(payload)}], "transfers": ["basic"]},
                 headers={"Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"})
        assert r.status == 200, r.body
        action = r.json()["objects"][0]["actions"]["upload"]
        href = action["href"].replace(a.url, b.url)
        assert http("PUT", href, raw=payload, headers=action["header"]).status == 200
        # Failed logins: 2 at each daemon use up the budget of 4 at both.
        for d in (a, a, b, b):
            assert http("GET", d.url + "/api/v1/user", token="mr_wrong").status == 401
        for d in daemons:
            assert http("GET", d.url + "/api/v1/user", token="mr_wrong").status == 429
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.stop(signal.SIGTERM)
        rmtree(data.parent)
