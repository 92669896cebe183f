"""Reading pages: explore, a namespace, a model's card, files, a file, history, a commit.

Every lookup goes through the services the REST and Hub APIs use (Models.list/for_read, Hub.resolve
and Hub.file, git/reads.py), so the access table and revision rules are the same ones.
"""

import asyncio
from urllib.parse import quote

from aiohttp import web

from modelrepo.errors import EntryNotFound, InvalidInput, NotFound
from modelrepo.git import reads
from modelrepo.keys import ACCOUNTS, HUB, MODELS
from modelrepo.models.service import Model
from modelrepo.ui.guard import UI, viewer
from modelrepo.ui.markdown import highlight_code, render_markdown
from modelrepo.ui.render import page, render
from modelrepo.web.routing import base_url

MODELS_PER_PAGE = 30
ENTRIES_PER_PAGE = 200
COMMITS_PER_PAGE = 50
TEXT_MAX = 512 * 1024  # larger text files are offered as a download only


def _page_number(request: web.Request) -> int:
    raw = request.query.get("p", "1")
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise InvalidInput("page number must be an integer from 1")
    return int(raw)


async def model_for_read(request: web.Request) -> Model:
    return await request.app[MODELS].for_read(viewer(request), request.match_info["ns"], request.match_info["name"])


def repo_context(request: web.Request, model: Model, tab: str) -> dict:
    return {"model": model, "tab": tab, "clone_url": f"{base_url(request)}/{model.full_name}.git",
            "title": model.full_name}


@page
async def explore(request: web.Request) -> web.Response:
    q = request.query
    filters = {k: q.get(k, "").strip() for k in ("q", "namespace", "task", "library", "license")}
    number = _page_number(request)
    found = await request.app[MODELS].list(
        viewer(request), search=filters["q"] or None, namespace=filters["namespace"] or None,
        pipeline_tag=filters["task"] or None, library=filters["library"] or None,
        card_license=filters["license"] or None, order="updated",
        limit=MODELS_PER_PAGE + 1, offset=(number - 1) * MODELS_PER_PAGE)
    return render(request, "explore.html", {
        "title": "Models", "models": found[:MODELS_PER_PAGE], "filters": filters, "page": number,
        "more": len(found) > MODELS_PER_PAGE, "q": filters["q"],
        "query": {k: v for k, v in filters.items() if v}})


@page
async def namespace(request: web.Request) -> web.Response:
    """A namespace's models (those the viewer may read) and, for its members, its members."""
    me = viewer(request)
    accounts = request.app[ACCOUNTS]
    try:
        ns = await accounts.get_namespace(request.match_info["ns"])
    except (NotFound, InvalidInput):
        raise NotFound("namespace not found", code="namespace_not_found") from None
    number = _page_number(request)
    found = await request.app[MODELS].list(me, namespace=ns.name, order="updated", limit=MODELS_PER_PAGE + 1,
                                           offset=(number - 1) * MODELS_PER_PAGE)
    role = await accounts.role_in(ns.id, me)
    if not found and role is None and not me.is_admin:
        # As in the REST API: a namespace shows itself to outsiders only through what they may read.
        raise NotFound("namespace not found", code="namespace_not_found")
    members = await accounts.list_members(me, ns.name) if role or me.is_admin else None
    return render(request, "namespace.html", {
        "title": ns.name, "ns": ns, "models": found[:MODELS_PER_PAGE], "page": number,
        "more": len(found) > MODELS_PER_PAGE, "members": members, "can_admin": me.namespace_admin(role),
        "roles": ("reader", "writer", "admin"), "query": {}})


async def _readme_html(request: web.Request, model: Model) -> str | None:
    """The card at the default branch's head, rendered once per commit (CardCache)."""
    commit = model.head_commit
    if commit is None:
        return None
    cache = request.app[UI].cards
    key = (model.key, commit)
    html = cache.get(key)
    if html is not None:
        return html
    def load(path) -> str | None:
        entry = reads.file_entry(path, commit, "README.md")
        if entry is None or entry.lfs_oid:
            return None
        text = reads.read_blob(path, entry.oid).decode("utf-8", errors="replace")
        base = f"/{model.full_name}"
        return render_markdown(text, files_base=f"{base}/blob/{commit}", raw_base=f"{base}/resolve/{commit}")

    html = await request.app[MODELS].read(model, load)
    if html is not None:
        cache.put(key, html)
    return html


