"""The operator's admin token: set by `MESH_ADMIN_TOKEN`, or generated once under `MESH_HOME`.

Like a notebook server's token: `mesh up` creates it when none is configured (file `admin_token`,
mode 0600, printed once), and the CLI on the same machine reads it from there, so a laptop user
needs no set-up while a stranger on the network holds no credential. The file is the only copy;
the store keeps no admin token.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mesh.settings import MeshSettings

FILE_NAME = "admin_token"
PREFIX = "msh_admin_"


def token_file(settings: MeshSettings) -> Path:
    return settings.data_dir / FILE_NAME


def read_admin_token(settings: MeshSettings) -> str | None:
    """The configured token, else the one `mesh up` saved under MESH_HOME, else None."""
    if settings.admin_token:
        return settings.admin_token
    try:
        token = token_file(settings).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return token or None


def ensure_admin_token(settings: MeshSettings) -> tuple[str, bool]:
    """The admin token, creating the file (mode 0600) when none exists; True when created."""
    existing = read_admin_token(settings)
    if existing:
        return existing, False
    path = token_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = PREFIX + secrets.token_urlsafe(32)
    # O_EXCL: two `mesh up` racing on one home must not overwrite each other's token.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return ensure_admin_token(settings)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token, True


def with_admin_token(settings: MeshSettings) -> MeshSettings:
    """Settings whose `admin_token` is filled from MESH_HOME when the environment has none."""
    token = read_admin_token(settings)
    if token == settings.admin_token:
        return settings
    return settings.model_copy(update={"admin_token": token})
