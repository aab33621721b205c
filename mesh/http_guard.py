"""What every HTTP request passes before a route sees it: Host, body size, content type, rate.

An ASGI middleware, so it runs before FastAPI parses anything:
- **Host allow-list** (DNS rebinding): a page on evil.example that resolves to 127.0.0.1 still
  sends `Host: evil.example`; loopback names, `MESH_HOST` and `MESH_ALLOWED_HOSTS` pass.
- **Body size** (413): checked from Content-Length and again while the body streams in, so a
  huge or chunked body is refused before it is parsed or held in memory.
- **Content type** (415): write routes take `application/json` (and the few typed uploads a
  route declares), never the types a browser may send cross-site without a preflight
  (`text/plain`, forms).
- **Rate limit** (429 + Retry-After): a token bucket per API key or client address.
The gateway and the UI install the same guard; settings come through a callable so the Serve
replica can bind them after the module-level app exists.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from mesh.http_auth import client_id
from mesh.protocol import error_body
from mesh.settings import MeshSettings
from registry.errors import PayloadTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON_TYPES = ("application/json",)


@dataclass
class GuardPolicy:
    """The guard's settings (from `MeshSettings`) and the routes with their own body rules."""

    host: str = "127.0.0.1"
    allowed_hosts: list[str] = field(default_factory=list)
    max_body_bytes: int = 2 * 2**20
    rate_limit_per_minute: int = 0
    api_keys: list[str] = field(default_factory=list)
    # path prefix -> (extra content types accepted, body limit in bytes or None for the default)
    uploads: dict[str, tuple[tuple[str, ...], int | None]] = field(default_factory=dict)
    # only these path prefixes are checked for content type and rate (the API, not the UI's
    # own Gradio routes, which post multipart uploads by design)
    api_prefixes: tuple[str, ...] = ("/v1/", "/healthz")

    def host_allowed(self, header: str | None) -> bool:
        if "*" in self.allowed_hosts:
            return True
        name = _host_name(header or "")
        allowed = LOOPBACK_HOSTS | {h.lower() for h in self.allowed_hosts}
        if self.host not in WILDCARD_HOSTS:
            allowed |= {self.host.lower()}
        return name.rstrip(".") in allowed

    def upload_rule(self, path: str) -> tuple[tuple[str, ...], int]:
        for prefix, (types, limit) in self.uploads.items():
            if path == prefix or path.startswith(prefix + "/"):
                return types, limit or self.max_body_bytes
        return (), self.max_body_bytes


class TokenBuckets:
    """Requests per minute per client; refills continuously, so bursts up to the limit pass."""

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.per_minute = per_minute
        self.max_clients = max_clients
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, now: float | None = None) -> float:
        """0 when the request may go; otherwise seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        rate = self.per_minute / 60.0
        tokens, last = self.buckets.get(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * rate)
        if tokens < 1.0:
            self.buckets[client] = (tokens, now)
            return (1.0 - tokens) / rate
        if len(self.buckets) >= self.max_clients and client not in self.buckets:
            self.buckets.clear()  # bounded memory; a reset only forgives, never blocks
        self.buckets[client] = (tokens - 1.0, now)
        return 0.0


class HttpGuard:
    """ASGI middleware enforcing a `GuardPolicy` (see the module docstring)."""

    def __init__(self, app: ASGIApp, policy: Callable[[], GuardPolicy | None]) -> None:
        self.app = app
        self.policy = policy
        self.buckets: TokenBuckets | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = self.policy()
        if scope["type"] != "http" or policy is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope.get("path", "")
        if not policy.host_allowed(headers.get("host")):
            await _reply(send, 421, "the Host header is not one this mesh serves", "host")
            return
        types, limit = policy.upload_rule(path)
        is_api = path.startswith(policy.api_prefixes)
        if is_api:
            wait = self._bucket(policy).take(
                client_id(
                    headers.get("authorization"),
                    (scope.get("client") or ("",))[0],
                    policy.api_keys,
                )
            )
            if wait > 0:
                retry = {"retry-after": str(max(1, math.ceil(wait)))}
                await _reply(send, 429, "rate limit exceeded; slow down", None, retry)
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"request body is larger than {limit} bytes", None)
            return
        if is_api and scope.get("method") in WRITE_METHODS and _has_body(headers):
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind not in JSON_TYPES + types:
                accepted = ", ".join(JSON_TYPES + types)
                await _reply(send, 415, f"send the body as {accepted} (got '{kind}')", None)
                return
        if length is None and "transfer-encoding" in headers:
            # A chunked body: read it here, up to the limit, so the 413 cannot be swallowed by
            # a framework's body parser as a generic 400.
            body = await _read_up_to(receive, limit)
            if body is None:
                await _reply(send, 413, f"request body is larger than {limit} bytes", None)
                return
            receive = _replay(body, receive)
        await self.app(scope, _capped(receive, limit), send)

    def _bucket(self, policy: GuardPolicy) -> TokenBuckets:
        if self.buckets is None or self.buckets.per_minute != policy.rate_limit_per_minute:
            self.buckets = TokenBuckets(policy.rate_limit_per_minute)
        return self.buckets


async def _read_up_to(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it grows past `limit` (never buffered beyond)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":
            return b"".join(chunks)  # the client left; the app sees an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body once, then the real channel (a streaming response waits on it to
    learn that the client left)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message.get("type") == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLargeError(f"request body is larger than {limit} bytes")
        return message

    return wrapped


def _has_body(headers: dict[str, str]) -> bool:
    return headers.get("content-length", "0") != "0" or "transfer-encoding" in headers


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


async def _reply(
    send: Send, status: int, message: str, param: str | None, extra: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_body(message, "invalid_request_error", param)).encode()
    if status == 429:
        body = json.dumps(error_body(message, "rate_limit_error", param)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_current: GuardPolicy | None = None


def set_policy(policy: GuardPolicy) -> None:
    """Bind this process's policy (a Serve replica's constructor calls it once)."""
    global _current
    _current = policy


def current_policy() -> GuardPolicy | None:
    """The policy `HttpGuard` reads per request; None until bound (requests pass unguarded
    only before the replica is constructed, when Serve routes nothing to it)."""
    return _current


def policy_from(settings: MeshSettings, **overrides: Any) -> GuardPolicy:
    """The guard policy a mesh's settings ask for; routes with their own uploads override."""
    allowed = list(settings.allowed_hosts)
    if settings.host in WILDCARD_HOSTS and not allowed:
        allowed = machine_names()  # exposed without a list: this machine's own names
    return GuardPolicy(
        host=settings.host,
        allowed_hosts=allowed,
        max_body_bytes=settings.max_body_bytes,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        api_keys=list(settings.api_keys),
        **overrides,
    )


def machine_names() -> list[str]:
    """This machine's host name, FQDN and addresses: what clients on the network use when the
    operator binds to every interface without listing names (`MESH_ALLOWED_HOSTS`; `*` for
    any, which re-opens DNS rebinding)."""
    import socket

    names = {socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    return sorted(name.lower() for name in names if name)
