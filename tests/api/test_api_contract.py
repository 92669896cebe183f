"""What the REST and Hub doors promise about bad input: words instead of regexes, no 5xx from ids or
numbers past SQLite's range, bodies required where an empty one would do harm, the spec telling the
truth about what is accepted, credentials refused with a hint that fixes them."""

import base64
import json
import re
import time

import pytest

from modelrepo.names import NAME_RULE
from modelrepo.web.routing import MAX_ID

from .test_api import acme  # noqa: F401 - the fixture


async def _error(resp) -> dict:
    return (await resp.json())["error"]


async def test_ids_past_the_catalog_range_are_404_not_500(acme):  # noqa: F811
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    for big in (str(MAX_ID), str(MAX_ID + 1), "9" * 19, "1" * 40, "0"):
        for method, path in (("GET", f"/api/v1/deployments/{big}"), ("PATCH", f"/api/v1/deployments/{big}"),
                             ("GET", f"/api/v1/namespaces/acme/webhooks/{big}"),
                             ("GET", f"/api/v1/namespaces/acme/webhooks/{big}/deliveries"),
                             ("DELETE", f"/api/v1/models/acme/m/webhooks/{big}"),
                             ("DELETE", f"/api/v1/users/admin/tokens/{big}")):
            body = {"status": "stopped"} if method == "PATCH" else None
            r = await api.call("admin", method, path, body)
            assert r.status == 404, (method, path, r.status, await r.text())
    # Not digits at all: no such route.
    r = await api.call("admin", "GET", "/api/v1/deployments/abc")
    assert r.status == 404


async def test_quota_put_needs_a_body_and_numbers_in_range(acme):  # noqa: F811
    api = acme
    await api.ok("admin", "PUT", "/api/v1/namespaces/acme/quota", {"bytes": 1000, "models": 3})
    for raw in (b"", b"{}", json.dumps({"bytes": 2**63}).encode(), json.dumps({"models": MAX_ID + 1}).encode(),
                b'{"bytes": 1e400}',
                b'{"models": ' + b"9" * 4000 + b"}", b'{"bytes": NaN}'):
        r = await api.client.put("/api/v1/namespaces/acme/quota", data=raw,
                                 headers={"Authorization": f"Bearer {api.tokens['admin']}"})
        assert r.status == 400, (raw[:30], r.status, await r.text())
    quota = (await api.ok("admin", "GET", "/api/v1/namespaces/acme"))["quota"]
    assert quota["bytes"] == 1000 and quota["models"] == 3, "a refused body changed the quotas"
    # 105835.0 is an integer to JSON Schema, and so to the server.
    await api.ok("admin", "PUT", "/api/v1/namespaces/acme/quota", {"bytes": 105835.0})
    assert (await api.ok("admin", "GET", "/api/v1/namespaces/acme"))["quota"]["bytes"] == 105835


async def test_token_without_body_gets_the_documented_default(acme):  # noqa: F811
    api = acme
    r = await api.client.post("/api/v1/users/alice/tokens", headers={"Authorization": f"Bearer {api.tokens['alice']}"})
    assert r.status == 201
    assert (await r.json())["scopes"] == ["read", "write"]
    doc = await api.ok(None, "GET", "/api/v1/openapi.json")
    op = doc["paths"]["/api/v1/users/{user}/tokens"]["post"]
    assert op["requestBody"]["required"] is False
    assert op["requestBody"]["content"]["application/json"]["schema"]["properties"]["scopes"]["default"] == \
        ["read", "write"]


async def test_openapi_types_ids_and_query_integers(api):
    doc = await api.ok(None, "GET", "/api/v1/openapi.json")
    for path, ops in doc["paths"].items():
        for op in ops.values():
            for p in op["parameters"]:
                if p["name"] == "id":
                    assert p["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_ID}, path
    params = {p["name"]: p["schema"] for p in doc["paths"]["/api/v1/models"]["get"]["parameters"]}
    assert params["limit"]["type"] == params["offset"]["type"] == "integer"

    def integers(node):
        if isinstance(node, dict):
            if "integer" in (node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]):
                yield node
            for v in node.values():
                yield from integers(v)
        elif isinstance(node, list):
            for v in node:
                yield from integers(v)
    found = list(integers(doc))
    assert found and all("maximum" in n for n in found), "every integer in the spec is bounded"


async def test_limit_and_offset_as_the_spec_says(acme):  # noqa: F811
    api = acme
    for query in ("limit=", "limit=1", "limit=1000", "offset=", "offset=0", "limit=5&offset=2"):
        r = await api.call("admin", "GET", f"/api/v1/models?{query}")
        assert r.status == 200, query
    for query in ("limit=0", "limit=1001", "limit=1.5", "offset=-1", "limit=" + "9" * 30):
        r = await api.call("admin", "GET", f"/api/v1/models?{query}")
        assert r.status == 400, query


async def test_ambiguous_branch_and_tag_names_are_refused(acme, settings):  # noqa: F811
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    for name in ("refs/heads/main", "refs/tags/v1", "HEAD", "refs/x"):
        r = await api.call("alice", "POST", "/api/v1/models/acme/m/branches", {"name": name, "revision": "main"})
        assert r.status == 400, name
        assert "ambiguous" in (await _error(r))["message"]
    r = await api.call("alice", "POST", "/api/v1/models/acme/m/branches", {"name": "refs/heads/main",
                                                                           "revision": "main"})
    assert "'main'" in (await _error(r))["message"], "the refusal names the short form"


