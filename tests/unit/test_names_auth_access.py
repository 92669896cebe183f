import base64

import pytest

from modelrepo.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from modelrepo.names import check_name, check_ref_name
from modelrepo.accounts.access import ANONYMOUS, Identity, check_model_role, check_read
from modelrepo.web.auth import parse_authorization


@pytest.mark.parametrize("name", ["bert", "BERT-base.v2", "a", "x_y-z.1", "9" * 96])
def test_good_names(name):
    assert check_name(name, "model") == name


@pytest.mark.parametrize("name", ["", ".x", "-x", "_x", "a..b", "..", "a/b", "a\\b", "x.git", "X.GIT", "a b",
                                  "a\x00b", "é", "9" * 97, None, 5])
def test_bad_names(name):
    with pytest.raises(InvalidInput):
        check_name(name, "model")


def test_reserved_namespaces():
    with pytest.raises(InvalidInput):
        check_name("api", "namespace")
    assert check_name("api", "model") == "api"


@pytest.mark.parametrize("ref", ["a..b", "-x", "x.lock", "a b", "a~1", "a^", "a:b", "/x", "x/", "a//b", "a/.b",
                                 "x@{y", "", "a\\b"])
def test_bad_ref_names(ref):
    with pytest.raises(InvalidInput):
        check_ref_name(ref)


def test_parse_authorization():
    basic = "Basic " + base64.b64encode(b"alice:mr_tok:with:colons").decode()
    assert parse_authorization(basic) == ("alice", "mr_tok:with:colons")
    assert parse_authorization("Bearer abc") == (None, "abc")
    assert parse_authorization("bearer   abc ") == (None, "abc")
    for bad in ("Basic", "Basic !!", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic " + base64.b64encode(b"alice:").decode(), "Token abc", "Bearer"):
        assert parse_authorization(bad) is None, bad


ALICE = Identity(user_id=1, name="alice", scope="write")
READONLY = Identity(user_id=1, name="alice", scope="read")
ADMIN_READ_TOKEN = Identity(user_id=2, name="root", is_admin=True, scope="read")


@pytest.mark.parametrize("identity, visibility, role, outcome", [
    (ANONYMOUS, "public", None, None),
    (ANONYMOUS, "shared", None, Unauthenticated),
    (ANONYMOUS, "private", None, Unauthenticated),
    (ANONYMOUS, None, None, Unauthenticated),  # missing looks like private to anonymous
    (ALICE, "shared", None, None),
    (ALICE, "private", None, NotFound),
    (ALICE, None, None, NotFound),
    (ALICE, "private", "reader", None),
    (ADMIN_READ_TOKEN, "private", None, None),
])
def test_read_rule(identity, visibility, role, outcome):
    if outcome is None:
        check_read(identity, visibility, role)
    else:
        with pytest.raises(outcome):
            check_read(identity, visibility, role)


def test_write_needs_role_and_scope():
    check_model_role(ALICE, "writer", "writer", "write")
    with pytest.raises(Forbidden):
        check_model_role(ALICE, "reader", "writer", "write")
    with pytest.raises(Forbidden):
        check_model_role(READONLY, "admin", "writer", "write")
    with pytest.raises(Unauthenticated):
        check_model_role(ANONYMOUS, None, "writer", "write")
    with pytest.raises(Forbidden):  # a site admin's read token cannot write
        check_model_role(ADMIN_READ_TOKEN, None, "writer", "write")
