"""Every piece of application state, declared once as a typed ``web.AppKey``."""

from aiohttp import web

from .catalog.db import Catalog
from .drain import InFlight
from .metrics import Metrics
from .services.auth_guard import FailureLimiter
from .services.accounts import Accounts
from .services.deployments import Deployments
from .services.git_rpc import GitRunner
from .services.hub import Hub
from .services.hub_commit import HubCommits
from .services.lfs import Lfs
from .services.locks import Locks
from .services.models import Models
from .services.pushes import PushSessions
from .services.receive import Receive
from .services.ref_changes import RefChanges
from .services.webhook_worker import WebhookWorker
from .services.webhooks import Webhooks
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
CATALOG = web.AppKey("catalog", Catalog)
ACCOUNTS = web.AppKey("accounts", Accounts)
MODELS = web.AppKey("models", Models)
GIT = web.AppKey("git", GitRunner)
PUSHES = web.AppKey("pushes", PushSessions)
INFLIGHT = web.AppKey("inflight", InFlight)
LFS = web.AppKey("lfs", Lfs)
LOCKS = web.AppKey("locks", Locks)
WEBHOOKS = web.AppKey("webhooks", Webhooks)
WORKER = web.AppKey("webhook_worker", WebhookWorker)
DEPLOYMENTS = web.AppKey("deployments", Deployments)
REFS = web.AppKey("ref_changes", RefChanges)
RECEIVE = web.AppKey("receive", Receive)
HUB = web.AppKey("hub", Hub)
HUB_COMMITS = web.AppKey("hub_commits", HubCommits)
METRICS = web.AppKey("metrics", Metrics)
LIMITER = web.AppKey("limiter", FailureLimiter)
