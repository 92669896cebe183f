import shutil

import pytest

from modelrepo.app import create_app
from modelrepo.daemon import bootstrap
from modelrepo.keys import ACCOUNTS
from modelrepo.settings import load_settings

from ..helpers import run_catalog_url, seed_catalog, short_tmpdir


class Api:
    """An in-process client with named identities: ``await api.call("alice", "GET", path)``."""

    def __init__(self, client, admin_token: str) -> None:
        self.client = client
        self.tokens = {"admin": admin_token}

    async def call(self, who, method, path, json=None, **kw):
        headers = dict(kw.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return await self.client.request(method, path, json=json, headers=headers, **kw)

    async def ok(self, who, method, path, json=None):
        resp = await self.call(who, method, path, json)
        assert resp.status < 300, (method, path, resp.status, await resp.text())
        return await resp.json() if resp.status != 204 else None

    async def user(self, name, *, scope="write", admin=False, ns=None, role=None):
        await self.ok("admin", "POST", "/api/v1/users", {"name": name, "admin": admin})
        body = await self.ok("admin", "POST", f"/api/v1/users/{name}/tokens", {"scopes": [scope]})
        self.tokens[name] = body["token"]
        if ns:
            await self.ok("admin", "PUT", f"/api/v1/namespaces/{ns}/members/{name}", {"role": role})
        return body["token"]


@pytest.fixture
def settings():
    tmp = short_tmpdir()
    url = run_catalog_url(tmp / "data")
    settings = load_settings(None, environ={}, overrides={"data_dir": str(tmp / "data"), "limits.max_json_body": 4096,
                                                         **({"catalog.url": url} if url else {})})
    if url is None:
        seed_catalog(settings.data_dir)  # a migrated copy: the app still runs migrate(), which finds nothing to do
    yield settings
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def api(aiohttp_client, settings):
    app = create_app(settings)
    await bootstrap(settings, app[ACCOUNTS])
    client = await aiohttp_client(app)
    return Api(client, settings.admin_token_path.read_text().strip())
