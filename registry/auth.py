"""Owners, tokens and who may do what in the store.

Tokens are random and shown once; only their sha256 is stored. The admin token is a setting
(`MESH_ADMIN_TOKEN`), never stored. Rules, the same for the CLI and HTTP:
- nothing is open to an anonymous caller: publishing needs an owner token (issued by the
  operator with `mesh token create`) or the admin token;
- the first publisher of a name owns it (as the manifest's `owner`, which must be the token's);
- new versions, deprecate, yank and delete need the owner's token or the admin token;
- operator actions (install, uninstall, scale, import, router fit, token create) need the admin
  token. `mesh up` generates one when none is configured (`mesh.admin_token`), so there is
  always one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from pydantic import BaseModel

from registry import keys
from registry.errors import AuthenticationError, PermissionDeniedError
from registry.redis_server import redis_errors

TOKEN_PREFIX = "msh_"


class Principal(BaseModel):
    """Who is acting: the owner their token belongs to, and whether they are the operator.

    `Principal()` is an anonymous caller. `operator` is kept apart from `admin` for callers
    inside the mesh (seeding the catalog), which act as the operator without a token.
    """

    owner: str | None = None
    admin: bool = False
    operator: bool = False

    @property
    def anonymous(self) -> bool:
        return self.owner is None and not self.admin and not self.operator

    def require_publisher(self, action: str) -> None:
        """Any credential of the store: an owner's token or the admin token."""
        if self.anonymous:
            raise AuthenticationError(
                f"{action} needs a token: an owner token from the operator "
                "('mesh token create --owner NAME') or the admin token; "
                "pass --token, set MESH_TOKEN, or send 'Authorization: Bearer <token>'"
            )

    def require_operator(self, action: str) -> None:
        if self.operator:
            return
        if self.owner is None:
            raise AuthenticationError(
                f"{action} needs the admin token (MESH_ADMIN_TOKEN): pass --token or set MESH_TOKEN"
            )
        raise PermissionDeniedError(f"{action} needs the admin token, not an owner's token")

    def require_owner(self, owner: str, action: str) -> None:
        if self.admin or (self.owner is not None and self.owner == owner):
            return
        if self.owner is None:
            raise AuthenticationError(
                f"{action} needs the token of owner '{owner}' or the admin token: "
                "pass --token or set MESH_TOKEN"
            )
        raise PermissionDeniedError(
            f"{action} is for owner '{owner}' or an admin; your token belongs to '{self.owner}'"
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url

    def create(self, owner: str) -> str:
        """Issue a new token for `owner`; the plain token is returned once and never stored."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with redis_errors(self.url):
            self.client.hset(keys.TOKENS, token_hash(token), owner)
        return token

    def owner_of(self, token: str) -> str | None:
        with redis_errors(self.url):
            owner = self.client.hget(keys.TOKENS, token_hash(token))
        return str(owner) if owner is not None else None

    def principal(self, token: str | None, admin_token: str | None) -> Principal:
        """Resolve a presented token. A token that matches nothing is refused, not ignored;
        no token is an anonymous caller, whatever the settings."""
        if not token:
            return Principal()
        if admin_token and hmac.compare_digest(token.encode(), admin_token.encode()):
            return Principal(admin=True, operator=True)
        owner = self.owner_of(token)
        if owner is None:
            raise PermissionDeniedError("the token is not valid (unknown or revoked)")
        return Principal(owner=owner)
