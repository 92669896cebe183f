"""S3 object store (aiobotocore): any S3-compatible server — AWS, SeaweedFS, MinIO, Ceph RGW.

proxy mode: bytes flow through the daemon. Objects up to one part are verified in memory and
then written with one PutObject; larger ones go up as a multipart upload whose parts are sent
while the sha256 runs, and the upload is completed only if the hash and size match (aborted
otherwise), so a bad or interrupted upload never becomes visible under its key.

direct mode: the batch API hands clients presigned URLs. An upload goes to a one-off staging key
(``<prefix>incoming/<oid>/<nonce>``), never to the object's own key, and its URL signs the sha256
as ``x-amz-checksum-sha256`` so a server that implements checksums refuses wrong bytes itself.
``verify_upload`` checks the staged object's size and checksum (re-hashing it through the daemon
when the server recorded no checksum), copies it into place server-side and removes the staging
key. So nothing unverified is ever readable under an OID, a client cannot overwrite an object
another tenant stored, and linking always needs the bytes, never just the hash. Objects larger
than S3's single-copy limit (5 GiB) go through the daemon (proxy path) even in direct mode.
"""

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from modelrepo.errors import IntegrityError, NotFound, StorageUnavailable
from modelrepo.settings import S3Settings
from modelrepo.storage.base import Presigned, Verifier, fixed_chunks, rechunk

_MISSING = {"404", "NoSuchKey", "NotFound"}
MAX_DIRECT = 5 * 1024**3  # CopyObject's single-request limit


def checksum_b64(oid: str) -> str:
    return base64.b64encode(bytes.fromhex(oid)).decode()


