"""The catalog: tenants, users, tokens, models. SQLAlchemy Core over SQLite by default."""