async def test_name_errors_are_in_words(acme):  # noqa: F811
    api = acme
    r = await api.call("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "Bad Name"})
    message = (await _error(r))["message"]
    assert r.status == 400 and NAME_RULE in message and "^[" not in message, message
    assert message.startswith("name: 'Bad Name'")


async def test_lone_surrogates_are_400_naming_the_field(acme):  # noqa: F811
    api = acme
    headers = {"Authorization": f"Bearer {api.tokens['alice']}", "Content-Type": "application/json"}
    r = await api.client.post("/api/v1/models", headers=headers,
                              data=b'{"namespace": "acme", "name": "m", "description": "x\\udc80"}')
    assert r.status == 400 and (await _error(r))["message"].startswith("description:")
    r = await api.client.post("/api/v1/models", headers=headers, data=b'{"namespace": "acme", "\\ud800": 1}')
    assert r.status == 400
    assert (await api.ok("admin", "GET", "/api/v1/models")) == []
    # The Hub door: a tag message of a lone surrogate is a 400 naming the field, not a 409.
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    r = await api.client.post("/api/models/acme/m/tag/main", headers=headers, data=b'{"tag": "t", "message": "\\ud800"}')
    assert r.status == 400 and (await r.json())["error"].startswith("message:")
    refs = await api.ok("alice", "GET", "/api/v1/models/acme/m/refs")
    assert not [t for t in refs["tags"] if t["name"] == "t"]


async def test_model_card_schema_is_served(api, settings):
    from modelrepo.models.card import schema_path

    r = await api.call(None, "GET", "/api/v1/model-card.schema.json")
    assert r.status == 200 and r.content_type == "application/schema+json"
    assert json.loads(await r.read()) == json.loads(schema_path().read_text())


async def test_model_in_use_409_says_how_to_stop_the_deployment(acme):  # noqa: F811
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    # A deployment row as the inference platform would leave it (creating one needs a tagged card).
    from modelrepo.keys import CATALOG
    from modelrepo.catalog.schema import deployments, models

    catalog = api.client.server.app[CATALOG]
    async with catalog.tx() as conn:
        model_id = (await conn.execute(models.select().where(models.c.name == "m"))).first().id
        await conn.execute(deployments.insert().values(
            model_id=model_id, name="prod", revision="v1", commit="0" * 40, target="", params="{}",
            status="active", created_at=0, updated_at=0, created_by=None))
    r = await api.call("ada", "DELETE", "/api/v1/models/acme/m")
    message = (await _error(r))["message"]
    assert r.status == 409 and "PATCH /api/v1/deployments/" in message and '"stopped"' in message, message


def _basic(user: str, token: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()}


async def test_basic_auth_user_name_must_be_the_owner(acme):  # noqa: F811
    api = acme
    token = api.tokens["alice"]
    r = await api.client.get("/api/v1/user", headers=_basic("alice", token))
    assert r.status == 200
    r = await api.client.get("/api/v1/user", headers=_basic("", token))
    assert r.status == 401 and "user name" in (await _error(r))["message"]
    r = await api.client.get("/api/v1/user", headers=_basic("rob", token))
    message = (await _error(r))["message"]
    assert r.status == 401 and "does not belong to user 'rob'" in message and "Bearer" in message
    # A wrong token gets no hint.
    r = await api.client.get("/api/v1/user", headers=_basic("rob", "mr_wrong"))
    assert (await _error(r))["message"] == "invalid credentials"


@pytest.mark.parametrize("kind", ["write", "read"])
async def test_xet_token_endpoints_issue_cas_tokens_in_the_hub_shape(acme, kind):  # noqa: F811
    """The answer huggingface_hub reads (X-Xet-* headers, the JSON of the spec) for one who may,
    and the Hub's missing-repository answer, byte for byte, for one who may not see the model."""
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    r = await api.call("alice", "GET", f"/api/models/acme/m/xet-{kind}-token/main")
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["casUrl"].endswith("/xet") and body["accessToken"] and body["exp"] > time.time()
    assert r.headers["X-Xet-Cas-Url"] == body["casUrl"]
    assert r.headers["X-Xet-Access-Token"] == body["accessToken"]
    assert r.headers["X-Xet-Token-Expiration"] == str(body["exp"])
    hidden = await api.call("eve", "GET", f"/api/models/acme/m/xet-{kind}-token/main")
    missing = await api.call("eve", "GET", f"/api/models/acme/nope/xet-{kind}-token/main")
    assert hidden.status == missing.status == 404
    assert hidden.headers["X-Error-Code"] == missing.headers["X-Error-Code"] == "RepoNotFound"
    assert await hidden.read() == await missing.read()


async def test_hub_errors_never_copy_control_characters_into_headers(acme):  # noqa: F811
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m", "visibility": "public"})
    for c in ("%00", "%01", "%7f", "%0d", "%0d%0aX-Injected:%201", "%ff"):
        for path in (f"/acme/m/resolve/main/{c}", f"/acme/m/resolve/{c}/README.md",
                     f"/api/models/acme/m/tree/{c}", f"/api/models/acme/m/tree/main/{c}",
                     f"/api/models/acme/m/revision/{c}"):
            r = await api.call(None, "GET", path)
            assert r.status in (400, 404), (path, r.status)
            assert "X-Injected" not in r.headers
            assert all(re.fullmatch(r"[\x20-\x7e]*", v) for v in r.headers.values()), (path, dict(r.headers))
