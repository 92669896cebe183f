"""S3 backend (aiobotocore): any S3-compatible server — AWS, SeaweedFS, MinIO, Ceph RGW.

Uploads through the daemon (proxy mode, and every upload too large to presign): an object up to
one part is collected in memory and written with one PutObject at commit; a larger one goes up as
a multipart upload, one part in flight while the next is read, completed at commit or aborted, so
nothing is ever visible under its key before ``ObjectStore`` has vouched for the bytes.

Direct mode (this backend is a ``Presigner``): the batch API hands clients presigned URLs. An
upload goes to a one-off staging key (``<prefix>incoming/<oid>/<nonce>``), never to the object's
own key, and its URL signs the sha256 as ``x-amz-checksum-sha256`` so a server that implements
checksums refuses wrong bytes itself. ``head_staged`` reports what was staged (with the checksum
the server recorded, if any), ``promote`` copies exactly those bytes into place (``If-Match`` on
the ETag: the presigned URL is still valid and the client could overwrite the staging key between
the check and the copy). So nothing unverified is ever readable under an OID, a client cannot
overwrite an object another tenant stored, and linking always needs the bytes, never just the
hash. Objects larger than S3's single-copy limit (5 GiB) go through the daemon even in direct mode.
"""

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from modelrepo.errors import NotFound, StorageUnavailable
from modelrepo.settings import S3Settings
from modelrepo.storage.base import Partial, Presigned, Staged

_MISSING = {"404", "NoSuchKey", "NotFound"}
MAX_DIRECT = 5 * 1024**3  # CopyObject's single-request limit
MULTIPART = "multipart:"
CONTENT_TYPE = "application/octet-stream"


def checksum_b64(oid: str) -> str:
    return base64.b64encode(bytes.fromhex(oid)).decode()


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _MISSING


