"""`Registry`: the Redis-backed store of specialist manifests and this mesh's install state.

Versions are immutable: a publish writes under WATCH/MULTI, so it lands whole or not at all, and
re-publishing an existing or lower version is refused. Every change is also appended to the
`mesh:events` stream, which the running mesh follows to deploy what gets installed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import redis
from pydantic import BaseModel, ValidationError

from registry import keys
from registry.auth import Principal, TokenStore
from registry.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    StaleManifestError,
)
from registry.manifest import (
    Scaling,
    SpecialistManifest,
    format_validation_error,
    manifest_json,
    version_key,
)
from registry.redis_server import redis_errors
from registry.router_lessons import LessonStore
from registry.stats import StatsStore

logger = logging.getLogger(__name__)
LATEST = "latest"
# Who acts when code inside the mesh calls the store without a principal (seeding, tests).
TRUSTED = Principal(admin=True, operator=True)
ALL_VERSIONS = "*"
WATCH_RETRIES = 20
EventKind = Literal["publish", "install", "uninstall", "deprecate", "yank", "delete", "scale"]


class RegistryEvent(BaseModel):
    id: str
    kind: EventKind
    name: str
    version: str


class InstallState(BaseModel):
    """How a specialist is installed: its pin ("latest" follows new publishes) and the version."""

    pin: str
    version: str


class SpecialistInfo(BaseModel):
    """Everything the store knows about one name, for `show`, the API and the UI."""

    manifest: SpecialistManifest
    owner: str
    versions: list[str]
    deprecated: dict[str, str]  # version or "*" -> reason
    yanked: dict[str, str]  # version -> reason
    installed: InstallState | None

    @property
    def deprecation(self) -> str | None:
        """Why the shown version is deprecated, if it is."""
        return self.deprecated.get(self.manifest.version) or self.deprecated.get(ALL_VERSIONS)


class Registry:
    """Publish, look up and install specialists. Holds a redis client with decode_responses."""

    def __init__(self, client: redis.Redis, url: str = "redis") -> None:
        # decode_responses=True: replies are str, which redis-py's types cannot express.
        self.client: Any = client
        self.url = url
        self.tokens = TokenStore(self.client, url)
        self.stats = StatsStore(self.client, url)
        self.lessons = LessonStore(self.client, url)

    @classmethod
    def from_url(cls, url: str) -> Registry:
        from registry.redis_server import connect

        return cls(connect(url), url)

    def principal(self, token: str | None, admin_token: str | None) -> Principal:
        return self.tokens.principal(token, admin_token)

    # -- publishing -----------------------------------------------------------------------
    def publish(
        self,
        manifest: SpecialistManifest,
        principal: Principal | None = None,
        *,
        install: bool = False,
    ) -> SpecialistManifest:
        """Store a new immutable version; refuse an existing or lower version (409).

        Publishing is not installing: only the operator's publishes change what runs. Then an
        install pinned to "latest" moves to the new version in the same transaction, and with
        `install` a specialist not yet installed is installed. A publisher's new version waits
        for the operator's `install` (new weights, prompts or resource asks go live only when
        the operator says so). `principal=None` is a trusted caller inside the mesh; the HTTP
        API and the CLI always say who asks.
        """
        principal = principal or TRUSTED
        principal.require_publisher(f"publishing {manifest.name}")
        name, version = manifest.name, manifest.version

        def write(pipe: Any) -> None:
            pipe.watch(keys.versions(name), keys.meta(name), keys.INSTALLED)
            existing: list[str] = pipe.zrange(keys.versions(name), 0, -1)
            owner: str | None = pipe.hget(keys.meta(name), "owner")
            _check_publish(manifest, existing, owner, principal)
            state = _state(pipe.hget(keys.INSTALLED, name))
            pipe.multi()
            pipe.set(keys.manifest(name, version), manifest_json(manifest))
            pipe.zadd(keys.versions(name), {version: time.time()})
            pipe.sadd(keys.SPECIALISTS, name)
            pipe.hsetnx(keys.meta(name), "owner", manifest.owner)
            pipe.hsetnx(keys.meta(name), "created_at", str(time.time()))
            _event(pipe, "publish", name, version)
            if _publish_installs(state, principal, install):
                pipe.hset(
                    keys.INSTALLED,
                    name,
                    InstallState(pin=LATEST, version=version).model_dump_json(),
                )
                _event(pipe, "install", name, version)

        self._transaction(write)
        return manifest

    def check_publish(self, manifest: SpecialistManifest, principal: Principal) -> None:
        """Refuse now what `publish` would refuse for ownership or version (403, 409), writing
        nothing: a dry run answers as the publish would, before any report is computed."""
        principal.require_publisher(f"publishing {manifest.name}")
        with self._errors():
            existing: list[str] = self.client.zrange(keys.versions(manifest.name), 0, -1)
            owner: str | None = self.client.hget(keys.meta(manifest.name), "owner")
        _check_publish(manifest, existing, owner, principal)

    def publish_installs(self, name: str, principal: Principal, *, install: bool) -> bool:
        """Whether `publish(..., principal, install=install)` of `name` would also install it
        (what the quality gate guards): the operator's publish of a name not installed yet
        with `install`, or of one installed pinned to "latest"."""
        with self._errors():
            state = _state(self.client.hget(keys.INSTALLED, name))
        return _publish_installs(state, principal, install)

    def deprecate(self, name: str, version: str | None, reason: str, principal: Principal) -> None:
        """Flag a version (or all versions) as deprecated: still served, shown as such."""
        target = version or ALL_VERSIONS
        principal.require_owner(self.owner(name), f"deprecating {name}")
        if version:
            self.get(name, version)
        self._flag(name, "deprecate", target, reason or "deprecated")

    def yank(self, name: str, version: str, reason: str, principal: Principal) -> None:
        """A yanked version cannot be installed; a running one keeps serving, with a warning."""
        principal.require_owner(self.owner(name), f"yanking {name}@{version}")
        self.get(name, version)
        self._flag(name, "yank", version, reason or "yanked")

    def _flag(
        self, name: str, kind: Literal["deprecate", "yank"], target: str, reason: str
    ) -> None:
        """Set a deprecation or yank flag and record the event, in one transaction."""
        field = f"{'deprecated' if kind == 'deprecate' else 'yanked'}:{target}"
        with self._errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.meta(name), field, reason)
            _event(pipe, kind, name, target)
            pipe.execute()

    def delete(self, name: str, principal: Principal) -> None:
        """Remove a specialist with every version, its stats, and its install."""
        principal.require_owner(self.owner(name), f"deleting {name}")
        versions = self.versions(name)
        if not principal.operator and self.install_states().get(name) is not None:
            raise ConflictError(
                f"{name} is installed in this mesh; the operator uninstalls it first "
                "(deleting would take it out of the mesh)",
                param="name",
            )
        with self._errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*[keys.manifest(name, v) for v in versions], *keys.all_for(name))
            pipe.srem(keys.SPECIALISTS, name)
            pipe.hdel(keys.INSTALLED, name)
            _event(pipe, "delete", name, "")
            pipe.execute()

    # -- installing -----------------------------------------------------------------------
    def install(
        self,
        name: str,
        version: str = LATEST,
        principal: Principal | None = None,
        *,
        resolved: str | None = None,
    ) -> InstallState:
        """Install a published specialist at a version, or at the latest one not yanked, pinned
        to `version`. `resolved`: what the caller's `installable(name, version)` gave (the
        version its quality gate checked), installed instead of resolving "latest" again, so a
        publish in between cannot slip in an unchecked version."""
        (principal or TRUSTED).require_operator(f"installing {name}")
        state = InstallState(pin=version, version=self.installable(name, resolved or version))
        with self._errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(keys.INSTALLED, name, state.model_dump_json())
            _event(pipe, "install", name, state.version)
            pipe.execute()
        return state

    def installable(self, name: str, version: str = LATEST) -> str:
        """The version `install` would run: `version`, or the latest one not yanked; an
        unknown or yanked version is refused."""
        info = self.info(name)
        if version == LATEST:
            candidates = [v for v in info.versions if v not in info.yanked]
            if not candidates:
                raise ConflictError(f"every version of {name} is yanked", param="version")
            return candidates[-1]
        if version not in info.versions:
            raise NotFoundError(f"{name}@{version} is not published", param="version")
        if version in info.yanked:
            raise ConflictError(
                f"{name}@{version} is yanked ({info.yanked[version]}) and cannot be installed",
                param="version",
            )
        return version

    def uninstall(self, name: str, principal: Principal | None = None) -> None:
        (principal or TRUSTED).require_operator(f"uninstalling {name}")
        with self._errors():
            if not self.client.hexists(keys.INSTALLED, name):
                raise NotFoundError(f"specialist '{name}' is not installed", param="name")
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.INSTALLED, name)
                _event(pipe, "uninstall", name, "")
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
        try:
            return SpecialistManifest.model_validate_json(raw)
        except ValidationError as error:
            problem = format_validation_error(error, f"{name}@{version}").splitlines()[-1].strip()
            raise StaleManifestError(
                f"{name}@{version} was published under older rules and no longer validates "
                f"({problem}); publish a new version",
                param="version",
            ) from None

    def exists(self, name: str, version: str) -> bool:
        with self._errors():
            return bool(self.client.exists(keys.manifest(name, version)))

    def owner(self, name: str) -> str:
        with self._errors():
            owner = self.client.hget(keys.meta(name), "owner")
        if owner is None:
            raise NotFoundError(f"no specialist named '{name}' is published", param="name")
        return str(owner)

    def info(self, name: str, version: str | None = None) -> SpecialistInfo:
        versions = self.versions(name)
        manifest = self.get(name, version)
        with self._errors():
            meta: dict[str, str] = self.client.hgetall(keys.meta(name))
            state = _state(self.client.hget(keys.INSTALLED, name))
        return SpecialistInfo(
            manifest=manifest,
            owner=meta.get("owner", manifest.owner),
            versions=versions,
            deprecated=_prefixed(meta, "deprecated:"),
            yanked=_prefixed(meta, "yanked:"),
            installed=state,
        )

    def names(self) -> list[str]:
        with self._errors():
            return sorted(self.client.smembers(keys.SPECIALISTS))

    def latest(
        self, *, tag: str | None = None, owner: str | None = None
    ) -> list[SpecialistManifest]:
        """The latest version of every published specialist, by name, optionally filtered."""
        found = [m for m in (self._valid(name) for name in self.names()) if m is not None]
        return [
            m
            for m in found
            if (tag is None or tag in m.tags) and (owner is None or m.owner == owner)
        ]

    def installed(self) -> dict[str, SpecialistManifest]:
        """Installed specialists resolved to the manifest each should run (with scale overrides)."""
        resolved = {}
        for name, state in self.install_states().items():
            found = self._valid(name, state.version)
            if found is None:
                continue
            manifest = found
            replicas = self._scale_range(name)
            if replicas is not None:
                low, high = replicas
                scaling = manifest.scaling.model_copy(
                    update={"min_replicas": low, "max_replicas": high}
                )
                manifest = manifest.model_copy(update={"scaling": scaling})
            resolved[name] = manifest
        return resolved

    def _valid(self, name: str, version: str | None = None) -> SpecialistManifest | None:
        """`get`, or None (logged) for a version stored under older rules: one stale manifest
        must not hide the rest of the store or stop the mesh from deploying the others."""
        try:
            return self.get(name, version)
        except StaleManifestError as error:
            logger.warning("skipping %s", error.message)
            return None

    # -- scaling --------------------------------------------------------------------------
    def scale(
        self, name: str, min_replicas: int, max_replicas: int, principal: Principal | None = None
    ) -> Scaling:
        """Override the manifest's replica range for this mesh (an operator action)."""
        (principal or TRUSTED).require_operator(f"scaling {name}")
        base = self.get(name).scaling
        try:
            scaling = Scaling.model_validate(
                {**base.model_dump(), "min_replicas": min_replicas, "max_replicas": max_replicas}
            )
        except ValueError as error:
            raise InvalidRequestError(f"bad replica range: {error}", param="replicas") from None
        with self._errors(), self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.meta(name), mapping={"scale:min": min_replicas, "scale:max": max_replicas}
            )
            _event(pipe, "scale", name, f"{min_replicas}-{max_replicas}")
            pipe.execute()
        return scaling

    def _scale_range(self, name: str) -> tuple[int, int] | None:
        """This mesh's replica override for `name` (set by `scale`), if any."""
        with self._errors():
            low, high = self.client.hmget(keys.meta(name), "scale:min", "scale:max")
        if low is None or high is None:
            return None
        return int(low), int(high)

    def install_states(self) -> dict[str, InstallState]:
        with self._errors():
            raw: dict[str, str] = self.client.hgetall(keys.INSTALLED)
        return {
            name: InstallState.model_validate_json(value) for name, value in sorted(raw.items())
        }

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

    # -- plumbing -------------------------------------------------------------------------
    def _transaction(self, write: Callable[[Any], None]) -> None:
        """Run `write` under WATCH/MULTI, retrying when a watched key changed meanwhile."""
        for _ in range(WATCH_RETRIES):
            try:
                with self._errors(), self.client.pipeline(transaction=True) as pipe:
                    write(pipe)
                    pipe.execute()
                return
            except redis.WatchError:
                continue
        raise ConflictError("the store changed concurrently too often; retry")

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return redis_errors(self.url)


