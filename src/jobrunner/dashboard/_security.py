"""Security pieces of the dashboard: headers, CSRF tokens, the auth hook's outcomes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
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
