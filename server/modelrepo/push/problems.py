"""What a rule found wrong with a push, as a value: a stable code, a message for people, and the
ref or path it is about.

Every door reports problems its own way (``remote:`` lines, a JSON error, a Hub error), but the
HTTP status and the metrics label come from the code here, never from the wording, so rewording a
message cannot change how a refusal is counted or answered.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from modelrepo.errors import ModelrepoError


class Code(StrEnum):
    REF_NAMESPACE = "ref_namespace"  # only refs/heads/* and refs/tags/* may be written
    NOT_A_COMMIT = "not_a_commit"  # a ref whose new value does not peel to a commit
    DEPLOYED_REF = "deployed_ref"  # deleting a ref a live deployment uses
    IMMUTABLE_TAG = "immutable_tag"  # moving or deleting a tag without namespace admin
    DEFAULT_BRANCH = "default_branch"  # deleting the default branch
    NON_FAST_FORWARD = "non_fast_forward"  # rewriting the default branch without allow_force_push
    FILE_TOO_LARGE = "file_too_large"  # README.md / .gitattributes too large to judge
    LFS_REQUIRED = "lfs_required"  # a weight or a big file stored as a plain git blob
    GITATTRIBUTES = "gitattributes"  # an LFS path .gitattributes does not mark filter=lfs …
    LFS_MISSING = "lfs_missing"  # a pointer to an object this repository never received
    LFS_SIZE = "lfs_size"  # a pointer whose size disagrees with the stored object
    MODEL_CARD = "model_card"  # README.md front matter outside the model card schema
    LOCKED_PATH = "locked_path"  # a change to a path another user holds an LFS lock on


# The HTTP status an API door answers with when this is the (first) problem.
STATUS: dict[Code, int] = {
    Code.REF_NAMESPACE: 400,
    Code.NOT_A_COMMIT: 422,
    Code.DEPLOYED_REF: 409,
    Code.IMMUTABLE_TAG: 403,
    Code.DEFAULT_BRANCH: 409,
    Code.NON_FAST_FORWARD: 409,
    Code.FILE_TOO_LARGE: 422,
    Code.LFS_REQUIRED: 422,
    Code.GITATTRIBUTES: 422,
    Code.LFS_MISSING: 422,
    Code.LFS_SIZE: 422,
    Code.MODEL_CARD: 422,
    Code.LOCKED_PATH: 423,
}


@dataclass(frozen=True)
class Problem:
    code: Code
    message: str  # whole sentences, naming the ref or path, with the fix where there is one
    path: str | None = None
    ref: str | None = None

    def line(self) -> str:
        """The form every door shows: the message with its code, so a user can quote the code."""
        return f"{self.message} [{self.code}]"


class PushRefused(ModelrepoError):
    """An API door (REST ref change, Hub commit) refused by the judge: status and error code from
    the first problem, every problem in the message."""

    def __init__(self, problems: Sequence[Problem], prefix: str = "") -> None:
        first = problems[0]
        super().__init__(prefix + " | ".join(p.line() for p in problems), code=str(first.code))
        self.status = STATUS[first.code]
        self.problems = tuple(problems)
        # The codes in a header too: a client that gets only the Hub's {"error": text} can still
        # tell the rules apart without parsing the text.
        self.headers = {"X-Modelrepo-Problems": ",".join(dict.fromkeys(str(p.code) for p in problems))}
