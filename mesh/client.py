"""`MeshClient`: a small HTTP client of the gateway, shared by the CLI and the UI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from registry.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    MeshError,
    NotFoundError,
    PermissionDeniedError,
    QualityGateError,
    UnavailableError,
)

_STATUS_ERRORS: dict[int, type[MeshError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    503: UnavailableError,
}
# Errors that share a status with others, told apart by the error JSON's `type`.
_TYPE_ERRORS: dict[str, type[MeshError]] = {QualityGateError.error_type: QualityGateError}


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _gate_params(force: bool, dry_run: bool) -> dict[str, str]:
    flags = {"force": force, "dry_run": dry_run}
    return {name: "true" for name, on in flags.items() if on}


class MeshClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def chat(
        self, messages: list[dict[str, str]], model: str = "mesh", **params: Any
    ) -> dict[str, Any]:
        body = {"model": model, "messages": messages, **params}
        return self._json(self._send("POST", "/v1/chat/completions", json=body))

    def chat_stream(
        self, messages: list[dict[str, str]], model: str = "mesh", **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield the parsed SSE chunks (the first carries the `mesh` object)."""
        body = {"model": model, "messages": messages, "stream": True, **params}
        try:
            with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    self._json(response)
                for line in response.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise MeshError(chunk["error"]["message"])
                    yield chunk
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    def models(self) -> list[dict[str, Any]]:
        return list(self._json(self._send("GET", "/v1/models"))["data"])

    def route(self, text: str) -> dict[str, Any]:
        return self._json(self._send("POST", "/v1/route", json={"text": text}))

    def router_status(self) -> dict[str, Any]:
        """`GET /v1/router`: the serving router's artifact, operating point and trade-off."""
        return self._json(self._send("GET", "/v1/router"))

    def health(self, token: str | None = None) -> dict[str, Any]:
        """The mesh's state; 503 (starting) still carries the per-specialist details, and the
        admin `token` adds the replica details that the gateway keeps from other callers."""
        response = self._send("GET", "/healthz", headers=_bearer(token))
        if response.status_code == 503:
            return dict(response.json())
        return self._json(response)

    def metrics(self) -> str:
        """`GET /metrics`: Prometheus's text format (`mesh.metrics.read_exposition` reads it)."""
        response = self._send("GET", "/metrics")
        if response.status_code >= 400:
            self._json(response)  # raises the mesh's error
        return response.text

    # -- store ----------------------------------------------------------------------------
    def specialists(self, query: str | None = None) -> list[dict[str, Any]]:
        params = {"q": query} if query else None
        return list(self._json(self._send("GET", "/v1/specialists", params=params))["data"])

    def specialist(self, name: str) -> dict[str, Any]:
        return self._json(self._send("GET", f"/v1/specialists/{name}"))

    def publish(
        self,
        manifest_yaml: str,
        token: str | None = None,
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Publish (201), or with `dry_run` only the quality gate's report (200); a publish
        that installs and fails the gate raises `QualityGateError` unless `force`."""
        headers = {"Content-Type": "application/yaml", **_bearer(token)}
        response = self._send(
            "POST",
            "/v1/specialists",
            content=manifest_yaml,
            headers=headers,
            params=_gate_params(force, dry_run),
        )
        return self._json(response)

    def install(
        self,
        name: str,
        token: str | None = None,
        version: str = "latest",
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        body = {"version": version}
        response = self._send(
            "POST",
            f"/v1/specialists/{name}/install",
            json=body,
            headers=_bearer(token),
            params=_gate_params(force, dry_run),
        )
        return self._json(response)

    def uninstall(self, name: str, token: str | None = None) -> dict[str, Any]:
        response = self._send("DELETE", f"/v1/specialists/{name}/install", headers=_bearer(token))
        return self._json(response)

    def scale(self, name: str, replicas: int, token: str | None = None) -> dict[str, Any]:
        body = {"replicas": replicas}
        response = self._send(
            "POST", f"/v1/specialists/{name}/scale", json=body, headers=_bearer(token)
        )
        return self._json(response)

    def feedback(self, completion_id: str, rating: str) -> dict[str, Any]:
        body = {"id": completion_id, "rating": rating}
        return self._json(self._send("POST", "/v1/feedback", json=body))

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None

    def _unreachable(self, error: Exception) -> UnavailableError:
        return UnavailableError(
            f"no mesh answers at {self.base_url} ({error}); start one with 'mesh up' "
            "or set MESH_PORT / --url"
        )

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"error": {"message": response.text[:500]}}
        if response.status_code >= 400:
            error = body.get("error", {})
            message = error.get("message", f"HTTP {response.status_code}")
            kind = _TYPE_ERRORS.get(error.get("type", "")) or _STATUS_ERRORS.get(
                response.status_code, MeshError
            )
            raise kind(message)
        return dict(body)
