"""`Registry`: the Redis-backed store of specialist manifests and this mesh's install state.

Versions are immutable: a publish writes a new key under WATCH/MULTI, so it lands whole or not at
all, and re-publishing an existing or older version is refused. Every change is also appended to
the `mesh:events` stream, which the running mesh follows to deploy what gets installed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Literal

import redis
from pydantic import BaseModel

from registry import keys
from registry.errors import ConflictError, NotFoundError, RegistryUnavailableError
from registry.manifest import SpecialistManifest, manifest_json, version_key

LATEST = "latest"
EventKind = Literal["publish", "install", "uninstall"]


class RegistryEvent(BaseModel):
    id: str
    kind: EventKind
    name: str
    version: str


class Registry:
    """Publish, look up and install specialists. Holds a redis client with decode_responses."""

    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        # decode_responses=True: replies are str, which redis-py's types cannot express.
        self.client: Any = client
        self.url = url

    @classmethod
    def from_url(cls, url: str) -> Registry:
        from registry.redis_server import connect

        return cls(connect(url), url)

    # -- writes ---------------------------------------------------------------------------
    def publish(self, manifest: SpecialistManifest, *, install: bool = False) -> SpecialistManifest:
        """Store a new immutable version; refuse an existing or lower version (409)."""
        name, version = manifest.name, manifest.version
        versions_key = keys.versions(name)
        try:
            with self._errors(), self.client.pipeline(transaction=True) as pipe:
                pipe.watch(versions_key)
                existing: list[str] = pipe.zrange(versions_key, 0, -1)
                if version in existing:
                    raise ConflictError(
                        f"{manifest.ref} is already published and versions are immutable; "
                        "bump 'version' to publish a change",
                        param="version",
                    )
                latest = max(existing, key=version_key) if existing else None
                if latest is not None and version_key(version) < version_key(latest):
                    raise ConflictError(
                        f"{manifest.ref} is lower than the latest published {name}@{latest}; "
                        "versions only move forward",
                        param="version",
                    )
                pipe.multi()
                pipe.set(keys.manifest(name, version), manifest_json(manifest))
                pipe.zadd(versions_key, {version: time.time()})
                pipe.sadd(keys.SPECIALISTS, name)
                self._event(pipe, "publish", name, version)
                if install:
                    pipe.hset(keys.INSTALLED, name, LATEST)
                    self._event(pipe, "install", name, LATEST)
                pipe.execute()
        except redis.WatchError:
            raise ConflictError(
                f"{name} was published concurrently; retry", param="version"
            ) from None
        return manifest

    def install(self, name: str, version: str = LATEST) -> None:
        """Mark a published specialist (a version, or the latest) as installed in this mesh."""
        if version == LATEST:
            self.get(name)
        else:
            self.get(name, version)
        with self._errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.INSTALLED, name, version)
            self._event(pipe, "install", name, version)
            pipe.execute()

    def uninstall(self, name: str) -> None:
        with self._errors():
            if not self.client.hexists(keys.INSTALLED, name):
                raise NotFoundError(f"specialist '{name}' is not installed", param="name")
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.INSTALLED, name)
                self._event(pipe, "uninstall", name, "")
                pipe.execute()

    # -- reads ----------------------------------------------------------------------------
    def versions(self, name: str) -> list[str]:
        """Published versions of `name`, oldest first by semver."""
        with self._errors():
            found: list[str] = self.client.zrange(keys.versions(name), 0, -1)
        if not found:
            raise NotFoundError(f"no specialist named '{name}' is published", param="name")
        return sorted(found, key=version_key)

    def get(self, name: str, version: str | None = None) -> SpecialistManifest:
        """One version of a specialist; the latest when `version` is None or 'latest'."""
        if version in (None, LATEST):
            version = self.versions(name)[-1]
        with self._errors():
            raw = self.client.get(keys.manifest(name, version))
        if raw is None:
            raise NotFoundError(f"{name}@{version} is not published", param="version")
        return SpecialistManifest.model_validate_json(raw)

    def exists(self, name: str, version: str) -> bool:
        with self._errors():
            return bool(self.client.exists(keys.manifest(name, version)))

    def names(self) -> list[str]:
        with self._errors():
            return sorted(self.client.smembers(keys.SPECIALISTS))

    def latest(self) -> list[SpecialistManifest]:
        """The latest version of every published specialist, by name."""
        return [self.get(name) for name in self.names()]

    def installed(self) -> dict[str, SpecialistManifest]:
        """Installed specialists resolved to the manifest each should run."""
        with self._errors():
            pins: dict[str, str] = self.client.hgetall(keys.INSTALLED)
        return {name: self.get(name, pin) for name, pin in sorted(pins.items())}

    def installed_pins(self) -> dict[str, str]:
        with self._errors():
            return dict(self.client.hgetall(keys.INSTALLED))

    # -- events ---------------------------------------------------------------------------
    def last_event_id(self) -> str:
        with self._errors():
            entries = self.client.xrevrange(keys.EVENTS, count=1)
        return entries[0][0] if entries else "0-0"

    def events(self, after: str = "0-0", *, block_ms: int | None = None) -> list[RegistryEvent]:
        """Events after `after`; with `block_ms`, wait that long for the first one."""
        with self._errors():
            reply = self.client.xread({keys.EVENTS: after}, block=block_ms, count=100)
        return [
            RegistryEvent(id=event_id, **fields)
            for _stream, entries in reply or []
            for event_id, fields in entries
        ]

    @staticmethod
    def _event(pipe: redis.client.Pipeline, kind: EventKind, name: str, version: str) -> None:
        pipe.xadd(
            keys.EVENTS,
            {"kind": kind, "name": name, "version": version},
            maxlen=keys.EVENTS_MAXLEN,
            approximate=True,
        )

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return _redis_errors(self.url)


@contextlib.contextmanager
def _redis_errors(url: str) -> Iterator[None]:
    """Turn connection failures into RegistryUnavailableError naming the URL."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RegistryUnavailableError(f"cannot reach Redis at {url}: {error}") from None
