"""REST API in process (pytest-aiohttp), against a real SQLite catalog and real bare repositories."""

import asyncio

import pygit2
import pytest

from modelrepo.web.api import ROUTES, build_openapi

from ..helpers import catalog_sql


async def test_openapi_documents_every_api_route(api):
    doc = await api.ok(None, "GET", "/api/v1/openapi.json")
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    registered = set()
    for route in api.client.server.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if path and path.startswith("/api/v1") and route.method != "HEAD":
            registered.add((route.method, path.replace("{tag:.+}", "{tag}").replace("{branch:.+}", "{branch}")))
    assert registered, "no /api/v1 routes found"
    missing = registered - documented
    assert not missing, f"routes missing from openapi.json: {sorted(missing)}"
    assert documented == registered
    assert len(build_openapi()["paths"]) == len({r.path for r in ROUTES})


async def test_whoami_and_users(api):
    me = await api.ok("admin", "GET", "/api/v1/user")
    assert me["name"] == "admin" and me["admin"] and me["scopes"] == ["read", "write", "admin"]
    assert (await api.ok(None, "GET", "/api/v1/user")) == {"anonymous": True, "name": None}

    await api.user("alice")
    r = await api.call("alice", "POST", "/api/v1/users", {"name": "mallory"})
    assert r.status == 403
    r = await api.call(None, "POST", "/api/v1/users", {"name": "mallory"})
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic realm=")
    r = await api.call("admin", "POST", "/api/v1/users", {"name": "ALICE"})
    assert r.status == 409 and (await r.json())["error"]["code"] == "user_exists"
    for bad in ("../etc", "a/b", "-x", "", "x" * 97, "a..b", "name.git"):
        r = await api.call("admin", "POST", "/api/v1/users", {"name": bad})
        assert r.status == 400, bad


async def test_tokens_hashed_scoped_revocable(api, settings):
    await api.user("alice", scope="write")
    r = await api.call("alice", "POST", "/api/v1/users/alice/tokens", {"scopes": ["admin"]})
    assert r.status == 403, "a write token must not mint an admin token"
    created = await api.ok("alice", "POST", "/api/v1/users/alice/tokens", {"name": "ci", "scopes": ["read"]})
    token = created["token"]
    assert created["scopes"] == ["read"] and token.startswith("mr_") and len(token) > 40

    listed = await api.ok("alice", "GET", "/api/v1/users/alice/tokens")
    assert all("token" not in t for t in listed) and {t["name"] for t in listed} == {"", "ci"}
    await api.user("bob")
    assert (await api.call("bob", "GET", "/api/v1/users/alice/tokens")).status == 404
    assert (await api.call("bob", "POST", "/api/v1/users/alice/tokens", {})).status == 404

    stored = [row[0] for row in await asyncio.to_thread(catalog_sql, settings.data_dir, "select token_hash from tokens")]
    assert token not in stored and all(len(h) == 64 for h in stored)
    if settings.catalog.url is None:  # the SQLite file, byte for byte
        assert token.encode() not in settings.catalog_path.read_bytes()

    api.tokens["ci"] = token
    assert (await api.ok("ci", "GET", "/api/v1/user"))["scopes"] == ["read"]
    await api.ok("alice", "DELETE", f"/api/v1/users/alice/tokens/{created['id']}")
    assert (await api.call("ci", "GET", "/api/v1/user")).status == 401


async def test_namespaces_and_members(api):
    await api.ok("admin", "POST", "/api/v1/namespaces", {"name": "acme", "description": "Acme Corp"})
    r = await api.call("admin", "POST", "/api/v1/namespaces", {"name": "Acme"})
    assert r.status == 409
    for bad in ("api", "..", "a b", "x.git"):
        assert (await api.call("admin", "POST", "/api/v1/namespaces", {"name": bad})).status == 400, bad
    await api.user("ada", scope="admin", ns="acme", role="admin")
    await api.user("alice", ns="acme", role="writer")
    await api.user("eve")
    assert (await api.call("alice", "POST", "/api/v1/namespaces", {"name": "mine"})).status == 403

    assert [n["name"] for n in await api.ok("alice", "GET", "/api/v1/namespaces")] == ["acme"]
    assert await api.ok("eve", "GET", "/api/v1/namespaces") == []
    assert (await api.call("eve", "GET", "/api/v1/namespaces/acme")).status == 404

    # Only namespace admins manage members.
    r = await api.call("alice", "PUT", "/api/v1/namespaces/acme/members/eve", {"role": "reader"})
    assert r.status == 403
    await api.ok("ada", "PUT", "/api/v1/namespaces/acme/members/eve", {"role": "reader"})
    r = await api.call("ada", "PUT", "/api/v1/namespaces/acme/members/eve", {"role": "owner"})
    assert r.status == 400
    members = await api.ok("eve", "GET", "/api/v1/namespaces/acme/members")
    assert {m["user"]: m["role"] for m in members} == {"ada": "admin", "alice": "writer", "eve": "reader"}
    await api.ok("ada", "DELETE", "/api/v1/namespaces/acme/members/eve")
    assert (await api.call("eve", "GET", "/api/v1/namespaces/acme")).status == 404


