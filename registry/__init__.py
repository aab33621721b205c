"""The store: specialist manifests, versions and install state in Redis. No Ray or torch here."""

from registry.auth import Principal
from registry.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    ManifestError,
    MeshError,
    NotFoundError,
    PermissionDeniedError,
    RegistryUnavailableError,
    UnavailableError,
)
from registry.manifest import (
    SpecialistManifest,
    load_manifest,
    parse_manifest,
    parse_manifest_text,
)
from registry.store import LATEST, InstallState, Registry, RegistryEvent, SpecialistInfo

__all__ = [
    "LATEST",
    "AuthenticationError",
    "ConflictError",
    "InstallState",
    "InvalidRequestError",
    "ManifestError",
    "MeshError",
    "NotFoundError",
    "PermissionDeniedError",
    "Principal",
    "Registry",
    "RegistryEvent",
    "RegistryUnavailableError",
    "SpecialistInfo",
    "SpecialistManifest",
    "UnavailableError",
    "load_manifest",
    "parse_manifest",
    "parse_manifest_text",
]
