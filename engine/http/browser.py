"""What a browser may do with a person's session cookie: the CSRF checks and the console's
security headers (issue 17, finding 9). Pure: headers in, a refusal or None out.

SameSite=Strict alone is not enough: an older browser ignores it, and a page on a sibling
sub-domain is "same site". So a request authenticated by the session cookie that changes
state must also come from one of our own origins (``Origin``, else ``Referer``, naming
this worker's host or one of ``allowed_origins``); a request without either is refused,
since every current browser sends ``Origin`` on a POST. Bearer-token callers (channel
systems) are not checked: a browser cannot attach their token to a forged request.

A body must be JSON. A cross-site form or ``fetch`` without CORS can only send
``text/plain``, ``application/x-www-form-urlencoded`` or ``multipart/form-data``: those
are refused with 415 for every caller. A request with no ``Content-Type`` at all (a
channel system's bare client) is read as JSON, as before.

>>> foreign_origin({"Origin": "https://evil.example", "Host": "beacon.bank:443"}, ())
'https://evil.example'
>>> foreign_origin({"Origin": "https://beacon.bank", "Host": "beacon.bank"}, ())
>>> foreign_origin({"Origin": "https://console.bank", "Host": "10.0.0.5:6066"}, ("https://console.bank",))
>>> not_json({"Content-Type": "text/plain;charset=UTF-8"}, b"{}")
'text/plain'
>>> not_json({"Content-Type": "application/json; charset=utf-8"}, b"{}")
>>> not_json({}, b"{}")
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from engine.http.api import Reply, error

_DEFAULT_PORTS = {"http": "80", "https": "443"}
NO_ORIGIN = "(none)"


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name) or headers.get(name.lower()) or ""


def _origin_of(url: str) -> tuple[str, str] | None:
    """(scheme://host[:port] as sent, host:port with the default port filled in)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    netloc = f"{parts.hostname}:{port or _DEFAULT_PORTS[parts.scheme]}"
    return f"{parts.scheme}://{parts.netloc}".lower(), netloc.lower()


def _same_host(netloc: str, host_header: str) -> bool:
    """``netloc`` (host:port) names the host the request was sent to: its Host header,
    with the port compared when the header has one (a TLS proxy in front may drop it)."""
    host = host_header.strip().lower()
    if not host:
        return False
    if host.startswith("[") or host.count(":") == 1:  # host:port, or [v6]:port
        return netloc == host or netloc.rsplit(":", 1)[0] == host
    return netloc.rsplit(":", 1)[0] == host


def foreign_origin(headers: Mapping[str, str], allowed: Iterable[str]) -> str | None:
    """None when the request comes from our own origin, else the origin it came from
    (``NO_ORIGIN`` when it names none)."""
    sent = _header(headers, "Origin") or _header(headers, "Referer")
    if not sent or sent == "null":
        return NO_ORIGIN if not sent else "null"
    origin = _origin_of(sent)
    if origin is None:
        return sent[:100]
    if origin[0] in {a.rstrip("/").lower() for a in allowed}:
        return None
    return None if _same_host(origin[1], _header(headers, "Host")) else origin[0]


def origin_refused(origin: str) -> Reply:
    return error(
        403,
        "origin_refused",
        f"a request made with the session cookie must come from the console's own origin, not {origin}",
    )


def not_json(headers: Mapping[str, str], body: bytes) -> str | None:
    """The media type of a body that is declared as something other than JSON, else None."""
    declared = _header(headers, "Content-Type")
    if not body or not declared:
        return None
    media = declared.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return None
    return media or declared[:60]


def unsupported(media: str) -> Reply:
    return error(
        415, "unsupported_media_type", f"send the body as Content-Type: application/json, not {media}"
    )


def _hashes(html: bytes, tag: str) -> list[str]:
    found = re.findall(rb"<" + tag.encode() + rb"[^>]*>(.*?)</" + tag.encode() + rb">", html, re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in found]


def page_headers(html: bytes) -> dict[str, str]:
    """Headers for the console page: only its own inline script and style run (by hash,
    computed from the page itself), it cannot be framed, and nothing of it is cached."""
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(_hashes(html, "script")),
            "style-src " + " ".join(_hashes(html, "style")),
            "connect-src 'self'",
            "img-src 'self'",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )
    return {"Content-Security-Policy": policy, **API_HEADERS, "X-Frame-Options": "DENY"}


# Sent with every API answer too: no answer is read as another type, framed, or cached.
API_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
