"""Which addresses a webhook may reach: the SSRF guard.

Tenant admins choose webhook URLs, and the daemon POSTs to them from inside the operator's network.
Unguarded, a URL naming 127.0.0.1, the cloud metadata address 169.254.169.254 or a private network
would make the server a proxy into places tenants must not reach. So an address that is loopback,
link-local, private, unique-local, unspecified, multicast or otherwise not globally routable — also
when it hides inside an IPv6 form (IPv4-mapped ``::ffff:a.b.c.d``, NAT64, 6to4) — is refused,
unless the operator lists the host name, or a network containing the address, in
``webhooks.allowed_hosts``.

The check runs twice: when a webhook is saved, so the tenant gets the reason in words, and at every
delivery on the very addresses the connection will use (a name may resolve elsewhere by then: DNS
rebinding): see ``GuardedResolver`` in webhook_worker.py, whose answers are what aiohttp connects
to. Redirects are never followed (the worker sends with ``allow_redirects=False``), so a public
receiver cannot bounce a delivery inward.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_PRIVATE_V4 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d, never a public destination
_HOST_NAME = r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def address_class(ip: IPAddress) -> str | None:
    """What kind of internal address ``ip`` is, in words ("loopback", "private", …), or None for a
    public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            kind = address_class(inner)
            return f"IPv4-mapped {kind}" if kind else None
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        return "unique-local"
    if isinstance(ip, ipaddress.IPv4Address) and any(ip in n for n in _PRIVATE_V4):
        return "private"
    if not ip.is_global or (isinstance(ip, ipaddress.IPv6Address) and ip in _V4_COMPATIBLE):
        return "reserved (not globally routable)"
    return None


def parse_address(host: str) -> IPAddress | None:
    """``host`` as an IP address (brackets and an IPv6 zone allowed), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class AllowList:
    """``webhooks.allowed_hosts``: host names (exact, case-insensitive; the name is trusted whatever
    it resolves to) and addresses or CIDR networks (an address inside one is allowed)."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Raises ValueError naming the first entry that is neither a host name nor an address/CIDR."""
        names, networks = set(), []
        for entry in entries:
            text = entry.strip() if isinstance(entry, str) else ""
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = text.rstrip(".").lower()
            if not re.match(_HOST_NAME, name):
                raise ValueError(f"{entry!r} is neither a host name nor an IP address or CIDR network")
            names.add(name)
        return cls(frozenset(names), tuple(networks))

    def trusts_name(self, host: str) -> bool:
        return host.rstrip(".").lower() in self.names

    def permits(self, host: str, ip: IPAddress) -> bool:
        if self.trusts_name(host):
            return True
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)


@functools.lru_cache(maxsize=8)
def allow_list(entries: tuple[str, ...]) -> AllowList:
    """The parsed allow list of a settings value (settings are replaced, not mutated, on reload)."""
    return AllowList.parse(entries)


def refusal(host: str, ip: IPAddress, allowed: AllowList) -> str | None:
    """Why a webhook may not reach ``ip`` (found for ``host``), in words; None when it may."""
    kind = address_class(ip)
    if kind is None or allowed.permits(host, ip):
        return None
    shown = str(ip) if str(ip) == host.strip("[]") else f"{host} ({ip})"
    return (f"webhook target {shown} is not a public address ({kind}); webhooks may only reach public "
            f"addresses unless the server operator lists the host in webhooks.allowed_hosts")


class TargetRefused(OSError):
    """A delivery's host is, or resolved to, an address the guard refuses. An OSError (EACCES, the
    reason as strerror, which is what aiohttp's connection errors print), so the worker records it
    like any failed attempt."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EACCES, reason)

    def __str__(self) -> str:
        return self.strerror


async def check_host(host: str, port: int, allowed: AllowList, timeout: float) -> str | None:
    """The create-time check: a literal address directly, a name by resolving it (every address it
    resolves to must be allowed). A name that does not resolve now is let through — DNS may be
    down or split-horizon — because every delivery checks again."""
    ip = parse_address(host)
    if ip is not None:
        return refusal(host, ip, allowed)
    if allowed.trusts_name(host):
        return None
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError, UnicodeError):
        return None
    for *_, sockaddr in infos:
        reason = refusal(host, ipaddress.ip_address(sockaddr[0]), allowed)
        if reason:
            return reason
    return None
