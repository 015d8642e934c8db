"""Where a connection comes from, as per-source limits count it.

A source is an IPv4 address, or an IPv6 /64 (one host usually holds a whole /64, so counting single
IPv6 addresses would let it open as many connections as it likes); an IPv4-mapped IPv6 address
counts as its IPv4 address. Sources are kept in memory for counting only, never logged.
"""

from __future__ import annotations

import ipaddress

__all__ = ["address_key"]


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