@pytest.fixture
async def acme(api):
    await api.ok("admin", "POST", "/api/v1/namespaces", {"name": "acme"})
    await api.ok("admin", "POST", "/api/v1/namespaces", {"name": "other"})
    await api.user("ada", scope="admin", ns="acme", role="admin")
    await api.user("alice", ns="acme", role="writer")
    await api.user("rob", ns="acme", role="reader")
    await api.user("eve", ns="other", role="admin")
    return api


async def test_model_create_and_list(acme, settings):
    api = acme
    r = await api.call("alice", "POST", "/api/v1/models",
                       {"namespace": "acme", "name": "BERT-base", "description": "A BERT", "visibility": "shared"})
    assert r.status == 201
    body = await r.json()
    assert body["clone_url"].endswith("/acme/BERT-base.git") and body["default_branch"] == "main"
    repo = pygit2.Repository(str(settings.repos_dir / "acme" / "bert-base.git"))
    assert repo.is_bare and repo.head_is_unborn
    assert (settings.repos_dir / "acme/bert-base.git/hooks/pre-receive").stat().st_mode & 0o111

    assert (await api.call("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "bert-BASE"})).status == 409
    assert (await api.call("rob", "POST", "/api/v1/models", {"namespace": "acme", "name": "x"})).status == 403
    assert (await api.call("eve", "POST", "/api/v1/models", {"namespace": "acme", "name": "x"})).status == 404
    assert (await api.call(None, "POST", "/api/v1/models", {"namespace": "acme", "name": "x"})).status == 401

    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "secret"})
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "open", "visibility": "public",
                                                      "description": "for everyone"})
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "dev", "default_branch": "develop"})

    def names(models):
        return sorted(m["id"] for m in models)

    assert names(await api.ok(None, "GET", "/api/v1/models")) == ["acme/open"]
    assert names(await api.ok("eve", "GET", "/api/v1/models")) == ["acme/BERT-base", "acme/open"]
    assert names(await api.ok("rob", "GET", "/api/v1/models")) == ["acme/BERT-base", "acme/dev", "acme/open",
                                                                    "acme/secret"]
    assert names(await api.ok("rob", "GET", "/api/v1/models?search=EVERYONE")) == ["acme/open"]
    assert names(await api.ok("rob", "GET", "/api/v1/models?search=%25")) == []
    assert names(await api.ok("rob", "GET", "/api/v1/models?namespace=other")) == []
    assert (await api.call("rob", "GET", "/api/v1/models?limit=0")).status == 400
    dev = await api.ok("rob", "GET", "/api/v1/models/acme/dev")
    assert dev["default_branch"] == "develop"
    repo = pygit2.Repository(str(settings.repos_dir / "acme" / "dev.git"))
    assert repo.references["HEAD"].target == "refs/heads/develop"


@pytest.mark.parametrize("name", ["../../etc", "..", "a/b", ".hidden", "x.git", "-rf", "a" * 97, "sp ace", "ü"])
async def test_bad_model_names_create_nothing(acme, settings, name):
    before = sorted(p.name for p in settings.data_dir.rglob("*"))
    r = await acme.call("admin", "POST", "/api/v1/models", {"namespace": "acme", "name": name})
    assert r.status == 400
    assert (await r.json())["error"]["code"] == "invalid_input"
    assert sorted(p.name for p in settings.data_dir.rglob("*")) == before


async def test_model_update_and_delete(acme, settings):
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    updated = await api.ok("alice", "PATCH", "/api/v1/models/acme/m", {"description": "new"})
    assert updated["description"] == "new"
    assert (await api.call("alice", "PATCH", "/api/v1/models/acme/m", {"visibility": "public"})).status == 403
    assert (await api.call("rob", "PATCH", "/api/v1/models/acme/m", {"description": "x"})).status == 403
    assert (await api.call("eve", "PATCH", "/api/v1/models/acme/m", {"description": "x"})).status == 404
    assert (await api.ok("ada", "PATCH", "/api/v1/models/acme/m", {"visibility": "public"}))["visibility"] == "public"
    assert (await api.call("ada", "PATCH", "/api/v1/models/acme/m", {"visibility": "secret"})).status == 400

    assert (await api.call("alice", "DELETE", "/api/v1/models/acme/m")).status == 403
    path = settings.repos_dir / "acme" / "m.git"
    assert path.is_dir()
    assert (await api.call("ada", "DELETE", "/api/v1/models/acme/m")).status == 204
    assert not path.exists()
    assert [p.name for p in (settings.repos_dir / "acme").iterdir()] == []
    assert (await api.call("ada", "GET", "/api/v1/models/acme/m")).status == 404
    assert await asyncio.to_thread(catalog_sql, settings.data_dir, "select count(*) from models") == [(0,)]
    # The name is free again.
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})


