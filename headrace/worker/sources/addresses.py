"""Which IP addresses a source may connect to: the public internet, unless the job (and installation) allow more.

`ipaddress.is_global` alone is not enough: several IPv6 forms carry an IPv4 address inside them, and
a NAT64 gateway, a 6to4 relay or a dual-stack kernel turns them back into a connection to that IPv4
address. `64:ff9b::a9fe:a9fe` is the cloud metadata endpoint 169.254.169.254 through NAT64, yet
`is_global` calls it public. So the IPv4 address inside is judged too.
"""

import ipaddress
import socket
from ipaddress import IPv4Address, IPv6Address

_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: never public, wherever the IPv4 sits


class BlockedAddress(Exception):
    """A connection to a non-public address was refused."""


def embedded_ipv4(ip: IPv6Address) -> list[IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, IPv4-compatible, NAT64, 6to4 and Teredo."""
    found: list[IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if int(ip) >> 32 == 0:  # ::a.b.c.d, the deprecated IPv4-compatible form
        found.append(IPv4Address(int(ip) & 0xFFFF_FFFF))
    if ip in _NAT64_WELL_KNOWN:
        found.append(IPv4Address(int(ip) & 0xFFFF_FFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _public(ip: IPv4Address | IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


def forbidden_address(address: str) -> bool:
    """Whether an IP address is not on the public internet (loopback, private, link-local, ...), itself
    or through an IPv4 address it embeds."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, IPv4Address):
        return not _public(ip)
    if ip in _NAT64_LOCAL_USE or int(ip) >> 32 == 0:
        return True  # local-use NAT64 and IPv4-compatible addresses have no public use at all
    inner = embedded_ipv4(ip)
    if ip.ipv4_mapped is not None or ip in _NAT64_WELL_KNOWN:
        return not all(_public(v4) for v4 in inner)  # these prefixes are judged by what they carry
    return not _public(ip) or not all(_public(v4) for v4 in inner)


def check_host(host: str, port: int) -> None:
    """Resolve `host` and raise BlockedAddress when any address it names is not public (blocking: call in a thread)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise BlockedAddress(f"cannot resolve {host}: {exc}") from exc
    blocked = [str(info[4][0]) for info in infos if forbidden_address(str(info[4][0]))]
    if blocked:
        raise BlockedAddress(f"{host} resolves to non-public address {blocked[0]}")
