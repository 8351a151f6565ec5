"""Who may talk to a service, and as whom: keys and tenants, hosts, origins, client address.

- **Keys.** With no key configured a service runs in local single-user mode: everyone is
  the tenant ``local``, who sees every session. With keys, each key belongs to a tenant;
  a session belongs to the tenant that made it, and only that tenant (or an admin
  tenant) may list, export, rename or delete it. A key travels as ``Authorization:
  Bearer KEY``, ``X-API-Key: KEY``, the web page's cookie, or (browsers opening a
  WebSocket) ``?token=KEY``; keys are compared in constant time and never logged.
- **Hosts.** A request whose ``Host`` is not the service's own name, localhost, an IP
  address or an allowed name is refused, so a DNS-rebinding page cannot reach a service
  on the visitor's machine.
- **Origins.** A WebSocket from a browser page of another origin is refused, so another
  site cannot stream through a visitor's browser.
- **Client address.** ``X-Forwarded-For`` is believed only from configured trusted
  proxies, and the nearest untrusted hop is the client.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from starlette._utils import parse_host_header
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hubbub.settings import Settings

LOCAL_TENANT = "local"
DEFAULT_TENANT = "default"  # the tenant of the single ``api_key`` setting
KEY_COOKIE = "hubbub_key"
MAX_FORWARDED_HOPS = 16


# -- keys and tenants ---------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who a request is: its tenant, whether it may see every tenant's sessions, and the
    key it presented (the web app presents the same key upstream)."""

    tenant: str
    admin: bool = False
    key: str | None = None

    def may_see(self, tenant: str) -> bool:
        return self.admin or tenant == self.tenant


LOCAL = Identity(LOCAL_TENANT, admin=True)


def read_keys_file(path: Path) -> dict[str, tuple[str, bool]]:
    """``tenant key [admin]`` per line (``#`` starts a comment) -> tenant -> (key, admin)."""
    keys: dict[str, tuple[str, bool]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != "admin"):
            raise ValueError(f"{path}:{n}: expected 'tenant key [admin]'")
        keys[fields[0]] = (fields[1], len(fields) == 3)
    return keys


class Keyring:
    """The keys a service accepts, each naming its tenant."""

    def __init__(self, keys: dict[str, tuple[str, bool]]) -> None:
        seen: set[str] = set()
        for tenant, (key, _) in keys.items():
            if not key or key in seen:
                raise ValueError(f"tenant {tenant!r}: every key must be set and unique")
            seen.add(key)
        self._keys = [(key.encode(), Identity(t, admin, key)) for t, (key, admin) in keys.items()]

    @classmethod
    def from_settings(cls, s: Settings) -> Keyring:
        keys: dict[str, tuple[str, bool]] = {}
        if s.api_key:
            keys[DEFAULT_TENANT] = (s.api_key, DEFAULT_TENANT in s.admin_tenants)
        for tenant, key in s.api_keys.items():
            keys[tenant] = (key, tenant in s.admin_tenants)
        if s.api_keys_file is not None:
            keys.update(read_keys_file(s.api_keys_file))
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, conn: HTTPConnection) -> Identity | None:
        """The caller's identity, or None when a key is required and none matches."""
        if not self._keys:
            return LOCAL
        given = (presented_key(conn) or "").encode()
        found = None
        for key, ident in self._keys:  # every key is compared: no early exit to time
            if hmac.compare_digest(given, key):
                found = ident
        return found


def presented_key(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return (
        conn.headers.get("x-api-key")
        or conn.cookies.get(KEY_COOKIE)
        or conn.query_params.get("token")
    )


def require_identity(request: Request) -> Identity:
    """FastAPI dependency for HTTP routes: the caller's identity, or 401."""
    ident = request.app.state.keyring.identify(request)
    if ident is None:
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})
    return ident


# -- session ownership -----------------------------------------------------------------


def new_resume_token() -> tuple[str, str]:
    """A session's secret (192 bits, shown once to its client) and the hash we keep."""
    token = secrets.token_urlsafe(24)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_ok(token: str | None, stored_hash: str) -> bool:
    if not token or not stored_hash:
        return False
    return hmac.compare_digest(token_hash(token), stored_hash)


# -- hosts --------------------------------------------------------------------------


@cache
def own_names() -> frozenset[str]:
    names = {"localhost"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name.lower())
    return frozenset(names)


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether ``host`` (no port) may be served: own names, IPs, or an allowed pattern."""
    host = host.lower().rstrip(".")
    if host in own_names() or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True  # an IP literal cannot be rebound to another name
    except ValueError:
        pass
    for pattern in allowed:
        pattern = pattern.lower()
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostGuard:
    """ASGI middleware: refuse HTTP requests and WebSockets for hosts not served here."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            parsed = parse_host_header(Headers(scope=scope).get("host"))
            if parsed is None or not host_allowed(parsed.host, self.allowed):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})  # HTTP 403
                else:
                    response = PlainTextResponse("host not allowed", status_code=400)
                    await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- origins --------------------------------------------------------------------------


def origin_ok(settings: Settings, conn: HTTPConnection) -> bool:
    origin = conn.headers.get("origin")
    if origin is None:  # not a browser: nothing to check
        return True
    allowed = settings.allowed_origins
    if "*" in allowed or origin in allowed:
        return True
    return urlsplit(origin).netloc == conn.headers.get("host", "")


def websocket_refusal(
    settings: Settings, keyring: Keyring, conn: HTTPConnection
) -> tuple[str, str] | Identity:
    """The caller's identity, or (code, message) when this WebSocket must be refused."""
    if not origin_ok(settings, conn):
        return "forbidden_origin", f"origin {conn.headers.get('origin')} is not allowed"
    ident = keyring.identify(conn)
    if ident is None:
        return "unauthorized", "missing or wrong API key"
    return ident


# -- client address ---------------------------------------------------------------------


def _trusted(address: str, proxies: Iterable[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for proxy in proxies:
        try:
            if ip in ipaddress.ip_network(proxy, strict=False):
                return True
        except ValueError:
            continue
    return False


def client_address(settings: Settings, conn: HTTPConnection) -> str:
    """Who a connection is for: its peer, or the hop before the trusted proxies.

    ``X-Forwarded-For`` lists the hops a request passed, the nearest last. Walking back
    from the peer, each trusted proxy vouches for the hop before it; the first hop that
    is not a trusted proxy is the client. Anything else in the header is the client's
    own say, and could be forged.
    """
    peer = conn.client.host if conn.client else "?"
    proxies = settings.trusted_proxies
    if not proxies or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in conn.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    client = peer
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # garbage: trust nothing before it
        client = hop
        if not _trusted(hop, proxies):
            break
    return client
