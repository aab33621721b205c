"""The store: specialist manifests, versions and install state in Redis. No Ray or torch here."""

from registry.errors import (
    ConflictError,
    InvalidRequestError,
    ManifestError,
    MeshError,
    NotFoundError,
    RegistryUnavailableError,
    UnavailableError,
)
from registry.manifest import (
    SpecialistManifest,
    load_manifest,
    parse_manifest,
    parse_manifest_text,
)
from registry.store import LATEST, Registry, RegistryEvent

__all__ = [
    "LATEST",
    "ConflictError",
    "InvalidRequestError",
    "ManifestError",
    "MeshError",
    "NotFoundError",
    "Registry",
    "RegistryEvent",
    "RegistryUnavailableError",
    "SpecialistManifest",
    "UnavailableError",
    "load_manifest",
    "parse_manifest",
    "parse_manifest_text",
]
