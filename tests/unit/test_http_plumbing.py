"""The pieces of the HTTP plumbing that decide on their own: pkt-line framing, the git process
caps, lone surrogates in JSON, git's own complaints about a request, ambiguous ref names."""

import pytest

from modelrepo.errors import InvalidInput, ServiceBusy
from modelrepo.git.runner import PktLineCheck, ProcessSlots, client_fault, pkt_line
from modelrepo.names import check_ref_name
from modelrepo.web.bodies import _as_integers, _lone_surrogate


def _check(body: bytes, *, until_flush: bool = False, split: int | None = None) -> None:
    check = PktLineCheck(until_flush=until_flush)
    parts = [body[i:i + split] for i in range(0, len(body), split)] if split else [body]
    for part in parts:
        check.feed(part)
    check.finish()


GOOD = [b"0000", b"0009done\n", b"0032want " + b"a" * 40 + b"\n00000009done\n",
        b"0014command=ls-refs\n00010009peel\n0000", b"0004"]


@pytest.mark.parametrize("body", GOOD)
@pytest.mark.parametrize("split", [None, 1, 3])
def test_well_framed_bodies_pass_in_any_segmentation(body, split):
    _check(body, split=split)


@pytest.mark.parametrize("body", [b"zzzzhello", b"0003", b"0002", b"fff1" + b"x" * 70000, b"0010abc", b"00",
                                  b"0009don", b"\xff\xff\xff\xff"])
@pytest.mark.parametrize("split", [None, 1])
def test_broken_framing_is_refused(body, split):
    with pytest.raises(InvalidInput, match="malformed git request"):
        _check(body, split=split)


def test_receive_pack_stops_checking_at_the_pack():
    # Commands, flush, then a pack: the pack is not pkt-lines and must not be judged as such.
    body = pkt_line(b"0" * 40 + b" " + b"1" * 40 + b" refs/heads/main\x00report-status\n") + b"0000PACK\x00\x00\x02zz"
    _check(body, until_flush=True, split=5)
    with pytest.raises(InvalidInput):
        _check(body, until_flush=False)


def test_process_slots_cap_per_client_and_in_total():
    slots = ProcessSlots(total=3, per_client=2)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(ServiceBusy) as busy:
            with slots.hold("a"):
                pass
        assert busy.value.status == 503 and int(busy.value.headers["Retry-After"]) >= 1
        with slots.hold("b"):
            assert slots.count == 3
            with pytest.raises(ServiceBusy, match="maximum of 3"):
                with slots.hold("c"):
                    pass
    assert slots.count == 0 and not slots.running, "slots are given back, even after a refusal"


def test_git_client_faults_are_told_apart_from_server_faults():
    assert client_fault("fatal: protocol error: expected old/new/ref, got 'want'") == \
        "protocol error: expected old/new/ref, got 'want'"
    assert client_fault("fatal: git upload-pack: not our ref " + "0" * 40).startswith("not our ref")
    assert client_fault("fatal: unknown capability 'done'")
    assert client_fault("fatal: not a git repository: '/srv/repos/x.git'") is None
    assert client_fault("error: unable to write file") is None


def test_lone_surrogates_are_found_with_their_path():
    assert _lone_surrogate({"a": "fine", "b": ["x", {"c": "\udc80"}]}) == "b/1/c"
    assert _lone_surrogate({"\ud800": 1}) == "(body)"
    assert _lone_surrogate("\ud800") == ""
    assert _lone_surrogate({"a": "😀", "b": [1, 2.5, None]}) is None


def test_integral_floats_become_integers_where_the_schema_says_integer():
    schema = {"type": "object", "properties": {"n": {"type": ["integer", "null"]}, "x": {"type": "number"},
                                               "l": {"type": "array", "items": {"type": "integer"}}}}
    out = _as_integers({"n": 5.0, "x": 5.0, "l": [1.0, 2], "other": 3.0}, schema)
    assert out == {"n": 5, "x": 5.0, "l": [1, 2], "other": 3.0}
    assert type(out["n"]) is int and type(out["x"]) is float and type(out["other"]) is float


@pytest.mark.parametrize("name", ["refs/heads/main", "refs/tags/v1", "HEAD", "refs/anything"])
def test_full_ref_names_are_ambiguous(name):
    with pytest.raises(InvalidInput, match="ambiguous"):
        check_ref_name(name)


def test_short_names_that_merely_contain_refs_are_fine():
    assert check_ref_name("feature/refs/x") == "feature/refs/x"
    assert check_ref_name("HEADS-up") == "HEADS-up"


def _from(peer: str, *forwarded: str, trusted: tuple[str, ...] = ("10.0.0.0/24", "::1")) -> str:
    from aiohttp.test_utils import make_mocked_request
    from multidict import CIMultiDict

    from modelrepo.settings import ServerSettings
    from modelrepo.web.routing import client_address

    transport = type("T", (), {"get_extra_info": lambda self, key, default=None:
                               (peer, 1234) if key == "peername" else default})()
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    request = make_mocked_request("GET", "/", headers=headers, transport=transport)
    return client_address(request, ServerSettings(trusted_proxies=trusted))


def test_client_address_believes_only_trusted_proxies():
    assert _from("203.0.113.9", "198.51.100.1") == "203.0.113.9"  # not a proxy: its header is the client's say
    assert _from("10.0.0.5", "198.51.100.1") == "198.51.100.1"
    # The client prepends what it likes; the proxies append what they saw, right to left.
    assert _from("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.7") == "198.51.100.1"
    assert _from("10.0.0.5", "1.2.3.4", "198.51.100.1") == "198.51.100.1"  # repeated headers join in order
    assert _from("10.0.0.5") == "10.0.0.5"
    assert _from("10.0.0.5", "garbage") == "10.0.0.5"
    assert _from("::1", "10.0.0.9") == "10.0.0.9"  # everyone trusted: the first hop is the client
    assert _from("10.0.0.5", "198.51.100.1", trusted=()) == "10.0.0.5"  # no trusted proxies: header ignored
