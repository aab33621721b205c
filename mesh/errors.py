"""Turn any exception into OpenAI's error JSON with the right HTTP status: the one place for it."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import ActorDiedError, RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mesh.protocol import error_body
from registry.errors import MeshError, UnavailableError

logger = logging.getLogger("ray.serve")


def unwrap(error: BaseException) -> BaseException:
    """Ray wraps exceptions raised in another replica; find the original one."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def as_mesh_error(error: BaseException) -> BaseException:
    """Serve's full-queue error becomes our 503 (Serve's own handler would drop Retry-After),
    and so does a replica that died under the request (Serve starts another)."""
    error = unwrap(error)
    if type(error).__name__ == "BackPressureError":
        return UnavailableError("the specialist is overloaded (its queue is full); retry shortly")
    if isinstance(error, RayActorError):
        return UnavailableError("the specialist's replica stopped during the request; retry")
    return error


def replica_died(error: BaseException) -> bool:
    """The replica that held the request is dead (Ray's ActorDiedError): no other replica has
    seen the request, so asking again cannot run it twice. (An ActorUnavailableError may be a
    replica that is still running it: not retried.)"""
    return isinstance(unwrap(error), ActorDiedError)


def error_response(error: BaseException) -> JSONResponse:
    error = as_mesh_error(error)
    if isinstance(error, MeshError):
        headers = {"Retry-After": "5"} if error.status_code in (429, 503) else None
        return JSONResponse(
            error_body(error.message, error.error_type, error.param),
            status_code=error.status_code,
            headers=headers,
        )
    logger.exception("unexpected error", exc_info=error)
    return JSONResponse(
        error_body(f"internal error: {type(error).__name__}", "server_error"), status_code=500
    )


# "tools: function names must be unique": how a check across fields names the one it blames.
FIELD_FIRST = re.compile(r"^([a-z_][a-z0-9_.]*): ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MeshError)
    async def _mesh_error(_request: Request, error: MeshError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _invalid_body(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "invalid body"}
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        message = str(first["msg"]).removeprefix("Value error, ")
        if param:
            message = f"{param}: {message}"
        elif named := FIELD_FIRST.match(message):  # a check across fields names its field
            param = named.group(1)
        return JSONResponse(error_body(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own errors (an unparsable body, a wrong method) in OpenAI's shape."""
        kind = "invalid_request_error" if error.status_code < 500 else "server_error"
        return JSONResponse(
            error_body(str(error.detail), kind),
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
        return error_response(error)
