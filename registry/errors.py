"""The one exception tree of the mesh.

It lives in `registry`, the package every other package may import, so that the gateway can turn
any domain error into an HTTP status in one place and the CLI into exit code 1 in another. Errors
carry plain attributes only so they stay picklable across Ray actor boundaries.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base of every error the mesh raises on purpose."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.param))


def _rebuild(cls: type[MeshError], message: str, param: str | None) -> MeshError:
    return cls(message, param=param)


class InvalidRequestError(MeshError):
    """The caller sent something we cannot act on (bad body, empty messages)."""

    status_code = 400
    error_type = "invalid_request_error"


class ManifestError(InvalidRequestError):
    """A specialist manifest failed validation; the message names the field."""


class NotFoundError(MeshError):
    """An unknown specialist or version."""

    status_code = 404
    error_type = "not_found_error"


class ConflictError(MeshError):
    """A write that would break an invariant, such as re-publishing an immutable version."""

    status_code = 409
    error_type = "conflict_error"


class QualityGateError(ConflictError):
    """Installing a specialist would take more than the operator's share of another one's
    labelled queries (`MESH_GATE_MAX_SHARE`); the caller may insist with force."""

    error_type = "quality_gate_error"


class HandedBackError(MeshError):
    """A specialist the router chose cannot answer the query and hands it back (its message
    says why); the gateway tries the next candidate or the fallback. Raised only when the
    caller said another specialist may answer (`SpecialistRequest.may_hand_back`)."""

    status_code = 422
    error_type = "handed_back"


class UnavailableError(MeshError):
    """A dependency is down or a specialist is not ready yet; retrying later may work."""

    status_code = 503
    error_type = "service_unavailable_error"


class RegistryUnavailableError(UnavailableError):
    """Redis cannot be reached. The message is for anyone (no URL: it can hold a password or a
    server path); `detail` names the URL, password redacted, for logs and the local CLI."""

    def __init__(self, message: str, *, param: str | None = None, detail: str = "") -> None:
        super().__init__(message, param=param)
        self.detail = detail


def unreachable(url: str, error: object) -> RegistryUnavailableError:
    """The error for a Redis that does not answer: a public message and a redacted detail."""
    return RegistryUnavailableError(
        "cannot reach Redis: the store is unavailable; retry shortly",
        detail=f"cannot reach Redis at {redact_url(url)}: {error}".replace(url, redact_url(url)),
    )


def redact_url(url: str) -> str:
    """`redis://user:secret@host` -> `redis://user:***@host`."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _password = credentials.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


class AuthenticationError(MeshError):
    """A token is required for this action and none was given."""

    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(MeshError):
    """The token given does not allow this action (wrong owner, not an admin)."""

    status_code = 403
    error_type = "permission_error"


class PayloadTooLargeError(InvalidRequestError):
    """A request body larger than the route accepts."""

    status_code = 413


class RateLimitedError(MeshError):
    """This client sent more than its share; the response carries Retry-After."""

    status_code = 429
    error_type = "rate_limit_error"


class StaleManifestError(ConflictError):
    """A stored manifest that the current rules refuse (published before a rule tightened)."""
