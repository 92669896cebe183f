"""Table definitions for queries. The schema itself is owned by the Alembic migrations in
``migrations/versions``; a test checks that the two agree."""

import sqlalchemy as sa

metadata = sa.MetaData()

users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(96), nullable=False),
    sa.Column("name_key", sa.String(96), nullable=False, unique=True),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)

tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    # sha256 hex of the token; the token itself is never stored.
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
)

namespaces = sa.Table(
    "namespaces", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(96), nullable=False),
    sa.Column("name_key", sa.String(96), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
)

memberships = sa.Table(
    "memberships", metadata,
    sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
    sa.Column("role", sa.String(16), nullable=False),
)

models = sa.Table(
    "models", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("name", sa.String(96), nullable=False),
    sa.Column("name_key", sa.String(96), nullable=False),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("visibility", sa.String(16), nullable=False),
    sa.Column("default_branch", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("namespace_id", "name_key", name="uq_models_namespace_name"),
)

# Objects whose verified bytes are in the store (one row per OID, whatever links it).
lfs_objects = sa.Table(
    "lfs_objects", metadata,
    sa.Column("oid", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# An OID is readable through a model only if that model received it: one row per (model, OID).
lfs_links = sa.Table(
    "lfs_links", metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("oid", sa.String(64), sa.ForeignKey("lfs_objects.oid", ondelete="RESTRICT"), primary_key=True,
              index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

lfs_locks = sa.Table(
    "lfs_locks", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("ref", sa.Text, nullable=True),
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("locked_at", sa.Float, nullable=False),
    sa.UniqueConstraint("model_id", "path", name="uq_lfs_locks_model_path"),
)
