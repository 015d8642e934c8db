"""Where a connection comes from, as per-source limits count it.

A source is an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64, so counting single
IPv6 addresses would let it open as many connections as it likes); an IPv4-mapped IPv6 address
counts as its IPv4 address. A source's subnet (``subnet_key``) is its IPv4 /24 or IPv6 /48: what
one operator is commonly given, for the caps that count many addresses together. Sources are
kept in memory for counting only, never logged.
"""

from __future__ import annotations

import ipaddress

__all__ = ["address_key", "subnet_key"]


def address_key(peername: object) -> str:
    """The source a connection is counted under: its IPv4 address, or its IPv6 /64."""
    host = peername[0] if isinstance(peername, tuple) and peername else ""
    try:
        address = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return str(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def subnet_key(source: str) -> str:
    """The subnet an :func:`address_key` source belongs to: its IPv4 /24, or its IPv6 /48 (a
    source that is not an address, such as a Unix socket's, is its own subnet)."""
    address = source.removesuffix("/64")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return source
    prefix = 24 if isinstance(parsed, ipaddress.IPv4Address) else 48
    return str(ipaddress.ip_network((parsed, prefix), strict=False))
