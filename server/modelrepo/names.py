"""Validated names: the only strings that may ever become part of a filesystem path.

Namespaces and models share one rule. Refusing ``..``, a trailing ``.git`` and anything outside the
character class means a name can never climb out of the data directory, and comparing names
case-insensitively keeps ``Acme/BERT`` and ``acme/bert`` from being two repositories on a
case-insensitive filesystem or in a user's head.
"""

import re

from modelrepo.errors import InvalidInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# NAME_RE in words: what every refusal of a name says (the REST API, the CLI, the Hub API).
NAME_RULE = "use 1–96 letters, digits, '.', '_' or '-', starting with a letter or digit"
# First path segments taken by other routes: the APIs, probes and the web UI's own pages.
RESERVED = frozenset({"api", "healthz", "readyz", "metrics", "info", "objects", "static",
                      "login", "logout", "new", "settings"})
# Git ref component rules (git check-ref-format), enough to refuse anything git would.
_REF_BAD = re.compile(r"(^[./-])|(\.\.)|([\x00-\x20~^:?*\[\\\x7f])|(@\{)|(\.lock$)|(/$)|(\.$)|(//)|(/\.)")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a valid namespace/model/user name, else raise InvalidInput."""
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidInput(f"invalid {what} name {value!r}: {NAME_RULE}")
    if ".." in value:
        raise InvalidInput(f"invalid {what} name {value!r}: '..' is not allowed")
    if value.lower().endswith(".git"):
        raise InvalidInput(f"invalid {what} name {value!r}: must not end with '.git'")
    if what == "namespace" and value.lower() in RESERVED:
        raise InvalidInput(f"invalid namespace name {value!r}: reserved")
    return value


def check_ref_name(value: object, what: str = "branch") -> str:
    """A branch or tag short name (without refs/heads/ or refs/tags/). A full ref name or HEAD is
    refused as ambiguous: "refs/heads/main" would become refs/heads/refs/heads/main, a branch that
    git resolves differently depending on how it is spelled."""
    if not isinstance(value, str) or not value or len(value) > 255 or _REF_BAD.search(value):
        raise InvalidInput(f"invalid {what} name {value!r}")
    if value == "HEAD" or value.startswith("refs/"):
        short = value.split("/", 2)[-1] if value.startswith(("refs/heads/", "refs/tags/")) else None
        hint = f": give the short name, e.g. {short!r}" if short else ""
        raise InvalidInput(f"ambiguous {what} name {value!r}{hint}")
    return value