class S3Store:
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

    # -- reads -------------------------------------------------------------------------------------
    async def stat(self, oid: str) -> int | None:
        s3 = await self.client()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self.key(oid))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise StorageUnavailable(f"object store error: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc
        return int(head["ContentLength"])

    async def read(self, oid: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        s3 = await self.client()
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(oid)}
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            resp = await s3.get_object(**params)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"object store error: {exc}") from exc
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(1024 * 1024):
                yield chunk

    # -- proxy uploads -------------------------------------------------------------------------------
    async def put(self, oid: str, size: int, chunks: AsyncIterator[bytes]) -> None:
        part_size = self.settings.part_size
        verifier = Verifier(oid, size)
        if size <= part_size:
            buf = bytearray()
            async for chunk in rechunk(chunks, 1024 * 1024):
                await asyncio.to_thread(verifier.update, chunk)
                buf += chunk
            verifier.finish()
            await self._call("put_object", Bucket=self.bucket, Key=self.key(oid), Body=bytes(buf),
                             ContentLength=size, ContentType="application/octet-stream")
            return
        s3 = await self.client()
        created = await self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key(oid),
                                   ContentType="application/octet-stream")
        upload_id = created["UploadId"]
        parts: list[dict] = []
        pending: asyncio.Task | None = None

        async def send(number: int, data: bytes) -> None:
            resp = await s3.upload_part(Bucket=self.bucket, Key=self.key(oid), UploadId=upload_id,
                                        PartNumber=number, Body=data, ContentLength=len(data))
            parts.append({"PartNumber": number, "ETag": resp["ETag"]})

        try:
            number = 0
            async for piece in fixed_chunks(chunks, part_size):
                await asyncio.to_thread(verifier.update, piece)
                if pending is not None:
                    await pending  # one part in flight while the next is read and hashed
                number += 1
                pending = asyncio.create_task(send(number, piece))
            if pending is not None:
                await pending
                pending = None
            verifier.finish()
            parts.sort(key=lambda p: p["PartNumber"])
            await self._call("complete_multipart_upload", Bucket=self.bucket, Key=self.key(oid), UploadId=upload_id,
                             MultipartUpload={"Parts": parts})
        except BaseException:
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(Exception):
                await asyncio.shield(s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key(oid),
                                                               UploadId=upload_id))
            raise

    async def list_objects(self) -> AsyncIterator[tuple[str, int, float]]:
        """(oid, size, mtime) of every stored object (staging keys excluded), for gc and fsck."""
        s3 = await self.client()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(self.prefix):]
                if rel.startswith("incoming/"):
                    continue
                yield rel.rsplit("/", 1)[-1], int(item["Size"]), item["LastModified"].timestamp()

    async def list_temp(self) -> list[tuple[str, float]]:
        """Staging keys of direct uploads never verified, and multipart uploads never completed."""
        s3 = await self.client()
        out: list[tuple[str, float]] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}incoming/"):
            out += [(item["Key"], item["LastModified"].timestamp()) for item in page.get("Contents", [])]
        uploads = await s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix)
        out += [(f"multipart:{u['Key']}:{u['UploadId']}", u["Initiated"].timestamp())
                for u in uploads.get("Uploads", [])]
        return out

    async def delete_temp(self, name: str) -> None:
        s3 = await self.client()
        if name.startswith("multipart:"):
            _, key, upload_id = name.split(":", 2)
            await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        else:
            await s3.delete_object(Bucket=self.bucket, Key=name)

    async def delete(self, oid: str) -> None:
        await self._call("delete_object", Bucket=self.bucket, Key=self.key(oid))

    async def _call(self, method: str, **params: Any) -> Any:
        s3 = await self.client()
        try:
            return await getattr(s3, method)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"object store error in {method}: {exc}") from exc

    # -- direct mode -----------------------------------------------------------------------------------
    def staging_key(self, oid: str, nonce: str) -> str:
        return f"{self.prefix}incoming/{oid}/{nonce}"

    def can_presign_upload(self, size: int) -> bool:
        return size <= MAX_DIRECT

    async def presign_upload(self, oid: str, nonce: str, ttl: float) -> Presigned:
        s3 = await self.client()
        url = await s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": self.staging_key(oid, nonce), "ChecksumSHA256": checksum_b64(oid),
                    "ContentType": "application/octet-stream"},
            ExpiresIn=int(ttl))
        # Both headers are part of the signature: git-lfs must send them as given (it would
        # otherwise sniff a Content-Type of its own).
        return Presigned(url, {"x-amz-checksum-sha256": checksum_b64(oid), "Content-Type": "application/octet-stream"})

    async def presign_download(self, oid: str, ttl: float) -> Presigned:
        s3 = await self.client()
        url = await s3.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": self.key(oid)},
                                              ExpiresIn=int(ttl))
        return Presigned(url, {})

    async def verify_upload(self, oid: str, size: int, nonce: str) -> None:
        """Check the staged upload, move it into place, or delete it and raise."""
        s3 = await self.client()
        staged = self.staging_key(oid, nonce)
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=staged, ChecksumMode="ENABLED")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise NotFound("object not uploaded") from None
            raise StorageUnavailable(f"object store error: {exc}") from exc
        try:
            if int(head["ContentLength"]) != size:
                raise IntegrityError(f"uploaded object has {head['ContentLength']} bytes, expected {size}")
            etag = head["ETag"]
            recorded = head.get("ChecksumSHA256")
            if recorded:
                if recorded.split("-")[0] != checksum_b64(oid):
                    raise IntegrityError("uploaded object's sha256 does not match its OID")
            else:
                # The server kept no checksum: hash the staged bytes ourselves before trusting them.
                verifier = Verifier(oid, size)
                async for chunk in self._read_key(staged, etag):
                    await asyncio.to_thread(verifier.update, chunk)
                verifier.finish()
            if await self.stat(oid) is None:
                # Copy exactly the bytes we judged: the presigned URL is still valid, and the client
                # could overwrite the staging key between our check and the copy.
                await self._call("copy_object", Bucket=self.bucket, Key=self.key(oid),
                                 CopySource={"Bucket": self.bucket, "Key": staged}, CopySourceIfMatch=etag,
                                 ContentType="application/octet-stream", MetadataDirective="REPLACE")
        finally:
            with contextlib.suppress(Exception):
                await s3.delete_object(Bucket=self.bucket, Key=staged)

    async def _read_key(self, key: str, etag: str) -> AsyncIterator[bytes]:
        s3 = await self.client()
        resp = await s3.get_object(Bucket=self.bucket, Key=key, IfMatch=etag)
        async with resp["Body"] as body:
            async for chunk in body.iter_chunks(1024 * 1024):
                yield chunk
