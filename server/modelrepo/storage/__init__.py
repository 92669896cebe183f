"""LFS object storage behind one small interface (base.ObjectStore): local disk and S3."""

from ..settings import Settings
from .base import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    if settings.lfs.storage == "s3":
        from .s3 import S3Store  # noqa: PLC0415 - aiobotocore only when configured

        return S3Store(settings.lfs.s3)
    from .local import LocalStore  # noqa: PLC0415

    return LocalStore(settings.lfs_dir)
