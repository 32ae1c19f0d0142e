"""IP allow-lists and the client address behind trusted proxies.

The ERP → finance flow asks for an IP allow-list: an ingress source (``allow_ips:``) or the
admin API (``SYNCBUS_ADMIN_ALLOW_IPS``) answers only clients from listed addresses or
networks (CIDR, IPv4 or IPv6).

The address checked is the TCP peer. ``X-Forwarded-For`` is anyone's to write, so it is
believed only when the peer is one of ``SYNCBUS_TRUSTED_PROXIES``; then the list is read
from the right (each proxy appends the address it saw) and the first hop that is not a
trusted proxy is the client. A client who sends its own ``X-Forwarded-For: 10.0.0.5``
through the proxy thus gains nothing: the proxy appends the real address after it.
A malformed hop from a trusted proxy is refused rather than guessed at.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ...errors import SyncbusError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressListError(SyncbusError):
    """An allow-list or proxy list entry is not an IP address or network."""


class ForwardedForError(SyncbusError):
    """``X-Forwarded-For`` from a trusted proxy cannot be read; the request is refused (400)."""


def parse_ip(text: str) -> IpAddress | None:
    """An address, IPv4-mapped IPv6 turned into IPv4 (``::ffff:10.0.0.1`` is 10.0.0.1); None if not one.

    Accepts the forms proxies write into ``X-Forwarded-For``: ``1.2.3.4``,
    ``1.2.3.4:5678``, ``2001:db8::1``, ``[2001:db8::1]:443``.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_network(text: str) -> IpNetwork:
    """``10.0.0.0/8``, ``127.0.0.1`` (a /32), ``2001:db8::/32``; host bits set are an error (a likely typo)."""
    entry = text.strip()
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        raise AddressListError(f"{entry!r} is not an IP address or network (CIDR): {exc}") from None


def check_network(text: str) -> str:
    """Pydantic validator for ``allow_ips`` entries: refused at config load, with the entry named."""
    try:
        parse_network(text)
    except AddressListError as exc:
        raise ValueError(str(exc)) from None  # pydantic reports ValueErrors with the file position
    return text.strip()


@dataclass(frozen=True)
class AddressList:
    """A set of networks; ``contains`` answers for one address (None, an unknown address, is never in it)."""

    networks: tuple[IpNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str], what: str) -> AddressList:
        networks: list[IpNetwork] = []
        for entry in entries:
            if not entry.strip():
                continue
            try:
                networks.append(parse_network(entry))
            except AddressListError as exc:
                raise AddressListError(f"{what}: {exc}") from None
        return cls(tuple(networks))

    @classmethod
    def from_text(cls, text: str, what: str) -> AddressList:
        """A comma-separated list, as in the environment (``10.0.0.0/8,127.0.0.1``)."""
        return cls.parse(text.split(","), what)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def contains(self, addr: IpAddress | None) -> bool:
        if addr is None:
            return False
        return any(addr.version == net.version and addr in net for net in self.networks)

    def __str__(self) -> str:
        return ", ".join(str(n) for n in self.networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: AddressList) -> IpAddress | None:
    """The client's address: the TCP peer, or, from a trusted proxy, the nearest untrusted X-Forwarded-For hop.

    ``forwarded_for``: every ``X-Forwarded-For`` header value in order. Raises
    :class:`ForwardedForError` when a trusted proxy sent a hop that is not an address.
    """
    addr = parse_ip(peer) if peer else None
    if addr is None or not forwarded_for or not trusted.contains(addr):
        return addr
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        parsed = parse_ip(hop)
        if parsed is None:
            raise ForwardedForError(f"X-Forwarded-For from trusted proxy {peer} has {hop[:64]!r}, "
                                    "which is not an IP address")
        addr = parsed
        if not trusted.contains(parsed):
            return parsed
    return addr  # every hop is a trusted proxy: the first of them
