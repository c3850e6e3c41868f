"""The client's address behind reverse proxies (X-Forwarded-For from trusted peers only).

Anyone can send X-Forwarded-For; it says something only when the peer that
sent it is a proxy the operator trusts (TRUSTED_PROXIES). The header is read
from the right, where the nearest proxy appended what it saw, skipping the
operator's own proxies: the first address that is not one is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from server.config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[IPNetwork]
) -> str | None:
    """Who the request came from: the peer, or what its trusted proxies say."""
    current = _address(peer)
    if current is None or not _is_trusted(current, trusted):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            # Garbage from beyond the last trusted proxy: the nearest address
            # vouched for is the best there is (and no unvetted text is logged).
            break
        current = address
        if not _is_trusted(address, trusted):
            break
    return str(current)


def _address(text: str | None) -> IPAddress | None:
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)
