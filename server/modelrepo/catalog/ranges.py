"""The integer ranges the catalog's columns hold on both engines (no imports: the CLI and the
HTTP layer check numbers against them before any query).

PostgreSQL's INTEGER is 32-bit where SQLite's is 64-bit, and PostgreSQL's id sequences stop at
the 32-bit limit. A larger number from a client would overflow the query on PostgreSQL (a 500
where SQLite answers "not found"), so callers refuse it, or treat it as an id no row has, first.
"""

# INTEGER columns: every row id, and counts such as a namespace's model quota.
MAX_INTEGER = 2**31 - 1
# BIGINT columns (sizes, byte quotas): 64-bit signed on both.
MAX_BIGINT = 2**63 - 1
