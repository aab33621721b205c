"""The store's artifact area: files a publisher uploads (weights, an adapter folder), in Redis.

Why Redis: every node of a cluster already reaches it, so a replica anywhere can fetch what a
manifest names, and a manifest never needs a path on some server. Content-addressed: each file's
bytes live under `mesh:blob:{sha256}`; a bundle (one file, or a folder such as a peft adapter or a
small HF model) is an index `{"files": {relative name: {"sha256", "size"}}}` whose canonical JSON's
sha256 is the artifact id, named in manifests as `artifact:<id>`. Identical uploads are one
artifact, and nothing stored can change under an id.

Replicas `materialize` an artifact into a local cache folder, checking every file's sha256 as it
is written. Traded away: blobs are never garbage-collected, and a bundle is held in memory while
it uploads (bounded by `max_bytes`, MESH_MAX_ARTIFACT_BYTES).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry import keys
from registry.errors import (
    InvalidRequestError,
    ManifestError,
    PayloadTooLargeError,
    unreachable,
)
from registry.manifest import ARTIFACT_ID, ARTIFACT_SCHEME, artifact_id
from registry.redis_server import redis_errors

DEFAULT_MAX_BYTES = 256 * 2**20
MAX_FILES = 64
MAX_TAR_MEMBERS = 4 * MAX_FILES  # files plus folders; bounds the work a tar can ask for
NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,199}$")  # no hidden parts, no '..'
MAX_NAME_CHARS = 190  # with "adapter/" in front, still a valid `model.sha256` key
CHUNK = 1 << 20


class ArtifactFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ArtifactIndex(BaseModel):
    """What one artifact holds; its canonical JSON's sha256 is the artifact id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    files: dict[str, ArtifactFile]

    def canonical(self) -> bytes:
        data = self.model_dump(mode="json")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())


def check_name(name: str) -> str:
    """A file name inside a bundle: relative, '/'-separated, no '..', no hidden or empty parts."""
    parts = name.split("/")
    if (
        len(name) > MAX_NAME_CHARS
        or ".." in name
        or not all(NAME_PART.match(part) for part in parts)
    ):
        raise InvalidRequestError(
            f"artifact file name {name[:MAX_NAME_CHARS]!r} is not allowed: names are relative "
            "paths of letters, digits, '.', '_', '+' or '-' (no '..', no hidden files)"
        )
    return name


def _check_bundle(names: list[str]) -> None:
    if not names:
        raise InvalidRequestError("an artifact holds at least one file")
    if len(names) > MAX_FILES:
        raise InvalidRequestError(f"an artifact holds at most {MAX_FILES} files")
    for name in names:
        check_name(name)
    folders = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    if folders & set(names):
        raise InvalidRequestError("an artifact file name is also used as a folder")


