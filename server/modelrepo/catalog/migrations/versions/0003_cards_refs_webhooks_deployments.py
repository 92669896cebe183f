"""model cards, refs and files in the catalog; webhooks with a durable outbox; deployments

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("allow_force_push", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("card_json", sa.Text, nullable=True))
        batch.add_column(sa.Column("summary", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("library_name", sa.String(100), nullable=True))
        batch.add_column(sa.Column("pipeline_tag", sa.String(100), nullable=True))
        batch.add_column(sa.Column("total_size", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("head_commit", sa.String(40), nullable=True))
    op.create_table(
        "model_card_tags",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(200), primary_key=True),
    )
    op.create_index("ix_model_card_tags_tag", "model_card_tags", ["tag"])
    op.create_table(
        "model_refs",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("kind", sa.String(8), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("commit", sa.String(40), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("tagger", sa.Text, nullable=True),
        sa.Column("date", sa.String(40), nullable=True),
    )
    op.create_table(
        "model_files",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("blob_oid", sa.String(40), nullable=False),
        sa.Column("lfs_oid", sa.String(64), nullable=True),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Float, nullable=False),
        sa.Column("last_response_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float, nullable=True),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_deliveries_webhook", "deliveries", ["webhook_id", "created_at"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("delivery_id", sa.String(36), sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("response_code", sa.Integer, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_delivery_attempts_delivery", "delivery_attempts", ["delivery_id"])
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(96), nullable=False),
        sa.Column("revision", sa.String(255), nullable=False),
        sa.Column("commit", sa.String(40), nullable=False),
        sa.Column("target", sa.Text, nullable=True),
        sa.Column("params", sa.Text, nullable=False, server_default="{}"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(96), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_deployments_model", "deployments", ["model_id"])


def downgrade() -> None:
    for table in ("deployments", "delivery_attempts", "deliveries", "webhooks", "model_files", "model_refs",
                  "model_card_tags"):
        op.drop_table(table)
    with op.batch_alter_table("models") as batch:
        for col in ("head_commit", "total_size", "pipeline_tag", "library_name", "summary", "card_json",
                    "allow_force_push"):
            batch.drop_column(col)
