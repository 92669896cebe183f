"""A file of a tree, as the inspections see it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class FileRef:
    """A file of a tree: its path, git blob id and, for an LFS pointer, the object it stands for."""

    path: str
    blob_oid: str
    lfs_oid: str | None = None
    size: int = 0

    @property
    def key(self) -> str:
        return self.lfs_oid or self.blob_oid
