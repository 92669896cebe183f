"""namespace quotas

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("namespaces") as batch:
        batch.add_column(sa.Column("quota_bytes", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("quota_models", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("namespaces") as batch:
        batch.drop_column("quota_models")
        batch.drop_column("quota_bytes")
