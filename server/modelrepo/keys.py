"""Every piece of application state, declared once as a typed ``web.AppKey``."""

from pathlib import Path

from aiohttp import web

from modelrepo.catalog.db import Catalog
from modelrepo.drain import InFlight
from modelrepo.metrics import Metrics
from modelrepo.accounts.auth_guard import FailureLimiter
from modelrepo.accounts.service import Accounts
from modelrepo.models.deployments import Deployments
from modelrepo.git.runner import GitRunner
from modelrepo.hub.service import Hub
from modelrepo.hub.commits import HubCommits
from modelrepo.inspect.service import Inspections
from modelrepo.lfs.service import Lfs
from modelrepo.lfs.locks import Locks
from modelrepo.models.service import Models
from modelrepo.push.sessions import PushSessions
from modelrepo.push.receive import Receive
from modelrepo.push.ref_changes import RefChanges
from modelrepo.models.webhook_worker import WebhookWorker
from modelrepo.models.webhooks import Webhooks
from modelrepo.services import Services
from modelrepo.settings import Settings
from modelrepo.xet.service import Xet

SERVICES = web.AppKey("services", Services)
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
INSPECTIONS = web.AppKey("inspections", Inspections)
XET = web.AppKey("xet", Xet)
# The unix socket this process serves the hook API on; git's hook environment points at it.
HOOK_SOCKET = web.AppKey("hook_socket", Path)
