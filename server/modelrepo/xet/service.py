"""Xet CAS use cases: short-lived repository tokens, verified xorb and shard uploads, global dedup,
file reconstruction, and the bridge to Git LFS.

Trust: a xorb is stored only after every chunk decompressed and the Merkle root of their hashes
is the hash it was uploaded under. A shard registers files only if every xorb it names is stored,
every term's verification hash matches the chunk hashes the server computed itself (so the
uploader holds those chunks: global dedup answers with keyed hashes it cannot use otherwise), and
the file hash and size agree with the terms. Then the file is rebuilt from its xorbs and received
as the LFS object its sha256 names (``Lfs.receive``: hashed in full, stored once, linked to the
repository), so git-lfs, /resolve and the Hub commit see the same verified bytes.

Per-repository links, as for LFS: ``xet_file_links`` says which repository may reconstruct a
file, ``xet_xorb_links`` which xorbs a repository uploaded or proved it holds (global dedup only
answers with those). Knowing a hash never gives access to anything.
"""

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from modelrepo.accounts.access import Identity
from modelrepo.catalog.db import Catalog
from modelrepo.catalog.portable import insert
from modelrepo.catalog.schema import models as models_table, namespaces
from modelrepo.catalog.schema import xet_dedup, xet_file_links, xet_files, xet_xorb_links, xet_xorbs
from modelrepo.errors import (
    Forbidden,
    InsufficientStorage,
    IntegrityError,
    InvalidInput,
    NotFound,
    StorageUnavailable,
    TooLarge,
    Unauthenticated,
    model_not_found,
)
from modelrepo.lfs.action_tokens import ActionClaim, ActionSigner
from modelrepo.lfs.service import Lfs
from modelrepo.models.service import Model, Models, hold_for_link
from modelrepo.push.rules import human
from modelrepo.xet import hashes, shard, xorb
from modelrepo.xet.files import Files, Term, pack_terms, unpack_terms
from modelrepo.xet.xorb import XorbTable

log = structlog.get_logger("modelrepo.xet")

READ, WRITE, FETCH = "xet-read", "xet-write", "xet-fetch"
SCOPES = {"read": READ, "write": WRITE}
MAX_PARALLEL_XORBS = 2  # xorbs held in memory while verified: 2 x 65 MiB at most
DEDUP_TTL = 7 * 24 * 3600
DEDUP_FILES = 200  # recent files of the repository searched for the queried xorb
DEDUP_XORBS = 64  # xorbs described in one dedup answer (~4 GiB of file data, ~4 MiB of shard)


@dataclass(frozen=True)
class Token:
    access_token: str
    expires: int


@dataclass(frozen=True)
class Fetch:
    """One byte range of a xorb a reconstruction needs, for a signed URL."""

    xorb: str
    start: int
    end: int  # inclusive, as the Range header and ``url_range`` write it
    token: str


def parse_hash(text: str, what: str) -> bytes:
    try:
        return hashes.from_hex(text)
    except ValueError:
        raise InvalidInput(f"invalid {what} hash {text!r}: expected 64 lowercase hex characters") from None


