"""Who may do what: the access table of the design brief, in one place.

| visibility | read                                | write                         |
| private    | members of the model's namespace    | namespace writers/admins      |
| shared     | any authenticated user              | namespace writers/admins      |
| public     | everyone, anonymous included        | namespace writers/admins      |

A token's scope caps what its user's roles allow: a read-scoped token of a namespace admin reads.
"""

from dataclasses import dataclass

from modelrepo.errors import Forbidden, Unauthenticated, model_not_found

SCOPES = ("read", "write", "admin")
ROLES = ("reader", "writer", "admin")
VISIBILITIES = ("private", "shared", "public")


def scope_level(scope: str | None) -> int:
    return SCOPES.index(scope) + 1 if scope in SCOPES else 0


def role_level(role: str | None) -> int:
    return ROLES.index(role) + 1 if role in ROLES else 0


@dataclass(frozen=True)
class Identity:
    user_id: int | None = None
    name: str | None = None
    is_admin: bool = False
    scope: str | None = None
    token_id: int | None = None

    @property
    def anonymous(self) -> bool:
        return self.user_id is None

    def allows(self, scope: str) -> bool:
        return scope_level(self.scope) >= scope_level(scope)

    def namespace_admin(self, role: str | None) -> bool:
        """Acting as a namespace admin: the role there (or site admin) and an admin-scoped token."""
        return (self.is_admin or role_level(role) >= role_level("admin")) and self.allows("admin")

    @property
    def site_admin(self) -> bool:
        """Site-admin powers need both the flag on the user and an admin-scoped token."""
        return self.is_admin and self.allows("admin")


ANONYMOUS = Identity()


def require_authenticated(identity: Identity) -> None:
    if identity.anonymous:
        raise Unauthenticated("authentication required")


def require_site_admin(identity: Identity) -> None:
    require_authenticated(identity)
    if not identity.site_admin:
        raise Forbidden("site administrator rights (and an admin-scoped token) required")


def can_read(identity: Identity, visibility: str, role: str | None) -> bool:
    if visibility == "public":
        return True
    if identity.anonymous:
        return False
    if identity.is_admin:
        return True
    if visibility == "shared":
        return True
    return role is not None


def check_read(identity: Identity, visibility: str | None, role: str | None) -> None:
    """``visibility`` None means the model does not exist. Anonymous callers get 401 for anything
    not public (missing included), so git prompts for credentials; authenticated callers who may
    not read get exactly the 'not found' of a missing model."""
    if visibility is not None and can_read(identity, visibility, role):
        return
    if identity.anonymous:
        raise Unauthenticated("authentication required")
    raise model_not_found()


def check_model_role(identity: Identity, role: str | None, needed_role: str, needed_scope: str) -> None:
    """After check_read passed: may this caller write (push, tag) or administer the model?"""
    if identity.anonymous:
        raise Unauthenticated("authentication required")
    has_role = identity.is_admin or role_level(role) >= role_level(needed_role)
    if not has_role:
        raise Forbidden(f"namespace {needed_role} role required")
    if not identity.allows(needed_scope):
        raise Forbidden(f"this token lacks the '{needed_scope}' scope")


def check_namespace_admin(identity: Identity, role: str | None) -> None:
    check_model_role(identity, role, "admin", "admin")
