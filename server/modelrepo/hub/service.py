"""The Hugging Face Hub-compatible surface: what ``huggingface_hub`` (and so transformers, vLLM,
KServe's hf:// initializer) asks of a server named by HF_ENDPOINT.

Access is exactly git's: the same Models.for_read/for_write checks, so a private model looks
missing here too. Everything is read from the repository at the requested revision.
"""

from dataclasses import dataclass
from datetime import datetime, timezone

from modelrepo.errors import Conflict, EntryNotFound, InvalidInput, NotFound
from modelrepo.models.card import ModelCard, parse_card
from modelrepo.git import reads as hub_repo
from modelrepo.accounts.access import SCOPES, Identity
from modelrepo.accounts.service import Accounts
from modelrepo.inspect.refs import FileRef
from modelrepo.inspect.service import Inspections
from modelrepo.inspect.summary import hub_fields
from modelrepo.models.service import Model, Models
from modelrepo.push.ref_changes import RefChanges


def iso_z(ts: float) -> str:
    """The Hub's date format; the client insists on a trailing Z."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def revision_not_found(rev: str) -> NotFound:
    return NotFound(f"Invalid rev id: {rev}", code="revision_not_found")


@dataclass(frozen=True)
class Resolved:
    model: Model
    commit: str


class Hub:
    def __init__(self, models: Models, accounts: Accounts, refs: RefChanges,
                 inspections: Inspections | None = None) -> None:
        self.models = models
        self.accounts = accounts
        self.refs = refs
        self.inspections = inspections

    # -- reads -------------------------------------------------------------------------------------
    async def resolve(self, identity: Identity, ns: str, name: str, rev: str) -> Resolved:
        model = await self.models.for_read(identity, ns, name)
        commit = await self.models.read(model, hub_repo.resolve, rev)
        if commit is None:
            raise revision_not_found(rev)
        return Resolved(model, str(commit.id))

    def _card_tags(self, model: Model, card: dict) -> list[str]:
        tags = [t for t in card.get("tags", []) if isinstance(t, str)] if isinstance(card.get("tags"), list) else []
        for key in ("library_name", "pipeline_tag"):
            if isinstance(card.get(key), str) and card[key] not in tags:
                tags.append(card[key])
        if isinstance(card.get("license"), str):
            tags.append(f"license:{card['license']}")
        return tags

    def _info(self, model: Model, commit: str | None, card: ModelCard | None, files: list | None,
              last_modified: float | None) -> dict:
        meta = card.metadata if card and card.valid else {}
        info = {
            "_id": str(model.id), "id": model.full_name, "modelId": model.full_name, "author": model.namespace,
            "sha": commit, "lastModified": iso_z(last_modified or model.updated_at),
            "createdAt": iso_z(model.created_at), "private": model.visibility != "public",
            "visibility": model.visibility, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": self._card_tags(model, meta), "pipeline_tag": meta.get("pipeline_tag"),
            "library_name": meta.get("library_name"), "cardData": meta, "description": model.description,
        }
        if files is not None:
            info["siblings"] = [f.sibling_json() for f in files]
            info["usedStorage"] = sum(f.size for f in files)
        return info

    async def model_info(self, identity: Identity, ns: str, name: str, rev: str | None,
                         security: bool = False) -> dict:
        model = await self.models.for_read(identity, ns, name)
        commit = await self.models.read(model, hub_repo.resolve, rev or model.default_branch)
        if commit is None:
            if rev is None:  # an empty repository: the Hub answers with sha null
                return self._info(model, None, None, [], None)
            raise revision_not_found(rev)
        commit_id = str(commit.id)
        files = await self.models.read(model, hub_repo.all_files, commit_id)
        readme = next((f for f in files if f.path == "README.md"), None)
        card = (await self.models.read(model, lambda path: parse_card(hub_repo.read_blob(path, readme.oid)))
                if readme else ModelCard())
        info = self._info(model, commit_id, card, files, commit.commit_time)
        if self.inspections is not None:  # inspect (issue 13): safetensors, gguf, securityRepoStatus
            refs = [FileRef(f.path, f.oid, f.lfs_oid, f.size) for f in files]
            info.update(hub_fields(refs, await self.inspections.for_files(refs), security))
        return info

    async def tree(self, identity: Identity, ns: str, name: str, rev: str, subpath: str,
                   recursive: bool) -> tuple[Resolved, list[hub_repo.Entry]]:
        r = await self.resolve(identity, ns, name, rev)
        subpath = subpath.strip("/")
        entries = await self.models.read(r.model, hub_repo.list_tree, r.commit, subpath, recursive)
        if entries is None:
            raise EntryNotFound(f"{subpath} does not exist on {rev}", r.commit)
        return r, entries

    async def file(self, identity: Identity, ns: str, name: str, rev: str, path: str) -> tuple[Resolved, hub_repo.Entry]:
        r = await self.resolve(identity, ns, name, rev)
        parts = path.split("/")
        entry = None
        if path and not path.startswith("/") and ".." not in parts and "" not in parts:
            entry = await self.models.read(r.model, hub_repo.file_entry, r.commit, path)
        if entry is None:
            raise EntryNotFound(f"Entry not found: {path} does not exist at {r.commit}", r.commit)
        return r, entry

    async def commits(self, identity: Identity, ns: str, name: str, rev: str, offset: int,
                      limit: int) -> tuple[list[dict], bool]:
        """A page of ``list_repo_commits``: the history reachable from ``rev``, newest first, in
        the Hub's shape (title is the first line, message the rest), and whether more follows."""
        r = await self.resolve(identity, ns, name, rev)
        found, more = await self.models.read(r.model, hub_repo.history, r.commit, offset, limit)
        return [{"id": c.id, "title": c.title, "message": c.message.partition("\n")[2].strip(),
                 "authors": [{"user": c.author, "avatar": None}], "date": iso_z(c.time)} for c in found], more

    async def refs_json(self, identity: Identity, ns: str, name: str) -> dict:
        listing = await self.models.refs(identity, ns, name)
        return {
            "branches": [{"name": b["name"], "ref": f"refs/heads/{b['name']}", "targetCommit": b["commit"]}
                         for b in listing["branches"]],
            "tags": [{"name": t["name"], "ref": f"refs/tags/{t['name']}", "targetCommit": t["commit"]}
                     for t in listing["tags"]],
            "converts": [], "pullRequests": [],
        }

    async def list_models(self, identity: Identity, *, search: str | None, author: str | None,
                          filters: list[str], pipeline_tag: str | None, limit: int, offset: int) -> list[dict]:
        # The Hub's `filter` matches tags, and library names and tasks are tags there too.
        found = await self.models.list(identity, namespace=author, search=search, keywords=filters,
                                       pipeline_tag=pipeline_tag, limit=limit, offset=offset)
        out = []
        for m in found:
            card = ModelCard(metadata=m.card or {})
            info = self._info(m, m.head_commit, card, None, m.updated_at)
            out.append(info)
        return out

    async def whoami(self, identity: Identity, token_name: str | None) -> dict:
        namespaces = await self.accounts.list_namespaces(identity)
        role = {"read": "read", "write": "write", "admin": "write"}.get(identity.scope or "", "read")
        return {
            "type": "user", "id": str(identity.user_id), "name": identity.name, "fullname": identity.name,
            "email": None, "emailVerified": False, "isPro": False, "canPay": False, "isEnterprise": False,
            "orgs": [{"type": "org", "name": n["name"], "fullname": n["name"], "roleInOrg": n["role"]}
                     for n in namespaces if n["role"]],
            "auth": {"type": "access_token", "accessToken": {"displayName": token_name or "token", "role": role,
                                                             "scopes": list(SCOPES[: SCOPES.index(identity.scope) + 1])
                                                             if identity.scope else []}},
        }

    # -- management --------------------------------------------------------------------------------
    async def create_repo(self, identity: Identity, body: dict, base_url: str) -> tuple[int, dict]:
        name, org = body.get("name"), body.get("organization")
        if not isinstance(name, str):
            raise InvalidInput("name is required")
        if "/" in name and not org:
            org, name = name.split("/", 1)
        ns = org or identity.name
        if body.get("type", "model") not in ("model", None):
            raise InvalidInput("only model repositories are supported")
        visibility = body.get("visibility")
        if visibility is None:
            visibility = "private" if body.get("private") else "public" if body.get("private") is False else "private"
        if visibility not in ("private", "public", "shared"):
            raise InvalidInput(f"invalid visibility {visibility!r}")
        url = f"{base_url}/{ns}/{name}"
        try:
            model = await self.models.create(identity, ns, name, visibility=visibility)
        except Conflict:
            # The client reads `url` from a 409 to honour exist_ok=True.
            return 409, {"error": f"You already created this model repo: {ns}/{name}", "url": url}
        return 200, {"url": f"{base_url}/{model.full_name}", "name": model.full_name, "id": str(model.id)}

    async def delete_repo(self, identity: Identity, body: dict) -> None:
        name, org = body.get("name"), body.get("organization")
        if not isinstance(name, str):
            raise InvalidInput("name is required")
        if "/" in name and not org:
            org, name = name.split("/", 1)
        await self.models.delete(identity, org or identity.name or "", name)

    async def settings(self, identity: Identity, ns: str, name: str, body: dict) -> None:
        visibility = body.get("visibility")
        if visibility is None and isinstance(body.get("private"), bool):
            visibility = "private" if body["private"] else "public"
        if body.get("gated") not in (None, False):
            raise InvalidInput("gated repositories are not supported")
        if visibility is not None:
            await self.models.update(identity, ns, name, visibility=visibility)

    async def create_branch(self, identity: Identity, ns: str, name: str, branch: str, starting_point: str | None,
                            clone_url: str) -> None:
        model = await self.models.for_write(identity, ns, name)
        start = starting_point or model.default_branch
        await self.refs.create_branch(identity, ns, name, branch, start, clone_url)

    async def create_tag(self, identity: Identity, ns: str, name: str, revision: str, tag: str, message: str | None,
                         clone_url: str) -> None:
        r = await self.resolve(identity, ns, name, revision)
        await self.refs.create_tag(identity, ns, name, tag, r.commit, message or tag, clone_url)


def card_errors(content: str) -> list[str]:
    return list(parse_card(content.encode("utf-8")).errors)