class ArtifactStore:
    """Bundles in Redis through a binary client (the registry's client decodes replies to str)."""

    def __init__(self, client: Any, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.client = client
        self.url = url
        self.max_bytes = max_bytes

    @classmethod
    def from_url(cls, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ArtifactStore:
        client = redis.Redis.from_url(url, socket_connect_timeout=2.0, socket_timeout=60.0)
        try:
            client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            raise unreachable(url, error) from None
        return cls(client, url, max_bytes=max_bytes)

    # -- writing ----------------------------------------------------------------------------
    def put_files(self, files: Mapping[str, bytes | Path]) -> str:
        """Store a bundle and return its artifact id. Blobs first, the index last, so an index
        never names a missing blob."""
        _check_bundle(list(files))
        sizes = {n: len(d) if isinstance(d, bytes) else d.stat().st_size for n, d in files.items()}
        if sum(sizes.values()) > self.max_bytes:
            raise PayloadTooLargeError(
                f"artifact is {sum(sizes.values())} bytes; the limit is {self.max_bytes} "
                "(MESH_MAX_ARTIFACT_BYTES)"
            )
        entries: dict[str, ArtifactFile] = {}
        for name, data in sorted(files.items()):
            content = data if isinstance(data, bytes) else data.read_bytes()
            digest = hashlib.sha256(content).hexdigest()
            with redis_errors(self.url):
                self.client.set(keys.blob(digest), content, nx=True)
            entries[name] = ArtifactFile(sha256=digest, size=len(content))
        index = ArtifactIndex(files=entries)
        with redis_errors(self.url):
            self.client.set(keys.artifact(index.id), index.canonical(), nx=True)
        return index.id

    def upload_dir(self, path: Path) -> str:
        """Upload a local file, or every non-hidden file under a local folder (links followed:
        this runs on the publisher's own machine, for their own files)."""
        path = path.expanduser()
        if path.is_file():
            return self.put_files({path.name: path})
        if not path.is_dir():
            raise ManifestError(f"{path} does not exist")
        files = {
            str(file.relative_to(path).as_posix()): file
            for file in sorted(path.rglob("*"))
            if file.is_file() and not any(p.startswith(".") for p in file.relative_to(path).parts)
        }
        return self.put_files(files)

    # -- reading ----------------------------------------------------------------------------
    def index(self, artifact: str) -> ArtifactIndex | None:
        """The index of `artifact` (an id or `artifact:<id>`), or None when it is not stored."""
        artifact = artifact_id(artifact) or artifact
        if not ARTIFACT_ID.match(artifact):
            return None
        with redis_errors(self.url):
            raw = self.client.get(keys.artifact(artifact))
        if raw is None:
            return None
        try:
            index = ArtifactIndex.model_validate_json(raw)
        except ValidationError:
            raise ManifestError(f"artifact {artifact} has a damaged index in the store") from None
        if hashlib.sha256(raw).hexdigest() != artifact or index.id != artifact:
            raise ManifestError(f"artifact {artifact} has a damaged index in the store")
        return index

    def exists(self, artifact: str) -> bool:
        return self.index(artifact) is not None

    def materialize(self, artifact: str, cache_dir: Path, *, field: str = "model.source") -> Path:
        """The local folder `<cache_dir>/<id>` holding the artifact's files, each verified.

        A copy already there is re-hashed and reused; a new one is written to a temporary folder
        and renamed into place, so a half-written copy is never seen (replicas may race).
        """
        index = self.index(artifact)
        if index is None:
            raise ManifestError(f"{field}: artifact not found in the store", param=field)
        for name in index.files:
            check_name(name)
        cache_dir = cache_dir.expanduser()
        target = cache_dir / index.id
        if target.is_dir() and _matches(target, index):
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        staging = cache_dir / f".{index.id}.{uuid.uuid4().hex}.tmp"
        try:
            self._write(index, staging, field)
            if target.exists():
                shutil.rmtree(target)  # a damaged copy: replaced by the verified one
            os.replace(staging, target)
        except OSError:
            if not (target.is_dir() and _matches(target, index)):  # another replica won the race
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _write(self, index: ArtifactIndex, folder: Path, field: str) -> None:
        for name, entry in sorted(index.files.items()):
            with redis_errors(self.url):
                content = self.client.get(keys.blob(entry.sha256))
            if content is None or hashlib.sha256(content).hexdigest() != entry.sha256:
                raise ManifestError(
                    f"{field}: artifact {index.id[:12]} is damaged in the store: file '{name}' "
                    "is missing or does not match its sha256; upload it again",
                    param=field,
                )
            destination = folder / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(content)


def _matches(folder: Path, index: ArtifactIndex) -> bool:
    """Whether `folder` holds exactly the index's files with their sha256 (and nothing else:
    an extra file, such as a planted pickle, could be loaded alongside)."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    if present != set(index.files):
        return False
    for name, entry in index.files.items():
        file = folder / name
        if not file.is_file() or file.stat().st_size != entry.size:
            return False
        if sha256_of(file) != entry.sha256:
            return False
    return True


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- uploads over HTTP: a tar body --------------------------------------------------------
def files_from_tar(body: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, bytes]:
    """The regular files of a tar (or tar.gz) body, read in memory, never onto disk.

    Refused: links, devices and every other non-regular member, names with '..', absolute or
    hidden parts, more than MAX_FILES files, more than `max_bytes` in all (sizes are checked from
    the headers before a member is read, so a compressed bomb stops early). A single top-level
    folder is unwrapped: `tar -cf - adapter/` and `tar -C adapter -cf - .` give one artifact.
    """
    if len(body) > max_bytes:
        raise PayloadTooLargeError(f"upload is larger than {max_bytes} bytes")
    files: dict[str, bytes] = {}
    total = 0
    raw = _gunzipped(body, max_bytes + (MAX_TAR_MEMBERS + 4) * 1024)
    try:
        # Plain tar bytes already in memory and capped: no header (a GNU long name, a pax
        # record) can make tarfile read more than the upload holds.
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
            for count, member in enumerate(archive, start=1):
                if count > MAX_TAR_MEMBERS:
                    raise InvalidRequestError(f"upload holds more than {MAX_TAR_MEMBERS} entries")
                name = _member_name(member.name)
                if member.isdir() or not name:
                    continue
                if not member.isreg():
                    raise InvalidRequestError(
                        f"upload member {name!r} is not a regular file (links are refused)"
                    )
                total += member.size
                if total > max_bytes:
                    raise PayloadTooLargeError(f"upload unpacks to more than {max_bytes} bytes")
                handle = archive.extractfile(member)
                if handle is None:
                    raise InvalidRequestError(f"upload member {name!r} cannot be read")
                files[check_name(name)] = handle.read(member.size)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        raise InvalidRequestError(f"upload is not a readable tar or tar.gz: {error}") from None
    _check_bundle(list(files))
    return _unwrap(files)


def _gunzipped(body: bytes, limit: int) -> bytes:
    """A gzip body decompressed, refused as soon as it passes `limit` (a gzip bomb never
    inflates in memory); anything else is returned as it is."""
    if body[:2] != b"\x1f\x8b":
        return body
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        raw = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise InvalidRequestError(f"upload is not a readable tar.gz: {error}") from None
    if len(raw) > limit or inflater.unconsumed_tail:
        raise PayloadTooLargeError(f"upload unpacks to more than {limit} bytes")
    return raw


def _member_name(raw: str) -> str:
    path = PurePosixPath(raw)
    if path.is_absolute() or ".." in path.parts or "\\" in raw:
        raise InvalidRequestError(f"upload member {raw[:200]!r} is outside the upload")
    return "/".join(part for part in path.parts if part != ".")


def _unwrap(files: dict[str, bytes]) -> dict[str, bytes]:
    tops = {name.split("/", 1)[0] for name in files}
    if len(tops) == 1 and all("/" in name for name in files):
        return {name.split("/", 1)[1]: data for name, data in files.items()}
    return files


# -- `mesh register` of a manifest that names local files ---------------------------------
UPLOADABLE_FIELDS = ("source", "adapter")


def is_local_path(value: str) -> bool:
    """A publisher's local path in a manifest they are about to publish (never stored):
    absolute, '~/...', or './' / '../' relative to the manifest's folder."""
    return value.startswith(("/", "~", "./", "../")) or value in (".", "..")


PLACEHOLDER_ID = "0" * 64


def upload_local_sources(
    data: dict[str, Any], base_dir: Path, store: ArtifactStore | None
) -> dict[str, Any]:
    """A copy of manifest `data` whose local `model.source` / `model.adapter` paths are uploaded
    into the artifact area and replaced by `artifact:<id>`. Runs on the publisher's side before
    validation, so local paths never reach the store. With `store=None`, a dry run: the paths
    are checked and replaced by a placeholder id, so the rest can be validated before uploading.
    """
    result = copy.deepcopy(data)
    for field in local_source_fields(data):
        path = Path(data["model"][field]).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.exists():
            raise ManifestError(f"model.{field}: {path} does not exist", param=f"model.{field}")
        uploaded = store.upload_dir(path) if store is not None else PLACEHOLDER_ID
        result["model"][field] = ARTIFACT_SCHEME + uploaded
    return result


def local_source_fields(data: dict[str, Any]) -> list[str]:
    """The `model` fields of manifest `data` that name local paths (what would be uploaded)."""
    model = data.get("model")
    if not isinstance(model, dict):
        return []
    return [
        field
        for field in UPLOADABLE_FIELDS
        if isinstance(model.get(field), str)
        and is_local_path(model[field])
        and not (field == "source" and model.get("engine") == "tool")
    ]
