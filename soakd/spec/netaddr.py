"""Checks for the network addresses a spec names: HTTP URLs and ``HOST:PORT``.

Pure functions raising ValueError, so the loader can attach the YAML path and
the tests can call them directly. A URL with ``user:password@`` is refused:
credentials belong in ``{env: NAME}``/``{file: PATH}`` secrets, never in a
file that is copied into reports.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host))
    return True


def check_http_url(url: str) -> str:
    """``url`` itself if it is an absolute http(s) URL with a host; ValueError otherwise."""
    if not url or any(c.isspace() for c in url) or len(url) > 2048:
        raise ValueError("not a URL (empty, too long, or contains spaces)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"the URL must start with http:// or https:// (got scheme {parts.scheme!r})"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("never inline a secret in a URL (user:password@); use a secret reference")
    host = parts.hostname
    if not host or not _valid_host(host):
        raise ValueError("the URL has no valid host")
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily, on access
    except ValueError:
        raise ValueError("the URL's port is not a number in 0..65535") from None
    return url


def check_listen(address: str) -> str:
    """``address`` itself if it is ``HOST:PORT`` (``[::1]:PORT`` for IPv6, port 0 = ephemeral)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", address)
    if match is None:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
    elif not _valid_host(host):
        raise ValueError(f"not a host name or IP address: {host[:40]!r}")
    if port > 65535:
        raise ValueError(f"port {port} is not in 0..65535")
    return address