class Xet:
    def __init__(self, catalog: Catalog, models: Models, lfs: Lfs, files: Files, signer: ActionSigner,
                 ttl: float) -> None:
        self.catalog = catalog
        self.models = models
        self.lfs = lfs
        self.files = files
        self.store = files.store  # the physical store
        self.signer = signer
        self.ttl = ttl
        self._xorb_slots = asyncio.Semaphore(MAX_PARALLEL_XORBS)

    # -- tokens ------------------------------------------------------------------------------------
    async def issue(self, identity: Identity, namespace: str, name: str, scope: str) -> Token:
        """A CAS token for one repository: write needs write access, read needs read access, and
        a caller without it gets the missing-model answer of every other door."""
        lookup = self.models.for_write if scope == "write" else self.models.for_read
        model = await lookup(identity, namespace, name)
        token = self.signer.sign(SCOPES[scope], model.key, "", 0, self.ttl)
        return Token(token, int(time.time() + self.ttl))

    async def model_for(self, claim: ActionClaim | None, write: bool = False) -> Model:
        """The repository a CAS request acts for, from its bearer token."""
        if claim is None or claim.operation not in (READ, WRITE):
            raise Unauthenticated("a Xet CAS token is required: get one from /api/models/{ns}/{name}/xet-read-token")
        if write and claim.operation != WRITE:
            raise Forbidden("this Xet token is read-only; uploads need a token from xet-write-token")
        model = await self._model_by_key(claim.model_key)
        if model is None:
            # Deleted (or deleted and made again) since the token was issued: the token's own model
            # is missing, and it gets the missing model's 404, as an LFS action token does.
            raise model_not_found()
        return model

    async def _model_by_key(self, key: str) -> Model | None:
        try:
            model_id = int(key.split(".", 1)[0])
        except ValueError:
            return None
        async with self.catalog.read() as conn:
            row = (await conn.execute(
                sa.select(namespaces.c.name.label("ns"), models_table.c.name)
                .join(namespaces, namespaces.c.id == models_table.c.namespace_id)
                .where(models_table.c.id == model_id))).first()
        if row is None:
            return None
        model = await self.models.find(row.ns, row.name)
        return model if model is not None and model.key == key else None

    # -- xorbs -------------------------------------------------------------------------------------
    async def upload_xorb(self, model: Model, xorb_hex: str, body: AsyncIterator[bytes],
                          declared: int | None) -> bool:
        """Verify and store one xorb; True if it was new. Re-sending a stored xorb is not an
        error, and still proves the repository holds it (all of its bytes are checked again)."""
        expected = parse_hash(xorb_hex, "xorb")
        if declared is not None and declared > xorb.MAX_XORB_BYTES:
            raise TooLarge(f"xorb of {declared} bytes exceeds the limit of {xorb.MAX_XORB_BYTES}")
        async with self._xorb_slots:
            data = await _read_bounded(body, xorb.MAX_XORB_BYTES,
                                       f"xorb exceeds the limit of {xorb.MAX_XORB_BYTES} bytes")
            table, oid = await asyncio.to_thread(_verify_xorb, data, expected)
            await self._check_quota(model, xorb_hex, len(data))
            size = len(data)
            known = await self._xorb_object(xorb_hex)
            inserted = known is None
            if known is not None and await self.store.stat(known[0]) == known[1]:
                # Stored already, maybe as other bytes (the footer's nonce varies): keep that copy.
                oid, size = known
            elif await self.store.stat(oid) != size:
                await self.store.put(oid, size, _once(data))
            del data
        eligible = [c.hash for c in table.chunks if hashes.dedup_eligible(c.hash)] + [table.chunks[0].hash]
        now = time.time()
        async with self.catalog.tx(exclusive=False) as conn:  # inserts ON CONFLICT (see Catalog.tx)
            await hold_for_link(conn, model.id)  # a delete racing the upload: its 404
            # gc deletes unreferenced xorbs under its exclusive lock: recheck that the bytes are still there.
            if await self.store.stat(oid) is None:
                raise StorageUnavailable("the xorb was removed while it was being uploaded; upload it again")
            # The check above admitted the upload; this one, under the namespace's row lock, decides
            # it for uploads racing from other processes on the catalog.
            limits = await self.models.accounts.lock_quota(conn, model.namespace_id)
            if limits is not None and limits.quota_bytes is not None:
                await self._check_quota(model, xorb_hex, size, conn, limits.quota_bytes)
            await conn.execute(insert(conn, xet_xorbs).values(
                hash=xorb_hex, object_oid=oid, size=size,
                unpacked=table.unpacked, data_end=table.data_end, chunks=table.pack(), created_at=now)
                .on_conflict_do_nothing(index_elements=["hash"]))
            # A re-upload replaces a recorded xorb whose bytes went missing from the store.
            await conn.execute(xet_xorbs.update().where(xet_xorbs.c.hash == xorb_hex, xet_xorbs.c.object_oid != oid)
                               .values(object_oid=oid, size=size, data_end=table.data_end, chunks=table.pack()))
            await conn.execute(insert(conn, xet_xorb_links).values(model_id=model.id, xorb_hash=xorb_hex,
                                                                    created_at=now)
                               .on_conflict_do_nothing(index_elements=["model_id", "xorb_hash"]))
            for h in sorted(set(eligible)):  # one order: concurrent uploads cannot deadlock
                await conn.execute(insert(conn, xet_dedup).values(chunk_hash=hashes.to_hex(h), xorb_hash=xorb_hex)
                                   .on_conflict_do_nothing(index_elements=["chunk_hash", "xorb_hash"]))
        log.info("xet_xorb_stored" if inserted else "xet_xorb_present", model=model.full_name, xorb=xorb_hex,
                 chunks=len(table.chunks), unpacked=table.unpacked)
        return inserted

    async def _check_quota(self, model: Model, xorb_hex: str, size: int, conn: AsyncConnection | None = None,
                           quota: int | None = None) -> None:
        """507 when a xorb new to the namespace would take it over its byte quota. Quotas count
        stored bytes: a xorb the namespace already holds costs nothing. ``conn`` and ``quota``:
        inside the recording transaction, after ``Accounts.lock_quota``."""
        accounts = self.models.accounts
        if conn is None:
            quota = (await accounts.quota(model.namespace_id))["bytes"]
            if quota is None:
                return
            async with self.catalog.read() as conn:
                return await self._check_quota(model, xorb_hex, size, conn, quota)
        held = (await conn.execute(
            sa.select(xet_xorb_links.c.xorb_hash).join(models_table, models_table.c.id == xet_xorb_links.c.model_id)
            .where(models_table.c.namespace_id == model.namespace_id, xet_xorb_links.c.xorb_hash == xorb_hex)
            .limit(1))).first()
        if held is not None or quota is None:
            return
        used = (await accounts.usage(model.namespace_id, conn))["bytes"]
        if used + size > quota:
            raise InsufficientStorage(
                f"namespace {model.namespace} storage quota exceeded: {human(used)} used of {human(quota)}, this "
                f"upload needs {human(size)} more. Ask an administrator to raise the quota (modelrepo namespace "
                f"set-quota {model.namespace} --bytes ...) or delete unused models.")

    async def _xorb_object(self, xorb_hex: str) -> tuple[str, int] | None:
        """(store key, size) of a recorded xorb."""
        async with self.catalog.read() as conn:
            row = (await conn.execute(sa.select(xet_xorbs.c.object_oid, xet_xorbs.c.size)
                                      .where(xet_xorbs.c.hash == xorb_hex))).first()
        return None if row is None else (row.object_oid, row.size)

    # -- shards ------------------------------------------------------------------------------------
    async def upload_shard(self, model: Model, body: AsyncIterator[bytes]) -> int:
        """Register the shard's files for this repository (1), or 0 when all were already."""
        data = await _read_bounded(body, shard.MAX_SHARD_BYTES,
                                   f"shard exceeds the limit of {shard.MAX_SHARD_BYTES} bytes")
        parsed = await asyncio.to_thread(shard.parse, bytes(data))
        named = {hashes.to_hex(t.xorb) for f in parsed.files for t in f.terms}
        named |= {hashes.to_hex(x.hash) for x in parsed.xorbs}
        tables = await self.files.xorb_tables(named)
        missing = sorted(named - set(tables))
        if missing:
            raise shard.InvalidShard(f"the shard references xorb {missing[0]}, which is not stored; upload the "
                                     f"xorbs before the shard" + (f" ({len(missing)} missing)" if len(missing) > 1 else ""))
        await asyncio.to_thread(_verify_files, parsed.files, tables)
        new = 0
        for info in parsed.files:
            new += await self._register(model, info, tables)
        return 1 if new else 0

    async def _register(self, model: Model, info: shard.FileInfo, tables: dict[str, tuple[str, XorbTable]]) -> int:
        """Link one verified file to the repository, for Xet and for LFS. Its bytes are rebuilt and
        hashed once, the first time the file is registered, to hold the shard to the sha256 it
        claims; nothing is written: the LFS object is a view of the xorbs (``xet.store``)."""
        file_hex = hashes.to_hex(info.hash)
        assert info.sha256 is not None
        sha = hashes.to_hex(info.sha256)  # written like every other hash: u64 words, little-endian
        size = info.size
        terms = [Term(hashes.to_hex(t.xorb), t.start, t.end, t.unpacked) for t in info.terms]
        linked = await self.lfs.linked_size(model.id, sha)
        if linked == size and await self._file_linked(model.id, file_hex):
            return 0
        # No quota check here: a file is its xorbs, counted when they were uploaded.
        if not await self._registered(file_hex, sha):
            try:
                await self.store.check(sha, size, self.files.stream(terms, tables=tables))
            except (IntegrityError, InvalidInput) as exc:
                raise shard.InvalidShard(f"file {file_hex}: {exc}") from None
        now = time.time()
        xorbs = {t.xorb for t in terms}
        async with self.catalog.tx(exclusive=False) as conn:  # inserts ON CONFLICT (see Catalog.tx)
            await hold_for_link(conn, model.id)  # a delete racing the registration: its 404
            # gc deletes unreferenced xorbs under its exclusive lock: recheck that every one is still there.
            present = (await conn.execute(sa.select(sa.func.count()).select_from(xet_xorbs)
                                          .where(xet_xorbs.c.hash.in_(xorbs)))).scalar_one()
            if present != len(xorbs):
                raise StorageUnavailable("a xorb this file needs was removed meanwhile; upload the file again")
            await conn.execute(insert(conn, xet_files).values(hash=file_hex, sha256=sha, size=size,
                                                               terms=pack_terms(terms), created_at=now)
                               .on_conflict_do_nothing(index_elements=["hash"]))
            await conn.execute(insert(conn, xet_file_links).values(model_id=model.id, file_hash=file_hex,
                                                                    created_at=now)
                               .on_conflict_do_nothing(index_elements=["model_id", "file_hash"]))
            for x in sorted(xorbs):
                await conn.execute(insert(conn, xet_xorb_links).values(model_id=model.id, xorb_hash=x, created_at=now)
                                   .on_conflict_do_nothing(index_elements=["model_id", "xorb_hash"]))
            if terms:
                h = tables[terms[0].xorb][1].chunks[terms[0].start].hash
                await conn.execute(insert(conn, xet_dedup).values(chunk_hash=hashes.to_hex(h), xorb_hash=terms[0].xorb)
                                   .on_conflict_do_nothing(index_elements=["chunk_hash", "xorb_hash"]))
        # The LFS object (stat through the Xet-backed store finds the file just registered).
        await self.lfs.record(model.id, sha, size)
        log.info("xet_file_registered", model=model.full_name, file=file_hex, sha256=sha, size=size,
                 terms=len(terms))
        return 1

    async def _registered(self, file_hex: str, sha: str) -> bool:
        async with self.catalog.read() as conn:
            return (await conn.execute(sa.select(xet_files.c.hash).where(
                xet_files.c.hash == file_hex, xet_files.c.sha256 == sha))).first() is not None

    async def _file_linked(self, model_id: int, file_hex: str) -> bool:
        async with self.catalog.read() as conn:
            return (await conn.execute(sa.select(xet_file_links.c.file_hash).where(
                xet_file_links.c.model_id == model_id, xet_file_links.c.file_hash == file_hex))).first() is not None

    # -- global dedup ------------------------------------------------------------------------------
    async def dedup(self, model: Model, chunk_hex: str) -> bytes:
        """A shard describing the xorb of this repository that holds the chunk and, after it, the
        other xorbs of this repository's files that use it (a new version of a file mostly repeats
        the old one, and the client asks only about one chunk in ~1024). Chunk hashes are keyed,
        so only a client holding a chunk recognises it."""
        parse_hash(chunk_hex, "chunk")
        async with self.catalog.read() as conn:
            hit = (await conn.execute(
                sa.select(xet_dedup.c.xorb_hash)
                .join(xet_xorb_links, xet_xorb_links.c.xorb_hash == xet_dedup.c.xorb_hash)
                .where(xet_dedup.c.chunk_hash == chunk_hex, xet_xorb_links.c.model_id == model.id)
                .limit(1))).scalar()
            if hit is None:
                raise NotFound("chunk not known to this repository")
            recent = (await conn.execute(
                sa.select(xet_files.c.terms).join(xet_file_links, xet_file_links.c.file_hash == xet_files.c.hash)
                .where(xet_file_links.c.model_id == model.id)
                .order_by(xet_file_links.c.created_at.desc()).limit(DEDUP_FILES))).scalars().all()
        wanted = [hit]
        for blob in recent:
            named = [t.xorb for t in unpack_terms(blob)]
            if hit in named:
                wanted += [x for x in dict.fromkeys(named) if x not in wanted]
            if len(wanted) >= DEDUP_XORBS:
                break
        tables = await self.files.xorb_tables(set(wanted[:DEDUP_XORBS]))
        async with self.catalog.read() as conn:
            sizes = dict((await conn.execute(sa.select(xet_xorbs.c.hash, xet_xorbs.c.size)
                                              .where(xet_xorbs.c.hash.in_(list(tables))))).all())
        described = [(hashes.from_hex(x), [(c.hash, c.offset, c.length) for c in tables[x][1].chunks], sizes[x])
                     for x in wanted[:DEDUP_XORBS] if x in tables]
        return await asyncio.to_thread(shard.dedup_shard, described, secrets.token_bytes(32), DEDUP_TTL)

    # -- downloads ---------------------------------------------------------------------------------
    async def file_terms(self, model_id: int, file_hex: str) -> tuple[int, list[Term]]:
        """(size, terms) of a file this repository may read; the same 404 whether it does not exist
        or belongs to someone else."""
        parse_hash(file_hex, "file")
        async with self.catalog.read() as conn:
            row = (await conn.execute(
                sa.select(xet_files.c.size, xet_files.c.terms)
                .join(xet_file_links, xet_file_links.c.file_hash == xet_files.c.hash)
                .where(xet_files.c.hash == file_hex, xet_file_links.c.model_id == model_id))).first()
        if row is None:
            raise NotFound("file not found")
        return row.size, unpack_terms(row.terms)

    async def reconstruction(self, model: Model, file_hex: str, size: int, terms: list[Term],
                             first_byte: int, end_byte: int, sign: Callable[[str, int, int], str]) -> dict:
        """The spec's QueryReconstructionResponse (v1) for bytes [first_byte, end_byte) of a file
        (``file_terms``), one signed fetch URL per term."""
        tables = await self.files.xorb_tables({t.xorb for t in terms})
        out_terms: list[dict] = []
        fetch: dict[str, list[dict]] = {}
        offset_into_first = 0
        pos = 0
        for term in terms:
            xorb_hex, start, end, unpacked = term.xorb, term.start, term.end, term.unpacked
            if pos >= end_byte:
                break
            if pos + unpacked <= first_byte:
                pos += unpacked
                continue
            table = tables[xorb_hex][1]
            lo, hi, length, cpos = None, start, 0, pos
            for i in range(start, end):
                clen = table.chunks[i].length
                if cpos + clen > first_byte and cpos < end_byte:
                    if lo is None:
                        lo = i
                        if not out_terms:
                            offset_into_first = max(first_byte - cpos, 0)
                    hi = i + 1
                    length += clen
                cpos += clen
            pos += unpacked
            if lo is None:
                continue
            b0, b1 = table.byte_range(lo, hi)
            out_terms.append({"hash": xorb_hex, "unpacked_length": length, "range": {"start": lo, "end": hi}})
            fetch.setdefault(xorb_hex, []).append({"range": {"start": lo, "end": hi}, "url": sign(xorb_hex, b0, b1 - 1),
                                                   "url_range": {"start": b0, "end": b1 - 1}})
        return {"offset_into_first_range": offset_into_first, "terms": out_terms, "fetch_info": fetch}

    def sign_fetch(self, model: Model, xorb_hex: str, start: int, end: int) -> str:
        return self.signer.sign(FETCH, model.key, xorb_hex, 0, self.ttl, f"{start}-{end}")

    async def fetch(self, claim: ActionClaim | None, xorb_hex: str, range_header: str | None) -> tuple[str, int, int]:
        """(store OID, first byte, end byte) for a signed xorb range. The Range sent must be the
        one signed, so the URL for one term never reads the rest of a xorb."""
        parse_hash(xorb_hex, "xorb")
        if claim is None or claim.operation != FETCH or claim.oid != xorb_hex:
            raise Unauthenticated("this xorb URL is not signed for this xorb, or it expired")
        if range_header != f"bytes={claim.nonce}":
            raise Forbidden(f"send the signed range: Range: bytes={claim.nonce}")
        async with self.catalog.read() as conn:
            oid = (await conn.execute(sa.select(xet_xorbs.c.object_oid).where(xet_xorbs.c.hash == xorb_hex))).scalar()
        if oid is None:
            raise NotFound("xorb not found")
        first, last = (int(n) for n in claim.nonce.split("-"))
        return oid, first, last + 1

    async def file_for(self, model_id: int, sha256: str) -> str | None:
        """The Xet file hash of an LFS object this repository stored through Xet, if any."""
        async with self.catalog.read() as conn:
            return (await conn.execute(
                sa.select(xet_files.c.hash).join(xet_file_links, xet_file_links.c.file_hash == xet_files.c.hash)
                .where(xet_files.c.sha256 == sha256, xet_file_links.c.model_id == model_id).limit(1))).scalar()


