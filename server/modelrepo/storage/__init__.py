"""LFS object storage as narrow layers: a backend that only moves bytes (base.Backend: local disk
or S3) under the one layer that checks them (verified.ObjectStore), which is what callers hold."""

from modelrepo.settings import Settings
from modelrepo.storage.base import Backend
from modelrepo.storage.verified import ObjectStore


def open_backend(settings: Settings) -> Backend:
    if settings.lfs.storage == "s3":
        from modelrepo.storage.s3 import S3Backend  # noqa: PLC0415 - aiobotocore only when configured

        return S3Backend(settings.lfs.s3)
    from modelrepo.storage.local import LocalBackend  # noqa: PLC0415

    return LocalBackend(settings.lfs_dir)


def open_store(settings: Settings) -> ObjectStore:
    return ObjectStore(open_backend(settings))