@page
async def model_page(request: web.Request) -> web.Response:
    model = await model_for_read(request)
    models = request.app[MODELS]
    readme = await _readme_html(request, model)
    refs = await models.refs(viewer(request), model.namespace, model.name)
    releases = sorted(refs["tags"], key=lambda t: (t.get("tagger") or {}).get("date") or "", reverse=True)[:5]
    card = model.card or {}
    return render(request, "model.html", {
        **repo_context(request, model, "card"), "readme": readme, "card": card, "releases": releases,
        "base_url": base_url(request), "can_admin": viewer(request).namespace_admin(model.role)})


def _split_rev_path(request: web.Request) -> tuple[str, str]:
    return request.match_info["rev"], request.match_info.get("path", "").strip("/")


def _crumbs(model: Model, rev: str, path: str) -> list[tuple[str, str]]:
    out, so_far = [], []
    for part in [p for p in path.split("/") if p]:
        so_far.append(part)
        out.append((part, f"/{model.full_name}/tree/{quote(rev)}/{quote('/'.join(so_far))}"))
    return out


@page
async def tree(request: web.Request) -> web.Response:
    rev, path = _split_rev_path(request)
    me = viewer(request)
    resolved = await request.app[HUB].resolve(me, request.match_info["ns"], request.match_info["name"], rev)
    model = resolved.model
    number = _page_number(request)
    result = await request.app[MODELS].read(model, reads.tree_page, resolved.commit, path,
                                            (number - 1) * ENTRIES_PER_PAGE, ENTRIES_PER_PAGE)
    if result is None:
        raise EntryNotFound(f"{path} is not a folder at {rev}", resolved.commit)
    entries, total = result
    refs = await request.app[MODELS].refs(me, model.namespace, model.name)
    return render(request, "tree.html", {
        **repo_context(request, model, "files"), "rev": rev, "commit": resolved.commit, "path": path,
        "crumbs": _crumbs(model, rev, path), "entries": entries, "total": total, "page": number,
        "more": number * ENTRIES_PER_PAGE < total, "refs": refs, "query": {}})


@page
async def blob(request: web.Request) -> web.Response:
    """Text shown (highlighted when small); binaries and LFS files described, with a download."""
    rev, path = _split_rev_path(request)
    resolved, entry = await request.app[HUB].file(viewer(request), request.match_info["ns"],
                                                  request.match_info["name"], rev, path)
    model = resolved.model
    text = highlighted = None
    if not entry.lfs_oid and entry.size <= TEXT_MAX:
        data = await request.app[MODELS].read(model, reads.read_blob, entry.oid)
        if b"\0" not in data[:8000]:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is not None:
            highlighted = await asyncio.to_thread(highlight_code, text, filename=path.rsplit("/", 1)[-1])
    return render(request, "blob.html", {
        **repo_context(request, model, "files"), "rev": rev, "commit": resolved.commit, "path": path,
        "crumbs": _crumbs(model, rev, path), "entry": entry, "text": text, "highlighted": highlighted,
        "download": f"/{model.full_name}/resolve/{quote(rev)}/{quote(path)}"})


@page
async def commits(request: web.Request) -> web.Response:
    rev = request.match_info["rev"]
    resolved = await request.app[HUB].resolve(viewer(request), request.match_info["ns"], request.match_info["name"], rev)
    number = _page_number(request)
    found, more = await request.app[MODELS].read(resolved.model, reads.history, resolved.commit,
                                                 (number - 1) * COMMITS_PER_PAGE, COMMITS_PER_PAGE)
    return render(request, "commits.html", {
        **repo_context(request, resolved.model, "commits"), "rev": rev, "commits": found, "page": number,
        "more": more, "query": {}})


@page
async def commit(request: web.Request) -> web.Response:
    model = await model_for_read(request)
    sha = request.match_info["sha"].lower()
    found = None
    if reads.SHA_RE.match(sha):
        found = await request.app[MODELS].read(model, reads.commit_changes, sha)
    if found is None:
        raise NotFound(f"commit {sha} not found in {model.full_name}", code="revision_not_found")
    info, changes, total = found
    return render(request, "commit.html", {**repo_context(request, model, "commits"), "commit": info,
                                           "changes": changes, "total": total})
