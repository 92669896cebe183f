"""The SSRF guard's address policy: which addresses count as internal, and what the operator's
``webhooks.allowed_hosts`` opts back in."""

import ipaddress

import pytest

from modelrepo.models.webhook_targets import AllowList, address_class, refusal
from modelrepo.settings import ConfigError, load_settings

INTERNAL = {
    "127.0.0.1": "loopback", "127.8.9.10": "loopback", "::1": "loopback",
    "169.254.169.254": "link-local", "fe80::1": "link-local",
    "10.0.0.5": "private", "172.16.3.4": "private", "172.31.255.255": "private", "192.168.1.1": "private",
    "fc00::1": "unique-local", "fd12:3456::1": "unique-local",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "224.0.0.1": "multicast", "239.255.255.250": "multicast", "ff02::1": "multicast",
    "::ffff:127.0.0.1": "IPv4-mapped loopback", "::ffff:169.254.169.254": "IPv4-mapped link-local",
    "::ffff:10.1.2.3": "IPv4-mapped private", "64:ff9b::7f00:1": "IPv4-mapped loopback",
    "2002:a00:1::": "IPv4-mapped private",
    "100.64.0.1": "reserved (not globally routable)", "0.1.2.3": "reserved (not globally routable)",
    "192.0.2.1": "reserved (not globally routable)", "::7f00:1": "reserved (not globally routable)",
}
PUBLIC = ["1.1.1.1", "93.184.215.14", "172.32.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address,kind", INTERNAL.items())
def test_internal_addresses_are_named(address, kind):
    assert address_class(ipaddress.ip_address(address)) == kind
    reason = refusal(address, ipaddress.ip_address(address), AllowList())
    assert reason and kind in reason and "webhooks.allowed_hosts" in reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert address_class(ipaddress.ip_address(address)) is None
    assert refusal(address, ipaddress.ip_address(address), AllowList()) is None


def test_allow_list_names_and_networks():
    allowed = AllowList.parse(["Deployer.Internal.", "10.20.0.0/16", "127.0.0.1", "[fd00::1]"])
    ip = ipaddress.ip_address
    assert refusal("deployer.internal", ip("10.9.9.9"), allowed) is None  # a trusted name, any address
    assert refusal("other.internal", ip("10.20.5.5"), allowed) is None  # inside a listed network
    assert refusal("other.internal", ip("10.21.0.1"), allowed) is not None
    assert refusal("127.0.0.1", ip("127.0.0.1"), allowed) is None
    assert refusal("::ffff:127.0.0.1", ip("::ffff:127.0.0.1"), allowed) is None  # the mapped form too
    assert refusal("127.0.0.2", ip("127.0.0.2"), allowed) is not None
    assert refusal("fd00::1", ip("fd00::1"), allowed) is None
    # A name listed is trusted by name only: the address it happens to have is not opened up.
    assert refusal("deployer.internal.evil.example", ip("10.9.9.9"), allowed) is not None


@pytest.mark.parametrize("entry", ["not a host", "http://x/", "10.0.0.0/33", "", "a..b"])
def test_bad_allowed_hosts_entries_stop_start_up(entry):
    with pytest.raises(ConfigError, match="webhooks.allowed_hosts") as exc:
        load_settings(None, environ={}, overrides={"webhooks.allowed_hosts": [entry]})
    assert repr(entry) in str(exc.value)