def _check_publish(
    manifest: SpecialistManifest, existing: list[str], owner: str | None, principal: Principal
) -> None:
    if owner is not None:
        principal.require_owner(owner, f"publishing a new version of {manifest.name}")
        if manifest.owner != owner:
            raise ConflictError(
                f"{manifest.name} is owned by '{owner}'; "
                f"the manifest says owner '{manifest.owner}'",
                param="owner",
            )
    elif principal.owner is not None and principal.owner != manifest.owner and not principal.admin:
        raise PermissionDeniedError(
            f"your token belongs to '{principal.owner}' but the manifest's owner is "
            f"'{manifest.owner}'"
        )
    if manifest.version in existing:
        raise ConflictError(
            f"{manifest.ref} is already published and versions are immutable; "
            "bump 'version' to publish a change",
            param="version",
        )
    latest = max(existing, key=version_key) if existing else None
    if latest is not None and version_key(manifest.version) < version_key(latest):
        raise ConflictError(
            f"{manifest.ref} is lower than the latest published {manifest.name}@{latest}; "
            "versions only move forward",
            param="version",
        )


def _publish_installs(state: InstallState | None, principal: Principal, install: bool) -> bool:
    if not principal.operator:
        return False
    return install if state is None else state.pin == LATEST


def _state(raw: str | None) -> InstallState | None:
    return InstallState.model_validate_json(raw) if raw else None


def _prefixed(meta: dict[str, str], prefix: str) -> dict[str, str]:
    return {
        key.removeprefix(prefix): value for key, value in meta.items() if key.startswith(prefix)
    }


def _event(pipe: Any, kind: EventKind, name: str, version: str) -> None:
    pipe.xadd(
        keys.EVENTS,
        {"kind": kind, "name": name, "version": version},
        maxlen=keys.EVENTS_MAXLEN,
        approximate=True,
    )
