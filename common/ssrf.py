"""Which webhook receivers facestream may call: server-side request forgery rules.

A webhook's URL is given by an API client, and the notify service then makes requests to
it from inside the deployment. So:

* only ``http`` and ``https`` URLs, with a host;
* link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata endpoints
  (169.254.169.254, fd00:ec2::254, ``metadata.google.internal``, ``metadata``) are
  **always** refused, as are multicast and reserved addresses;
* private and loopback addresses (10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, fc00::/7,
  ::1, 0.0.0.0) are allowed by default (self-hosted receivers live there) and refused with
  ``allow_private=False`` (``WEBHOOK_ALLOW_PRIVATE=false``).

The API checks a URL when a webhook is created (:func:`check_url`: IP literals and the
known names; no DNS). notify checks again each address a name resolves to before every
attempt (:func:`refused_address`) and connects only to an address it checked: DNS can
change between the two. Pure functions: no DNS, no sockets.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from common.errors import FacestreamError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata endpoints, refused whatever the settings.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata"})
#: Carrier-grade NAT space: not "private" to Python's ipaddress, but not the internet either.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class RefusedUrl(FacestreamError):
    """A webhook URL (or an address its name resolves to) facestream will not call."""


def refused_address(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why facestream will not connect to ``ip``, or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_multicast or (ip.is_reserved and not ip.is_private):
        return f"{ip} is a multicast or reserved address"
    if not allow_private and (ip.is_private or ip.is_loopback or ip.is_unspecified or ip in _SHARED):
        return f"{ip} is a private or loopback address (WEBHOOK_ALLOW_PRIVATE=false)"
    return None


def host_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; raises :class:`RefusedUrl` otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedUrl(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedUrl("only http and https URLs are allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise RefusedUrl("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise RefusedUrl("credentials in the URL are not allowed (the signature authenticates)")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (:class:`RefusedUrl`, with the reason) a URL that is never allowed: not
    http(s), a metadata name, or an IP literal :func:`refused_address` refuses. A name is
    not resolved here (notify checks what it resolves to before each attempt)."""
    _, host, _ = host_of(url)
    if host in METADATA_NAMES:
        raise RefusedUrl(f"{host} is a cloud metadata name")
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise RefusedUrl(f"{host} is a loopback name (WEBHOOK_ALLOW_PRIVATE=false)")
    ip = literal_address(host)
    if ip is not None and (why := refused_address(ip, allow_private=allow_private)):
        raise RefusedUrl(why)