def _commit(path, files: dict[str, bytes], parent=None, message="c"):
    repo = pygit2.Repository(str(path))
    builder = repo.TreeBuilder()
    for name, data in files.items():
        builder.insert(name, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    sig = pygit2.Signature("T", "t@example.com")
    return str(repo.create_commit("refs/heads/main", sig, sig, message, builder.write(), [parent] if parent else []))


async def test_tags_and_branches(acme, settings):
    api = acme
    await api.ok("alice", "POST", "/api/v1/models", {"namespace": "acme", "name": "m"})
    base = "/api/v1/models/acme/m"
    r = await api.call("alice", "POST", base + "/tags", {"name": "v1", "revision": "main", "message": "x"})
    assert r.status == 404 and (await r.json())["error"]["code"] == "revision_not_found"
    c1 = _commit(settings.repos_dir / "acme/m.git", {"a": b"1"})
    c2 = _commit(settings.repos_dir / "acme/m.git", {"a": b"2"}, parent=c1)

    tag = await api.ok("alice", "POST", base + "/tags", {"name": "release/v1", "revision": c1, "message": "First"})
    assert tag["commit"] == c1 and tag["annotated"] and tag["message"] == "First\n"
    assert tag["tagger"]["name"] == "alice"
    assert (await api.call("alice", "POST", base + "/tags", {"name": "release/v1", "revision": c2,
                                                             "message": "again"})).status == 409
    assert (await api.call("rob", "POST", base + "/tags", {"name": "v2", "revision": c2, "message": "m"})).status == 403
    for bad in ("a..b", "-x", "a b", "x.lock", "a~1", "/x"):
        r = await api.call("alice", "POST", base + "/tags", {"name": bad, "revision": c2, "message": "m"})
        assert r.status == 400, bad
    r = await api.call("alice", "POST", base + "/tags", {"name": "v9", "revision": "--output=/tmp/x", "message": "m"})
    assert r.status == 400

    await api.ok("alice", "POST", base + "/branches", {"name": "exp/one", "revision": "main~1"})
    refs = await api.ok("rob", "GET", base + "/refs")
    assert {b["name"]: b["commit"] for b in refs["branches"]} == {"main": c2, "exp/one": c1}
    assert [t["name"] for t in refs["tags"]] == ["release/v1"]

    assert (await api.call("alice", "DELETE", base + "/branches/main")).status == 409
    assert (await api.call("alice", "DELETE", base + "/branches/exp/one")).status == 204
    assert (await api.call("alice", "DELETE", base + "/branches/exp/one")).status == 404
    # Tags are immutable releases: a writer cannot delete one, a namespace admin can.
    r = await api.call("alice", "DELETE", base + "/tags/release/v1")
    assert r.status == 403 and "immutable" in (await r.json())["error"]["message"]
    assert (await api.call("ada", "DELETE", base + "/tags/release/v1")).status == 204
    assert (await api.ok("rob", "GET", base + "/refs"))["tags"] == []


async def test_bad_requests_change_nothing(acme, settings):
    api = acme
    headers = {"Authorization": f"Bearer {api.tokens['alice']}", "Content-Type": "application/json"}
    cases = [
        (b"{not json", 400), (b"[]", 400), (b'{"namespace": "acme"}', 400),
        (b'{"namespace": "acme", "name": "m", "extra": 1}', 400),
        (b'{"namespace": "acme", "name": 5}', 400),
        (b'{"namespace": "acme", "name": "m", "description": "' + b"x" * 5000 + b'"}', 413),
        (b"\xff\xfe", 400),
    ]
    for body, status in cases:
        r = await api.client.post("/api/v1/models", data=body, headers=headers)
        assert r.status == status, (body[:40], await r.text())
        err = (await r.json())["error"]
        assert set(err) == {"code", "message"} and err["message"]
    assert (await api.ok("admin", "GET", "/api/v1/models")) == []
    r = await api.call("admin", "GET", "/api/v1/nope")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    r = await api.call("admin", "PUT", "/api/v1/models")
    assert r.status == 405


async def test_healthz(api):
    assert (await api.ok(None, "GET", "/healthz"))["status"] == "ok"
