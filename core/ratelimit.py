"""The rate limiter (flask-limiter). Memory counters by default; Redis when ``RATELIMIT_STORAGE_URI`` says so."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from flask import current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

IPV6_CLIENT_PREFIX = 64


def client_key() -> str:
    """Rate-limit key of the client address (``ProxyFix`` has made it the real one when proxies are configured): an
    IPv4 address as it is, an IPv6 address by its /64, since one subscriber holds a whole /64 and may use a fresh
    address for every request."""
    address = get_remote_address()
    try:
        parsed = ipaddress.ip_address(_without_port(address))
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:198.51.100.7, as a dual-stack socket reports an IPv4 client
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_CLIENT_PREFIX), strict=False))
    return str(parsed)


def _without_port(address: str) -> str:
    """The address a proxy forwarded, without the port or brackets some proxies write with it (``198.51.100.7:40001``,
    ``[2001:db8::1]:443``): with them every connection of one client counted as a client of its own."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    host, colon, port = address.rpartition(":")
    return host if colon and port.isdigit() and "." in host and ":" not in host else address


limiter = Limiter(key_func=client_key, default_limits=[])


def configured(name: str) -> Callable[[], str]:
    """A limit string read from configuration at request time (so tests and operators can change it)."""
    return lambda: current_app.config[name]


def limit(value: str | Callable[[], str], **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``limiter.limit(value, **options)``, marking the view as rate limited so that ``core.api.endpoint`` documents
    its 429 ``rate_limited`` answer."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        limited = limiter.limit(value, **options)(view)
        limited.rate_limited = True  # type: ignore[attr-defined]
        return limited

    return decorate
