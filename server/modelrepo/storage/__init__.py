"""LFS object storage behind one small interface (base.ObjectStore): local disk and S3."""

from modelrepo.settings import Settings
from modelrepo.storage.base import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    if settings.lfs.storage == "s3":
        from modelrepo.storage.s3 import S3Store  # noqa: PLC0415 - aiobotocore only when configured

        return S3Store(settings.lfs.s3)
    from modelrepo.storage.local import LocalStore  # noqa: PLC0415

    return LocalStore(settings.lfs_dir)
