"""Security pieces of the dashboard: Host check, headers, CSRF tokens, auth hook outcomes."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "jobrunner_csrf"
CSRF_FIELD = "csrf_token"

#: No inline script or style anywhere: every script and stylesheet is a file of the package.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)

SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: Names a browser uses for this machine; a DNS-rebinding page can never send them as its Host.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

_HOST = re.compile(r"^(?:\[(?P<ipv6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::(?P<port>\d{1,5}))?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) -> (lower-case host, port); ``None`` if malformed."""
    text = value.strip().lower()
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"  # a bare IPv6 address, as an allow-list entry may be written
    match = _HOST.match(text)
    if match is None:
        return None
    host = (match["ipv6"] or match["name"]).rstrip(".")
    port = None if match["port"] is None else int(match["port"])
    if not host or (port is not None and not 0 < port < 65536):
        return None
    return host, port


def check_allowed_hosts(entries: Iterable[str] | None) -> list[str]:
    """Validate a Host allow list: ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or ``*``.

    Raises:
        ValueError: an entry is not a string of that form.
    """
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    checked = []
    for entry in entries:
        if not isinstance(entry, str) or (entry != "*" and parse_host(entry) is None):
            raise ValueError(
                f"allowed host {entry!r} is not a host name or address (optionally with "
                ":port; IPv6 in brackets) or '*'"
            )
        checked.append(entry.strip())
    return checked


class HostCheckMiddleware:
    """Answers 400 to a request whose ``Host`` header is not one the dashboard serves.

    A DNS-rebinding page (``attacker.example`` resolving to 127.0.0.1) reaches the dashboard
    from the victim's browser as same-origin, so it could read every page and post forms with
    a CSRF token it fetched; its requests still carry ``Host: attacker.example``. Allowed are
    the localhost names, the address the server accepted the connection on (ASGI
    ``scope["server"]``), and ``allowed_hosts`` (an entry without a port allows any port;
    ``*`` allows every host). Runs before routing, so it covers every page, API and static
    route.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        allowed_hosts = list(allowed_hosts)
        self.allow_any = "*" in allowed_hosts
        self.allowed: list[tuple[str, int | None]] = [
            parsed
            for entry in (*LOCAL_HOSTS, *allowed_hosts)
            if entry != "*" and (parsed := parse_host(entry)) is not None
        ]

    def allows(self, scope: Scope) -> bool:
        """Whether the request's Host header names this dashboard."""
        if self.allow_any:
            return True
        raw = [v for k, v in scope.get("headers", []) if k == b"host"]
        if len(raw) != 1:
            return False  # none (HTTP/1.0) or ambiguous
        parsed = parse_host(raw[0].decode("latin-1"))
        if parsed is None:
            return False
        host, port = parsed
        if port is None:
            port = _DEFAULT_PORTS.get(str(scope.get("scheme", "http")))
        server = scope.get("server")
        if server and str(server[0]).lower().strip("[]") == host:
            return True
        return any(h == host and (p is None or p == port) for h, p in self.allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (
            b"Invalid Host header: this dashboard answers only for its own addresses "
            b"(allow more with create_app(allowed_hosts=...) or jobrunner dashboard "
            b"--allowed-host).\n"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class Csrf:
    """Double-submit CSRF protection with the form token bound to the cookie by an HMAC.

    The cookie holds a random value; forms carry ``HMAC(secret, cookie)``. A POST passes only
    when the submitted token matches the cookie it came with, so an attacker can neither read
    the token (same-origin policy) nor forge one for a cookie they planted (no secret).
    """

    def __init__(self, secret: bytes | str | None) -> None:
        if secret is None:
            secret = secrets.token_bytes(32)
        self.secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(self.secret) < 16:
            raise ValueError("csrf_secret must be at least 16 bytes")

    @staticmethod
    def new_cookie() -> str:
        """A fresh random cookie value."""
        return secrets.token_urlsafe(32)

    def token_for(self, cookie: str) -> str:
        """The form token belonging to ``cookie``."""
        return hmac.new(self.secret, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: object) -> bool:
        """Whether ``token`` was issued for ``cookie``."""
        if not cookie or not isinstance(token, str) or len(cookie) > 200:
            return False
        return hmac.compare_digest(self.token_for(cookie), token)


class AuthError(Exception):
    """Raised inside the dashboard to answer 401 or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
