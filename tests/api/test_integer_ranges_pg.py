"""Numbers from clients past what the catalog's INTEGER columns hold, on PostgreSQL (where INTEGER
is 32-bit, and an overflowing query parameter was a 500 where SQLite said 404): ids past the range
are "not found", a model quota past it is a 400, and byte quotas keep the 64-bit BIGINT range."""

import shutil

import pytest

from modelrepo.catalog.ranges import MAX_INTEGER
from modelrepo.settings import load_settings

from ..helpers import short_tmpdir


@pytest.fixture
def settings(pg_server):  # the ``api`` fixture's app, on a fresh PostgreSQL database
    tmp = short_tmpdir()
    yield load_settings(None, environ={}, overrides={"data_dir": str(tmp / "data"), "catalog.url": pg_server.url()})
    shutil.rmtree(tmp, ignore_errors=True)


async def test_ids_past_a_32_bit_integer_are_404(api):
    await api.ok("admin", "POST", "/api/v1/namespaces", {"name": "acme"})
    await api.ok("admin", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    for big in (str(MAX_INTEGER + 1), str(2**40), str(2**63 - 1)):
        for method, path in (("GET", f"/api/v1/deployments/{big}"),
                             ("GET", f"/api/v1/namespaces/acme/webhooks/{big}/deliveries"),
                             ("DELETE", f"/api/v1/models/acme/m/webhooks/{big}"),
                             ("DELETE", f"/api/v1/users/admin/tokens/{big}")):
            r = await api.call("admin", method, path)
            assert r.status == 404, (method, path, r.status, await r.text())


async def test_model_quota_past_a_32_bit_integer_is_400_byte_quota_is_64_bit(api):
    await api.ok("admin", "POST", "/api/v1/namespaces", {"name": "acme"})
    r = await api.call("admin", "PUT", "/api/v1/namespaces/acme/quota", {"models": MAX_INTEGER + 1})
    assert r.status == 400, await r.text()
    assert (await api.ok("admin", "GET", "/api/v1/namespaces/acme"))["quota"]["models"] is None
    await api.ok("admin", "PUT", "/api/v1/namespaces/acme/quota", {"bytes": 2**62, "models": MAX_INTEGER})
    quota = (await api.ok("admin", "GET", "/api/v1/namespaces/acme"))["quota"]
    assert quota["bytes"] == 2**62 and quota["models"] == MAX_INTEGER