def _verify_xorb(data: bytes | bytearray, expected: bytes) -> tuple[XorbTable, str]:
    table = xorb.parse(data, expected)
    return table, hashlib.sha256(data).hexdigest()


def _verify_files(files: list[shard.FileInfo], tables: dict[str, tuple[str, XorbTable]]) -> None:
    """Every file's terms against the chunk tables the server computed: ranges, sizes,
    verification hashes (possession of the chunks) and the file hash. CPU-bound."""
    for info in files:
        name = hashes.to_hex(info.hash)
        if info.sha256 is None:
            raise shard.InvalidShard(f"file {name} has no sha256 (metadata extension): a Git repository needs it "
                                     f"for the LFS pointer")
        leaves: list[tuple[bytes, int]] = []
        for n, term in enumerate(info.terms):
            table = tables[hashes.to_hex(term.xorb)][1]
            if term.end > len(table.chunks):
                raise shard.InvalidShard(f"file {name} term {n} names chunks [{term.start}, {term.end}) of a xorb "
                                         f"with {len(table.chunks)} chunks")
            chunks = table.chunks[term.start:term.end]
            if sum(c.length for c in chunks) != term.unpacked:
                raise shard.InvalidShard(f"file {name} term {n} claims {term.unpacked} bytes; its chunks hold "
                                         f"{sum(c.length for c in chunks)}")
            if term.verification is None:
                raise shard.InvalidShard(f"file {name} has no verification entries; they are required")
            if hashes.verification_hash([c.hash for c in chunks]) != term.verification:
                raise shard.InvalidShard(f"file {name} term {n}: verification hash does not match the xorb's chunks")
            leaves += [(c.hash, c.length) for c in chunks]
        if hashes.file_hash(leaves) != info.hash:
            raise shard.InvalidShard(f"file hash {name} does not match its chunks")


async def _read_bounded(body: AsyncIterator[bytes], limit: int, message: str) -> bytearray:
    """The whole body (bounded): returned as the buffer itself, not a copy of up to 65 MiB."""
    buf = bytearray()
    async for piece in body:
        buf += piece
        if len(buf) > limit:
            raise TooLarge(message)
    return buf


async def _once(data: bytes | bytearray) -> AsyncIterator[bytes]:
    yield data
