"""Who may talk to a service: an optional API key, and Origin checks for WebSockets.

The key travels as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; browsers, which
cannot set headers on a WebSocket, may pass ``?token=KEY``. Keys are compared in constant
time and never logged. A WebSocket whose Origin is neither the service's own host nor an
allowed origin is refused, so another web page cannot use a visitor's browser to stream.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, WebSocket
from starlette.requests import HTTPConnection

from hubbub.settings import Settings


def presented_key(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return conn.headers.get("x-api-key") or conn.query_params.get("token")


def key_ok(settings: Settings, conn: HTTPConnection) -> bool:
    if not settings.api_key:
        return True
    given = presented_key(conn) or ""
    return hmac.compare_digest(given.encode(), settings.api_key.encode())


def origin_ok(settings: Settings, conn: HTTPConnection) -> bool:
    origin = conn.headers.get("origin")
    if origin is None:  # not a browser: nothing to check
        return True
    allowed = settings.allowed_origins
    if "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc == conn.headers.get("host", "")


def require_key(request: Request) -> None:
    """FastAPI dependency for HTTP routes."""
    if not key_ok(request.app.state.settings, request):
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


def websocket_refusal(settings: Settings, ws: WebSocket) -> tuple[str, str] | None:
    """(code, message) when this WebSocket must be refused, else None."""
    if not origin_ok(settings, ws):
        return "forbidden_origin", f"origin {ws.headers.get('origin')} is not allowed"
    if not key_ok(settings, ws):
        return "unauthorized", "missing or wrong API key"
    return None


def client_id(settings: Settings, conn: HTTPConnection) -> str:
    """Who a connection is for: the peer, or the browser a trusted relay speaks for.

    The web app relays many browsers over its own connections and names each in
    ``X-Forwarded-For``; that header is believed only from trusted proxies or from a
    relay that presented the API key, since anyone else could forge it.
    """
    peer = conn.client.host if conn.client else "?"
    forwarded = conn.headers.get("x-forwarded-for")
    trusted = peer in settings.trusted_proxies or (settings.api_key and key_ok(settings, conn))
    if forwarded and trusted:
        return forwarded.split(",")[0].strip() or peer
    return peer
