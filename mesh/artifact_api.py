"""`POST /v1/artifacts`: upload weights or an adapter folder into the store's artifact area.

The body is a tar (or tar.gz) of one file or one folder; it is read in memory and only its
regular files are kept (`registry.artifact_store.files_from_tar` says what is refused). The answer
names the artifact to put in a manifest's `model.source` or `model.adapter`. Publishers only: an
anonymous upload is refused before the body is read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Request

from mesh import store_api
from registry.artifact_store import files_from_tar
from registry.errors import InvalidRequestError
from registry.manifest import ARTIFACT_SCHEME

TAR_TYPES = ("application/x-tar", "application/gzip", "application/x-gzip")

router = APIRouter()


@router.post("/v1/artifacts", status_code=201)
async def upload_artifact(
    request: Request, authorization: str | None = Header(None)
) -> dict[str, Any]:
    svc = store_api.service()
    principal = await svc.principal(authorization)
    principal.require_publisher("uploading artifacts")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in TAR_TYPES:
        raise InvalidRequestError(
            f"send a tar or tar.gz of one file or folder as {' or '.join(TAR_TYPES[:2])}"
        )
    limit = svc.settings.max_artifact_bytes
    # The gateway's HTTP guard caps this route's body at `limit` (413) before it is read whole;
    # `files_from_tar` checks it again, so the route holds without the guard too.
    body = await request.body()
    files = await svc.call(lambda: files_from_tar(body, max_bytes=limit))
    store = await svc.call(svc.artifacts)
    artifact = await svc.call(store.put_files, files)
    index = await svc.call(store.index, artifact)
    return {
        "artifact": ARTIFACT_SCHEME + artifact,
        "files": {name: entry.model_dump() for name, entry in index.files.items()},
    }
