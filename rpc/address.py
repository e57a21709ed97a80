"""The client address of a request: the TCP peer, or what a trusted proxy says it is."""
from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

UNKNOWN = "unknown"


def normalize(address: str) -> str | None:
    """An IP address in its canonical text form (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


@functools.lru_cache(maxsize=8)
def trusted_set(proxies: frozenset[str]) -> frozenset[str]:
    """`--trusted-proxies` entries, normalized (entries that are not addresses are dropped)."""
    return frozenset(a for a in (normalize(p) for p in proxies) if a is not None)


def client_address(request: web.Request, trusted_proxies: frozenset[str]) -> str:
    """Who is calling: the TCP peer, unless it is a trusted proxy.

    From a trusted proxy, the client is the right-most `X-Forwarded-For` entry that is not
    itself a trusted proxy (entries left of it were written by the client and prove
    nothing). From any other peer the header is ignored. An entry that is not an IP
    address ends the walk: the nearest trusted proxy is then the best we know.
    """
    peer = normalize(request.remote or "") or UNKNOWN
    trusted = trusted_set(trusted_proxies)
    if peer not in trusted:
        return peer
    nearest = peer
    entries = [e for header in request.headers.getall("X-Forwarded-For", [])
               for e in header.split(",")]
    for entry in reversed(entries):
        address = normalize(entry)
        if address is None:
            return nearest
        if address not in trusted:
            return address
        nearest = address
    return nearest
