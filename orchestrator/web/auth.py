"""Who may talk to the server: three checks every request passes before any route sees it.

1. **Host.** Bound to a loopback address, the server answers only requests whose ``Host`` names loopback: a web page
   cannot point its own domain at 127.0.0.1 and read the app (DNS rebinding).
2. **Token.** When a token is set (always, on any other address), every request carries it, static files, downloads
   and the event stream included: the cookie set when the printed URL (``/?token=...``) was opened, or
   ``Authorization: Bearer TOKEN`` from a script. Compared in constant time.
3. **Cross-site requests.** A state-changing request (POST, PUT, DELETE) carries the page's CSRF token in the
   ``X-CSRF-Token`` header (another site's form or script cannot set it without a CORS grant, which this server
   never gives), and its ``Origin``, when the browser sends one, is this server. A request authenticated by the
   ``Authorization`` header comes from a script: browsers never add that header by themselves, so it needs no CSRF
   token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})
Via = Literal["open", "cookie", "bearer", "query"]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """``127.0.0.1:7860`` -> ``127.0.0.1``; ``[::1]:7860`` -> ``::1``."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


@dataclass(frozen=True)
class Guard:
    """The checks for one server: its token (None: open, loopback only), the secret that signs the CSRF token (kept
    in the store folder, so an open page survives a server restart), its port and whether it listens on loopback."""

    token: str | None
    secret: bytes
    port: int
    loopback: bool

    @property
    def cookie_name(self) -> str:
        return f"loraforge_{self.port}"  # cookies ignore ports: two servers on one host must not share one

    @property
    def csrf_token(self) -> str:
        return hmac.new(self.secret, b"csrf", hashlib.sha256).hexdigest()[:40]

    def host_ok(self, host_header: str | None) -> bool:
        if not self.loopback:
            return True  # any name may reach a public address; the token guards it
        return host_header is not None and is_loopback(host_name(host_header))

    def authenticate(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query_token: str | None
    ) -> Via | None:
        """How the request proved it may come in, or None when it did not."""
        if self.token is None:
            return "open"
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(given.strip()):
            return "bearer"
        if self._matches(cookies.get(self.cookie_name)):
            return "cookie"
        if self._matches(query_token):
            return "query"
        return None

    def cross_site_ok(self, method: str, headers: Mapping[str, str], via: Via) -> bool:
        """A state-changing request from a browser is this app's own page: CSRF header, same origin."""
        if method not in UNSAFE_METHODS or via == "bearer":
            return True
        if headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        origin = headers.get("Origin")
        if origin and origin != "null":
            if urlsplit(origin).netloc.lower() != (headers.get("Host") or "").lower():
                return False
        elif origin == "null":
            return False
        given = headers.get(CSRF_HEADER) or ""
        return hmac.compare_digest(given.encode(), self.csrf_token.encode())

    def cookie_header(self) -> str:
        assert self.token is not None
        return f"{self.cookie_name}={self.token}; HttpOnly; SameSite=Lax; Path=/"

    def _matches(self, given: str | None) -> bool:
        if not given or self.token is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())


def parse_cookies(header: str | None) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in (header or "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name:
            cookies[name] = value
    return cookies
