"""`MeshClient`: a small HTTP client of the gateway, shared by the CLI and the UI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from registry.errors import InvalidRequestError, MeshError, NotFoundError, UnavailableError

_STATUS_ERRORS: dict[int, type[MeshError]] = {
    400: InvalidRequestError,
    404: NotFoundError,
    503: UnavailableError,
}


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

    def health(self) -> dict[str, Any]:
        response = self._send("GET", "/healthz")
        return dict(response.json())

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
            message = body.get("error", {}).get("message", f"HTTP {response.status_code}")
            raise _STATUS_ERRORS.get(response.status_code, MeshError)(message)
        return dict(body)