class S3Write:
    def __init__(self, backend: "S3Backend", key: str, size: int) -> None:
        self.backend = backend
        self.key = key
        self.part_size = backend.settings.part_size
        self.multipart = size > self.part_size
        self.upload_id: str | None = None
        self.buf = bytearray()
        self.parts: list[dict] = []
        self.number = 0
        self.pending: asyncio.Task | None = None

    async def start(self) -> None:
        if self.multipart:
            created = await self.backend._call("create_multipart_upload", Bucket=self.backend.bucket, Key=self.key,
                                               ContentType=CONTENT_TYPE)
            self.upload_id = created["UploadId"]

    async def write(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.buf += piece
        while self.multipart and len(self.buf) >= self.part_size:
            data = bytes(self.buf[:self.part_size])
            del self.buf[:self.part_size]
            await self._send(data)

    async def _send(self, data: bytes) -> None:
        if self.pending is not None:
            await self.pending  # one part in flight while the next is read and hashed
        self.number += 1
        self.pending = asyncio.create_task(self._upload_part(self.number, data))

    async def _upload_part(self, number: int, data: bytes) -> None:
        resp = await self.backend._call("upload_part", Bucket=self.backend.bucket, Key=self.key,
                                        UploadId=self.upload_id, PartNumber=number, Body=data,
                                        ContentLength=len(data))
        self.parts.append({"PartNumber": number, "ETag": resp["ETag"]})

    async def commit(self) -> None:
        b = self.backend
        if not self.multipart:
            await b._call("put_object", Bucket=b.bucket, Key=self.key, Body=bytes(self.buf),
                          ContentLength=len(self.buf), ContentType=CONTENT_TYPE)
            return
        if self.buf:
            await self._send(bytes(self.buf))
            self.buf.clear()
        if self.pending is not None:
            await self.pending
            self.pending = None
        self.parts.sort(key=lambda p: p["PartNumber"])
        await b._call("complete_multipart_upload", Bucket=b.bucket, Key=self.key, UploadId=self.upload_id,
                      MultipartUpload={"Parts": self.parts})

    async def abort(self) -> None:
        self.buf = bytearray()
        if self.pending is not None:
            self.pending.cancel()
            with contextlib.suppress(BaseException):
                await self.pending
        if self.upload_id is not None:
            s3 = await self.backend.client()
            await s3.abort_multipart_upload(Bucket=self.backend.bucket, Key=self.key, UploadId=self.upload_id)


class S3Backend:
    name = "s3"

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    def key(self, oid: str) -> str:
        return f"{self.prefix}{oid[0:2]}/{oid[2:4]}/{oid}"

    def local_path(self, oid: str) -> None:
        return None

    def location(self, oid: str) -> str:
        return f"s3://{self.bucket}/{self.key(oid)}"

    async def client(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    s = self.settings
                    config = AioConfig(
                        signature_version="s3v4",
                        s3={"addressing_style": s.addressing_style},
                        # Only send checksums we ask for: botocore's default CRC32 trailers and
                        # aws-chunked bodies are not understood by every S3-compatible server.
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required",
                        retries={"max_attempts": 4, "mode": "standard"},
                        max_pool_connections=64,
                        connect_timeout=10,
                        read_timeout=120,
                    )
                    stack = AsyncExitStack()
                    self._client = await stack.enter_async_context(get_session().create_client(
                        "s3", region_name=s.region, endpoint_url=s.endpoint_url, config=config,
                        aws_access_key_id=s.access_key_id, aws_secret_access_key=s.secret_access_key))
                    self._stack = stack
        return self._client

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._client = None

    async def _call(self, method: str, **params: Any) -> Any:
        s3 = await self.client()
        try:
            return await getattr(s3, method)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"object store error in {method}: {exc}") from exc

    # -- reads -------------------------------------------------------------------------------------
    async def stat(self, oid: str) -> int | None:
        s3 = await self.client()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self.key(oid))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise StorageUnavailable(f"object store error: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc
        return int(head["ContentLength"])

    async def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(oid)}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async for chunk in self._get(params):
            yield chunk

    async def _get(self, params: dict[str, Any]) -> AsyncIterator[bytes]:
        resp = await self._call("get_object", **params)
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(1024 * 1024):
                yield chunk

    # -- writes ------------------------------------------------------------------------------------
    async def begin(self, oid: str, size: int) -> S3Write:
        write = S3Write(self, self.key(oid), size)
        await write.start()
        return write

    async def delete(self, oid: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self.key(oid))

    # -- listings for gc and fsck --------------------------------------------------------------------
    async def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        """(oid, size, mtime) of every stored object (staging keys excluded)."""
        s3 = await self.client()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(self.prefix):]
                if rel.startswith("incoming/"):
                    continue
                yield rel.rsplit("/", 1)[-1], int(item["Size"]), item["LastModified"].timestamp()

    async def list_partial(self) -> list[Partial]:
        """Staging keys of direct uploads never verified, and multipart uploads never completed.
        Neither can say whether a live upload still owns it (S3 has no locks): held is False."""
        s3 = await self.client()
        out: list[Partial] = []
        objects = s3.get_paginator("list_objects_v2")
        async for page in objects.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}incoming/"):
            out += [Partial(item["Key"], item["LastModified"].timestamp(), "staged") for item in page.get("Contents", [])]
        uploads = s3.get_paginator("list_multipart_uploads")
        async for page in uploads.paginate(Bucket=self.bucket, Prefix=self.prefix):
            out += [Partial(f"{MULTIPART}{u['Key']}:{u['UploadId']}", u["Initiated"].timestamp(), "multipart")
                    for u in page.get("Uploads", [])]
        return out

    async def delete_partial(self, name: str) -> bool:
        if name.startswith(MULTIPART):
            key, upload_id = name[len(MULTIPART):].split(":", 1)
            await self._call("abort_multipart_upload", Bucket=self.bucket, Key=key, UploadId=upload_id)
        else:
            await self._call("delete_object", Bucket=self.bucket, Key=name)
        return True

    # -- direct mode (Presigner) -----------------------------------------------------------------------
    def staging_key(self, oid: str, nonce: str) -> str:
        return f"{self.prefix}incoming/{oid}/{nonce}"

    def can_presign_upload(self, size: int) -> bool:
        return size <= MAX_DIRECT

    async def presign_upload(self, oid: str, nonce: str, ttl: float) -> Presigned:
        s3 = await self.client()
        url = await s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": self.staging_key(oid, nonce), "ChecksumSHA256": checksum_b64(oid),
                    "ContentType": CONTENT_TYPE},
            ExpiresIn=int(ttl))
        # Both headers are part of the signature: git-lfs must send them as given (it would
        # otherwise sniff a Content-Type of its own).
        return Presigned(url, {"x-amz-checksum-sha256": checksum_b64(oid), "Content-Type": CONTENT_TYPE})

    async def presign_download(self, oid: str, ttl: float) -> Presigned:
        s3 = await self.client()
        url = await s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": self.key(oid)},
                                              ExpiresIn=int(ttl))
        return Presigned(url, {})

    async def head_staged(self, oid: str, nonce: str) -> Staged:
        s3 = await self.client()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self.staging_key(oid, nonce), ChecksumMode="ENABLED")
        except ClientError as exc:
            if _missing(exc):
                raise NotFound("object not uploaded") from None
            raise StorageUnavailable(f"object store error: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc
        recorded = head.get("ChecksumSHA256")
        sha256 = None
        if recorded:
            try:
                sha256 = base64.b64decode(recorded.split("-")[0], validate=True).hex()
            except (ValueError, binascii.Error):
                sha256 = ""  # unreadable: matches no OID
        return Staged(oid, nonce, int(head["ContentLength"]), head["ETag"], sha256)

    async def read_staged(self, staged: Staged) -> AsyncIterator[bytes]:
        params = {"Bucket": self.bucket, "Key": self.staging_key(staged.oid, staged.nonce), "IfMatch": staged.etag}
        async for chunk in self._get(params):
            yield chunk

    async def promote(self, staged: Staged) -> None:
        await self._call("copy_object", Bucket=self.bucket, Key=self.key(staged.oid),
                         CopySource={"Bucket": self.bucket, "Key": self.staging_key(staged.oid, staged.nonce)},
                         CopySourceIfMatch=staged.etag, ContentType=CONTENT_TYPE, MetadataDirective="REPLACE")

    async def drop_staged(self, staged: Staged) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self.staging_key(staged.oid, staged.nonce))
