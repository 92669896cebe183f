"""LFS objects, per-repository links, locks

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "lfs_objects",
        sa.Column("oid", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "lfs_links",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("oid", sa.String(64), sa.ForeignKey("lfs_objects.oid", ondelete="RESTRICT"), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_lfs_links_oid", "lfs_links", ["oid"])
    op.create_table(
        "lfs_locks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("ref", sa.Text, nullable=True),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("locked_at", sa.Float, nullable=False),
        sa.UniqueConstraint("model_id", "path", name="uq_lfs_locks_model_path"),
    )


def downgrade() -> None:
    op.drop_table("lfs_locks")
    op.drop_index("ix_lfs_links_oid", "lfs_links")
    op.drop_table("lfs_links")
    op.drop_table("lfs_objects")
