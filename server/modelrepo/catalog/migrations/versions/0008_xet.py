"""Xet storage: xorbs, their dedup index, registered files, per-repository links

Revision ID: 0008
Revises: 0007
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "xet_xorbs",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("object_oid", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("unpacked", sa.BigInteger, nullable=False),
        sa.Column("data_end", sa.BigInteger, nullable=False),
        sa.Column("chunks", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_xet_xorbs_object_oid", "xet_xorbs", ["object_oid"])
    op.create_table(
        "xet_xorb_links",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("xorb_hash", sa.String(64), sa.ForeignKey("xet_xorbs.hash", ondelete="RESTRICT"),
                  primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_xet_xorb_links_xorb_hash", "xet_xorb_links", ["xorb_hash"])
    op.create_table(
        "xet_dedup",
        sa.Column("chunk_hash", sa.String(64), primary_key=True),
        sa.Column("xorb_hash", sa.String(64), sa.ForeignKey("xet_xorbs.hash", ondelete="CASCADE"),
                  primary_key=True),
    )
    op.create_index("ix_xet_dedup_xorb_hash", "xet_dedup", ["xorb_hash"])
    op.create_table(
        "xet_files",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("terms", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_xet_files_sha256", "xet_files", ["sha256"])
    op.create_table(
        "xet_file_links",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("file_hash", sa.String(64), sa.ForeignKey("xet_files.hash", ondelete="RESTRICT"),
                  primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_xet_file_links_file_hash", "xet_file_links", ["file_hash"])


def downgrade() -> None:
    op.drop_index("ix_xet_file_links_file_hash", "xet_file_links")
    op.drop_table("xet_file_links")
    op.drop_index("ix_xet_files_sha256", "xet_files")
    op.drop_table("xet_files")
    op.drop_index("ix_xet_dedup_xorb_hash", "xet_dedup")
    op.drop_table("xet_dedup")
    op.drop_index("ix_xet_xorb_links_xorb_hash", "xet_xorb_links")
    op.drop_table("xet_xorb_links")
    op.drop_index("ix_xet_xorbs_object_oid", "xet_xorbs")
    op.drop_table("xet_xorbs")
