"""Who is asking, from HTTP headers: API keys for using the mesh, tokens for the store.

Two questions, one place:
- `Gatekeeper.client()` for every route that reads or chats: with `MESH_API_KEYS` set, the caller
  must present an API key, or a store credential (the admin token or an owner token, which the
  operator issued and which therefore also identify a client); without API keys it is open.
- `Gatekeeper.principal()` for every route that writes: an owner or the admin, never anonymous
  (401), and an unknown token is refused (403) rather than ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable

from registry import Principal, Registry
from registry.errors import AuthenticationError, PermissionDeniedError


def bearer(authorization: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def is_api_key(api_keys: list[str], token: str | None) -> bool:
    if not token:
        return False
    return any(hmac.compare_digest(token.encode(), key.encode()) for key in api_keys)


def client_id(authorization: str | None, address: str | None, api_keys: list[str]) -> str:
    """A stable, non-secret name for rate limits and fair shares: the hash of a configured API
    key, else the client's address (made-up bearer tokens must not buy a fresh allowance)."""
    token = bearer(authorization)
    if is_api_key(api_keys, token):
        return "key:" + hashlib.sha256(str(token).encode()).hexdigest()[:16]
    return f"addr:{address or 'unknown'}"


class Gatekeeper:
    """Resolves credentials for the gateway's routes (the store routes included)."""

    def __init__(
        self, api_keys: list[str], admin_token: str | None, registry: Callable[[], Registry]
    ) -> None:
        self.api_keys = api_keys
        self.admin_token = admin_token
        self.registry = registry

    async def client(self, authorization: str | None) -> None:
        """Allow a read or chat call: open without API keys, else a key or a store credential."""
        if not self.api_keys:
            return
        token = bearer(authorization)
        if is_api_key(self.api_keys, token):
            return
        if token:
            try:
                principal = await self._resolve(token)
            except PermissionDeniedError:
                principal = Principal()
            if not principal.anonymous:
                return
        raise AuthenticationError("missing or invalid API key: send 'Authorization: Bearer <key>'")

    async def principal(self, authorization: str | None) -> Principal:
        """Who asks for a write: an owner or the admin. Anonymous callers get 401 at the
        action's own check, with a message saying which token that action needs."""
        token = bearer(authorization)
        if token is None or is_api_key(self.api_keys, token):
            return Principal()  # an API key lets you use the mesh, not change it
        return await self._resolve(token)

    async def _resolve(self, token: str) -> Principal:
        store = self.registry()
        return await asyncio.to_thread(store.principal, token, self.admin_token)
