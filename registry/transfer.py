"""Export the whole store to one JSON document, and import it into an empty Redis.

The document holds every version's manifest and publish time, owners and flags, token hashes,
the installed set and usage stats, so an import restores the store exactly (the event stream is
history, not state, and is not carried).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from registry import keys
from registry.errors import ConflictError, ManifestError
from registry.manifest import SpecialistManifest, manifest_json
from registry.redis_server import redis_errors
from registry.store import Registry

FORMAT = "specialist-mesh-store"
FORMAT_VERSION = 1


class ExportedSpecialist(BaseModel):
    meta: dict[str, str]
    versions: dict[str, float]  # version -> publish time
    manifests: dict[str, SpecialistManifest]
    stats: dict[str, str] = {}
    latency: list[str] = []


class StoreDocument(BaseModel):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    exported_at: float = 0.0
    specialists: dict[str, ExportedSpecialist]
    tokens: dict[str, str]
    installed: dict[str, str]


def export_store(registry: Registry) -> StoreDocument:
    client = registry.client
    specialists = {}
    with redis_errors(registry.url):
        for name in registry.names():
            versions = dict(client.zrange(keys.versions(name), 0, -1, withscores=True))
            specialists[name] = ExportedSpecialist(
                meta=client.hgetall(keys.meta(name)),
                versions=versions,
                manifests={v: registry.get(name, v) for v in versions},
                stats=client.hgetall(keys.stats(name)),
                latency=client.lrange(keys.latency(name), 0, -1),
            )
        return StoreDocument(
            exported_at=time.time(),
            specialists=specialists,
            tokens=client.hgetall(keys.TOKENS),
            installed=client.hgetall(keys.INSTALLED),
        )


def import_store(registry: Registry, document: dict[str, Any]) -> int:
    """Load an exported document into an empty store in one transaction; return the count."""
    doc = StoreDocument.model_validate(document)
    if doc.format != FORMAT or doc.format_version != FORMAT_VERSION:
        raise ManifestError(
            f"not a {FORMAT} v{FORMAT_VERSION} document (got {doc.format} v{doc.format_version})"
        )
    if registry.names():
        raise ConflictError("the store is not empty; import only into an empty Redis")
    with redis_errors(registry.url), registry.client.pipeline(transaction=True) as pipe:
        for name, item in doc.specialists.items():
            pipe.sadd(keys.SPECIALISTS, name)
            pipe.zadd(keys.versions(name), item.versions)
            for version, manifest in item.manifests.items():
                pipe.set(keys.manifest(name, version), manifest_json(manifest))
            if item.meta:
                pipe.hset(keys.meta(name), mapping=item.meta)
            if item.stats:
                pipe.hset(keys.stats(name), mapping=item.stats)
            if item.latency:
                pipe.rpush(keys.latency(name), *item.latency)
        if doc.tokens:
            pipe.hset(keys.TOKENS, mapping=doc.tokens)
        if doc.installed:
            pipe.hset(keys.INSTALLED, mapping=doc.installed)
            for name in doc.installed:
                pipe.xadd(keys.EVENTS, {"kind": "install", "name": name, "version": ""})
        pipe.execute()
    return len(doc.specialists)
