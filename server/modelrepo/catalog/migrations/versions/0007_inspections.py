"""what is inside model files: one inspection per stored object

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inspections",
        sa.Column("oid", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("bytes_read", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("inspected_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("inspections")
