"""``modelrepo inspect [NS/NAME]``: inspect what was stored before inspections existed (or before
the readers learnt something new), for every branch and tag, with a progress bar on stderr."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import click

from modelrepo.cli.common import LOCAL_ADMIN, admin_command, full_name

if TYPE_CHECKING:
    from modelrepo.inspect.refs import FileRef
    from modelrepo.services import Services


def _all_files(path) -> list[FileRef]:
    """Every file worth inspecting on any branch or tag, once per (path, object)."""
    import pygit2

    from modelrepo.git.snapshot import list_files, read_refs
    from modelrepo.inspect.formats import worth_inspecting
    from modelrepo.inspect.refs import FileRef

    repo = pygit2.Repository(str(path))
    seen: dict[tuple[str, str], FileRef] = {}
    for commit in {r.commit for r in read_refs(repo)}:
        for e in list_files(repo, repo[commit]):
            if worth_inspecting(e.path):
                seen.setdefault((e.path, e.lfs_oid or e.blob_oid), FileRef(e.path, e.blob_oid, e.lfs_oid, e.size))
    return sorted(seen.values(), key=lambda f: f.path)


@admin_command(name="inspect")
@click.argument("name", metavar="[NS/NAME]", required=False)
@click.option("--force", is_flag=True, help="inspect again what was already inspected")
async def inspect_command(services: Services, name: str | None, force: bool) -> None:
    """Inspect stored weights: safetensors, GGUF, pickle imports."""
    from modelrepo.inspect.policy import MAX_BLOB_READ, repo_blob_reader
    from modelrepo.inspect.summary import security

    models, inspections = services.models, services.inspections
    if name:
        targets = [await models.for_read(LOCAL_ADMIN, *full_name(name))]
    else:
        targets = await models.list(LOCAL_ADMIN, limit=10**9)
    work = []
    for m in targets:
        path = models.path(m)
        for f in await asyncio.to_thread(_all_files, path):
            work.append((m, path, f))
    pending = set(await inspections.pending(f for _, _, f in work))
    todo = [(m, p, f) for m, p, f in work if force or f in pending]
    click.echo(f"{len(work)} file(s) in {len(targets)} model(s); {len(todo)} to inspect", err=True)
    with click.progressbar(todo, label="inspecting", file=sys.stderr,
                           item_show_func=lambda t: t[2].path if t else None) as bar:
        for m, path, f in bar:
            if f.lfs_oid:
                await inspections.object(f.lfs_oid, f.size, f.path, force=force)
            elif f.size <= MAX_BLOB_READ and (data := await repo_blob_reader(path)(f.blob_oid)) is not None:
                await inspections.blob(f.blob_oid, data, f.path, force=force)
    for m in targets:
        files = [f for mm, _, f in work if mm is m]
        verdict = security(files, await inspections.for_files(files))
        click.echo(f"{m.full_name}\t{verdict['status']}\t{len(files)} file(s) inspected")
        for e in verdict["files"]:
            if e["status"] != "safe":
                click.echo(f"  {e['status']}\t{e['path']}")
