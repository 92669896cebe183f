"""Who is asking and what they may do: users, hashed scoped tokens, namespaces and memberships
(service), the access table every door consults (access), and the failed-authentication limiter
(auth_guard)."""
