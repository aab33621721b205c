"""Reading credentials from HTTP headers: API keys for using the mesh, tokens for the store."""

from __future__ import annotations

import hmac

from registry.errors import AuthenticationError


def bearer(authorization: str | None) -> str | None:
    """The token in an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def check_api_key(api_keys: list[str], authorization: str | None) -> None:
    """With API keys configured, every API call must carry one of them (401 otherwise)."""
    if not api_keys:
        return
    token = bearer(authorization) or ""
    if not any(hmac.compare_digest(token, key) for key in api_keys):
        raise AuthenticationError("missing or invalid API key: send 'Authorization: Bearer <key>'")
