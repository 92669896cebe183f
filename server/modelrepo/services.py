"""The composition root: every service built once, from the settings, in one place.

The daemon (``daemon.py`` → ``app.create_app``) and the admin CLI (``cli/common.run_service``)
both start here, so a command run from the shell goes through exactly the objects, rules and
settings a request does. ``app.create_app`` only wires these into HTTP; nothing else constructs a
service. Building is synchronous and cheap (no network, no task started): opening the catalog runs
pending migrations, the S3 client connects on first use, the webhook worker starts with the app.
"""

from dataclasses import dataclass

from modelrepo.accounts.auth_guard import FailureLimiter
from modelrepo.accounts.service import Accounts
from modelrepo.accounts.signing_keys import load_or_create_key
from modelrepo.catalog.db import Catalog
from modelrepo.git import repos
from modelrepo.git.runner import GitRunner
from modelrepo.hub.commits import HubCommits
from modelrepo.hub.service import Hub
from modelrepo.inspect.service import Inspections
from modelrepo.lfs.action_tokens import ActionSigner
from modelrepo.lfs.locks import Locks
from modelrepo.lfs.service import Lfs
from modelrepo.metrics import Metrics
from modelrepo.models.deployments import Deployments
from modelrepo.models.service import Models
from modelrepo.models.webhook_worker import WebhookWorker
from modelrepo.models.webhooks import Webhooks
from modelrepo.push.effects import PushEffects
from modelrepo.push.judge import Judge
from modelrepo.push.receive import Receive
from modelrepo.push.ref_changes import RefChanges
from modelrepo.push.sessions import PushSessions
from modelrepo.settings import Settings
from modelrepo.storage import open_store
from modelrepo.xet.service import Xet
from modelrepo.xet.store import XetBackedStore, xet_view


@dataclass(frozen=True)
class Services:
    settings: Settings
    catalog: Catalog
    signing_key: bytes  # in the catalog, the same for every process (accounts/signing_keys.py)
    metrics: Metrics
    limiter: FailureLimiter
    accounts: Accounts
    worker: WebhookWorker
    webhooks: Webhooks
    models: Models
    git: GitRunner
    effects: PushEffects
    judge: Judge
    deployments: Deployments
    refs: RefChanges
    pushes: PushSessions
    store: XetBackedStore  # the verified store, with files uploaded through Xet readable as LFS objects
    inspections: Inspections
    lfs: Lfs
    locks: Locks
    receive: Receive
    hub: Hub
    hub_commits: HubCommits
    xet: Xet

    async def close(self) -> None:
        """Release what the services hold (the store's client, the catalog's connections); running
        inspections finish first, their reads need both."""
        try:
            await self.inspections.drain()
            await self.store.close()
        finally:
            await self.catalog.close()


def build_services(settings: Settings) -> Services:
    """Every service, wired to the others it needs. The webhook worker is built (its ``wake`` is
    what services call after committing events) but not started: the daemon starts it; a CLI
    command's events wait in the outbox for the daemon's worker."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog.open(settings.catalog_url, pool_size=settings.catalog.pool_size,
                           max_overflow=settings.catalog.max_overflow, lock_timeout=settings.catalog.lock_timeout,
                           idle_timeout=settings.catalog.idle_in_transaction_timeout)
    signing_key = load_or_create_key(catalog, legacy=settings.secret_key_path)
    metrics = Metrics()
    accounts = Accounts(catalog)
    worker = WebhookWorker(catalog, settings.webhooks, metrics)
    models = Models(catalog, accounts, repos.RepoStore(settings.repos_dir), settings.git.default_branch, worker.wake)
    git = GitRunner(settings.git.binary, settings.limits.max_git_processes, settings.limits.max_git_processes_per_client)
    effects = PushEffects(catalog, models.path, worker.wake, settings.push.model_card_schema)
    store = xet_view(open_store(settings), catalog)
    # What is inside stored files: read after each LFS upload, judged at every door, shown by the APIs.
    inspections = Inspections(catalog, store)
    deployments = Deployments(catalog, models, tuple(settings.deploy.required_fields), worker.wake,
                              lambda m: f"{settings.server.base_url()}/{m.full_name}.git",
                              settings.push.model_card_schema, inspections=inspections,
                              require_safe_weights=settings.deploy.require_safe_weights)
    lfs = Lfs(catalog, models, store, ActionSigner(signing_key), settings.lfs,
              on_verified=inspections.schedule)
    locks = Locks(catalog)
    # One judge for git pushes, REST ref changes and Hub commits alike.
    judge = Judge(settings.push, base_url=settings.server.base_url(), git=git, pins=deployments.live_refs,
                  linked=lfs.linked_sizes, locks=locks.held_by_others, inspections=inspections)
    refs = RefChanges(models, effects, judge)
    return Services(
        settings=settings,
        catalog=catalog,
        signing_key=signing_key,
        metrics=metrics,
        limiter=FailureLimiter(catalog, settings.auth.max_failures, settings.auth.failure_window),
        accounts=accounts,
        worker=worker,
        webhooks=Webhooks(catalog, settings.webhooks, worker.wake),
        models=models,
        git=git,
        effects=effects,
        judge=judge,
        deployments=deployments,
        refs=refs,
        pushes=PushSessions(),
        store=store,
        inspections=inspections,
        lfs=lfs,
        locks=locks,
        receive=Receive(models, judge, effects, metrics),
        hub=Hub(models, accounts, refs, inspections),
        hub_commits=HubCommits(models, lfs, judge, effects, git, settings.limits.max_commit_body),
        xet=Xet(catalog, models, lfs, store.files, lfs.signer, settings.lfs.action_expiry),
    )
