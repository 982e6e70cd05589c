"""The client address of a request, as the Functions front end reports it. Pure code.

In Azure, the front end that terminates the connection appends the caller's address to
`X-Forwarded-For` ("a.b.c.d:port"), after any value the caller sent itself; so only the last entry
is trusted. IPv6 callers are grouped by their /56 network: one host can fill a /64 at will, and
ISPs hand homes and sites a /56 (or a /48), which one customer controls.
"""

from __future__ import annotations

import ipaddress

UNKNOWN = "unknown"
IPV6_PREFIX = 56


def client_address(forwarded_for: str) -> str:
    entry = forwarded_for.rsplit(",", 1)[-1].strip()
    if not entry:
        return UNKNOWN
    if entry.startswith("["):  # "[2001:db8::1]:443"
        entry = entry[1:].split("]", 1)[0]
    elif entry.count(":") == 1:  # "203.0.113.7:50112"
        entry = entry.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(entry)
    except ValueError:
        return UNKNOWN
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else str(address)
