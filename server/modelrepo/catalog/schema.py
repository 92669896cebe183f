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
    # Set while the user is disabled: its tokens do not authenticate (they are kept for enable).
    sa.Column("disabled_at", sa.Float, nullable=True),
    # argon2id hash (accounts/passwords.py); null: the user signs in with tokens only.
    sa.Column("password_hash", sa.String(255), nullable=True),
)

# Browser sessions of the web UI: only the SHA-256 of the cookie value is stored, like tokens.
ui_sessions = sa.Table(
    "ui_sessions", metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
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
    # Quotas (null: unlimited): LFS bytes counted once per distinct linked object, and models.
    sa.Column("quota_bytes", sa.BigInteger, nullable=True),
    sa.Column("quota_models", sa.Integer, nullable=True),
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
    # Kept current by post-receive from the default branch (never from the client's word).
    sa.Column("allow_force_push", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("card_json", sa.Text, nullable=True),
    sa.Column("summary", sa.Text, nullable=False, server_default=""),
    sa.Column("library_name", sa.String(100), nullable=True),
    sa.Column("pipeline_tag", sa.String(100), nullable=True),
    sa.Column("total_size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("head_commit", sa.String(40), nullable=True),
)

model_card_tags = sa.Table(
    "model_card_tags", metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag", sa.String(200), primary_key=True, index=True),
)

model_refs = sa.Table(
    "model_refs", metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),  # branch | tag
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("commit", sa.String(40), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("tagger", sa.Text, nullable=True),  # JSON {name, email, date}
    sa.Column("date", sa.String(40), nullable=True),
)

model_files = sa.Table(
    "model_files", metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),  # LFS size for pointers, blob size otherwise
    sa.Column("blob_oid", sa.String(40), nullable=False),
    sa.Column("lfs_oid", sa.String(64), nullable=True),
)

webhooks = sa.Table(
    "webhooks", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("namespace_id", sa.Integer, sa.ForeignKey("namespaces.id", ondelete="CASCADE"), nullable=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("events", sa.Text, nullable=False),  # JSON list
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The outbox: one row per (event, webhook), written in the transaction that caused the event.
deliveries = sa.Table(
    "deliveries", metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # X-Modelrepo-Delivery, stable across retries
    sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("last_response_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    # The worker whose attempt is in flight, and until when: another worker takes the row over only
    # once the lease has passed (the claimer died), so every delivery goes out once in the normal case.
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    sa.Index("ix_deliveries_webhook", "webhook_id", "created_at"),
)

delivery_attempts = sa.Table(
    "delivery_attempts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("delivery_id", sa.String(36), sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("response_code", sa.Integer, nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_delivery_attempts_delivery", "delivery_id"),
)

deployments = sa.Table(
    "deployments", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(96), nullable=False),
    sa.Column("revision", sa.String(255), nullable=False),
    sa.Column("commit", sa.String(40), nullable=False),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("params", sa.Text, nullable=False, server_default="{}"),
    sa.Column("status", sa.String(16), nullable=False),  # requested | active | failed | stopped
    sa.Column("endpoint", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(96), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_deployments_model", "model_id"),
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

# What is inside a file, once per stored object: keyed by the LFS sha256 or, for a plain file, the
# git blob id. (model, commit, path) reach it through the tree (model_files for the default branch).
inspections = sa.Table(
    "inspections", metadata,
    sa.Column("oid", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # safetensors | gguf | pickle | zip | numpy | other | …
    sa.Column("status", sa.String(16), nullable=True),  # safe | warning | dangerous; null: not executable
    sa.Column("result", sa.Text, nullable=False),  # JSON: parameters, globals, error …
    sa.Column("version", sa.Integer, nullable=False),  # reader version; the backfill redoes older ones
    sa.Column("bytes_read", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("inspected_at", sa.Float, nullable=False),
)

# -- Xet (xet/): xorbs are stored in the object store under the sha256 of their serialized bytes;
# hashes here are Xet hashes in the protocol's hex form.
xet_xorbs = sa.Table(
    "xet_xorbs", metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("object_oid", sa.String(64), nullable=False, index=True),  # store key: sha256 of the bytes
    sa.Column("size", sa.BigInteger, nullable=False),  # serialized bytes: what the store holds
    sa.Column("unpacked", sa.BigInteger, nullable=False),  # sum of chunk lengths
    sa.Column("data_end", sa.BigInteger, nullable=False),  # end of the last chunk (the footer follows)
    sa.Column("chunks", sa.LargeBinary, nullable=False),  # packed (hash, offset, length) per chunk
    sa.Column("created_at", sa.Float, nullable=False),
)

# A xorb a model uploaded (all of its bytes) or proved it holds (a shard's verification hashes):
# global dedup answers a repository only with its own xorbs.
xet_xorb_links = sa.Table(
    "xet_xorb_links", metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("xorb_hash", sa.String(64), sa.ForeignKey("xet_xorbs.hash", ondelete="RESTRICT"), primary_key=True,
              index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Chunks eligible for global dedup (hash = 0 mod 1024, or a file's first chunk) -> their xorbs.
xet_dedup = sa.Table(
    "xet_dedup", metadata,
    sa.Column("chunk_hash", sa.String(64), primary_key=True),
    sa.Column("xorb_hash", sa.String(64), sa.ForeignKey("xet_xorbs.hash", ondelete="CASCADE"), primary_key=True,
              index=True),
)

# Files registered by a shard: how to rebuild them, and the sha256 their LFS pointer names.
xet_files = sa.Table(
    "xet_files", metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("terms", sa.LargeBinary, nullable=False),  # packed (xorb hash, start, end, unpacked) per term
    sa.Column("created_at", sa.Float, nullable=False),
)

xet_file_links = sa.Table(
    "xet_file_links", metadata,
    sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("file_hash", sa.String(64), sa.ForeignKey("xet_files.hash", ondelete="RESTRICT"), primary_key=True,
              index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Failed authentications per client address, shared by every daemon process on the catalog (the
# brute-force guard's budget); rows older than the window are pruned as new ones arrive.
auth_failures = sa.Table(
    "auth_failures", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("address", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Index("ix_auth_failures_address_at", "address", "at"),
)

# Signing keys (LFS and Xet action tokens, the web UI's CSRF key): created once by whichever
# process starts first, so every replica signs and verifies with the same bytes.
signing_keys = sa.Table(
    "signing_keys", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("secret", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)
