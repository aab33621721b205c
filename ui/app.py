"""The Gradio UI: Chat, Store and Mesh tabs. It talks to the gateway's HTTP API only.

Served by Ray Serve at /ui on the same port as the API (`build_ui_app`), or standalone with
`python -m ui.app --url http://127.0.0.1:8000`. Either way the same ASGI app (`build_ui_asgi`)
serves it, behind the same checks:

- the UI holds no privileged credential: store writes carry the token its user typed, and the
  admin token never reaches the UI process (`UiConfig` has no field for it);
- `HttpGuard` (Host allow-list against DNS rebinding, a body cap for manifest uploads);
- `KeyGate`: with `MESH_API_KEYS`, every route under /ui needs a key, as a Bearer header or as
  the cookie a visit to `/ui/?key=<key>` sets (like a notebook server's token URL);
- Gradio's "was this file uploaded by a user" check, which a mounted app otherwise skips;
- errors shown without tracebacks or server paths (`public_message`).

No `from __future__ import annotations` here on purpose: Gradio finds the `gr.Request` parameter
of an event function from its evaluated annotation.
"""

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from mesh.client import MeshClient
from mesh.http_auth import bearer, is_api_key
from mesh.settings import MeshSettings
from registry.errors import MeshError
from specialists.serve_options import head_actor_options

log = logging.getLogger(__name__)

KEY_PARAM = "key"
TOKEN_PARAM = "token"
COOKIE_NAME = "mesh_ui_key"
COOKIE_CONTEXT = b"specialist-mesh ui cookie v1"
MANIFEST_MAX_BYTES = 1 * 2**20
GENERIC_ERROR = "something went wrong in the UI server (details are in its log)"
MAX_MESSAGE_CHARS = 2_000
# After the page has read ?token=, drop it from the address bar (and from the URL of every
# later Gradio request, which repeats the page's query string).
STRIP_TOKEN_JS = (
    "() => { const url = new URL(window.location.href);"
    f" if (url.searchParams.has('{TOKEN_PARAM}')) {{ url.searchParams.delete('{TOKEN_PARAM}');"
    " window.history.replaceState(null, '', url.toString()); } }"
)


@dataclass(frozen=True)
class UiConfig:
    """What the UI server needs from `MeshSettings`, and nothing more.

    No admin or store token travels to the UI process, so the UI cannot act with a privilege
    its user lacks: writes go out with the token typed into the page, or not at all."""

    gateway_url: str
    api_keys: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = 2 * 2**20

    @classmethod
    def from_settings(cls, settings: MeshSettings, gateway_url: str | None = None) -> "UiConfig":
        return cls(
            gateway_url=gateway_url or settings.base_url,
            api_keys=tuple(settings.api_keys),
            host=settings.host,
            allowed_hosts=tuple(settings.allowed_hosts),
            max_body_bytes=settings.max_body_bytes,
        )

    @property
    def gateway_key(self) -> str | None:
        """The key the UI server itself sends for reads and chat (the first API key)."""
        return self.api_keys[0] if self.api_keys else None


# -- errors as the page shows them ---------------------------------------------------------
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/\\-])/(?P<first>[\w.-]+)(?:/[\w.@+,=-]*)*")


@cache
def _root_entries() -> frozenset[str]:
    """Top-level directory names of this server: a '/x/...' starting with one is a path."""
    try:
        names = {entry.name for entry in Path("/").iterdir()}
    except OSError:
        names = set()
    return frozenset(names | {"home", "tmp", "etc", "usr", "var", "root", "opt", "srv", "proc"})


def redact_paths(text: str) -> str:
    """Hide server file paths ('/home/x/.mesh/...') but keep URL paths ('/v1/...')."""

    def hide(match: re.Match[str]) -> str:
        return "<server path>" if match.group("first") in _root_entries() else match.group(0)

    return _ABSOLUTE_PATH.sub(hide, text)


def public_message(error: BaseException) -> str:
    """What the page may say about an error: a mesh error's message without server paths;
    anything else (a bug, a traceback) only as a generic line, logged here in full."""
    if not isinstance(error, MeshError):
        log.error("UI error", exc_info=error)
        return GENERIC_ERROR
    text = error.message
    if "Traceback (most recent call last)" in text:
        log.error("UI error with a traceback: %s", text)
        return GENERIC_ERROR
    text = redact_paths(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + " ..."


def token_from_query(params: Mapping[str, str]) -> str:
    """The store token from `/ui/?token=...`: filled into this browser's token boxes only."""
    return (params.get(TOKEN_PARAM) or "").strip()


# -- API keys for the UI's own routes --------------------------------------------------------
Scope = MutableMapping[str, Any]
ASGIApp = Any  # (scope, receive, send) -> Awaitable[None]


def cookie_value(key: str) -> str:
    """The cookie proves the browser was given a key without being the key: a cookie that
    leaks (a shared profile, a proxy log) cannot be replayed as a Bearer key against /v1."""
    return hmac.new(key.encode(), COOKIE_CONTEXT, hashlib.sha256).hexdigest()


class KeyGate:
    """ASGI middleware: with API keys configured, every UI route needs one.

    Accepted: `Authorization: Bearer <key>`, or the cookie set by visiting any UI page with
    `?key=<key>` (HttpOnly, SameSite=Strict, then a redirect that drops the key from the URL).
    Anything else gets 401, pages and Gradio's API and static files alike."""

    def __init__(self, app: ASGIApp, api_keys: Sequence[str]) -> None:
        self.app = app
        self.api_keys = list(api_keys)
        self.cookies = {cookie_value(key) for key in self.api_keys}

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not self.api_keys:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        offered = [value for name, value in query if name == KEY_PARAM]
        if offered and scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            if is_api_key(self.api_keys, offered[-1]):
                await _redirect_with_cookie(scope, send, query, cookie_value(offered[-1]))
            else:
                await _deny(scope, send, headers)
            return
        if self.allows(headers):
            await self.app(scope, receive, send)
        else:
            await _deny(scope, send, headers)

    def allows(self, headers: Mapping[str, str]) -> bool:
        if is_api_key(self.api_keys, bearer(headers.get("authorization"))):
            return True
        presented = _cookies(headers.get("cookie", "")).get(COOKIE_NAME, "")
        return any(hmac.compare_digest(presented, value) for value in self.cookies)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, _, value in pairs if name}


def _public_path(scope: Scope) -> str:
    """The path the browser asked for: Serve mounts the UI under a root path (/ui)."""
    root, path = scope.get("root_path", ""), scope.get("path", "/")
    return path if root and path.startswith(root) else root + path


async def _redirect_with_cookie(
    scope: Scope, send: Any, query: list[tuple[str, str]], value: str
) -> None:
    rest = urlencode([(name, v) for name, v in query if name != KEY_PARAM])
    location = _public_path(scope) + (f"?{rest}" if rest else "")
    secure = "; Secure" if scope.get("scheme") in ("https", "wss") else ""
    cookie = (
        f"{COOKIE_NAME}={value}; Path={scope.get('root_path') or '/'}; HttpOnly; "
        f"SameSite=Strict{secure}"
    )
    headers = [
        (b"location", location.encode("latin-1")),
        (b"set-cookie", cookie.encode("latin-1")),
        (b"cache-control", b"no-store"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


UNAUTHORIZED_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>specialist-mesh: API key needed</title></head><body>
<h1>401: this UI needs an API key</h1>
<p>Open this page once as <code>/ui/?key=&lt;your API key&gt;</code> (the key is then kept in
a cookie for this browser), or send <code>Authorization: Bearer &lt;key&gt;</code>.</p>
</body></html>"""


async def _deny(scope: Scope, send: Any, headers: Mapping[str, str]) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    if "text/html" in headers.get("accept", ""):
        body, kind = UNAUTHORIZED_PAGE.encode(), b"text/html; charset=utf-8"
    else:
        message = "missing or invalid API key: send 'Authorization: Bearer <key>'"
        error = {"message": message, "type": "authentication_error", "param": None, "code": None}
        body, kind = json.dumps({"error": error}).encode(), b"application/json"
    response_headers = [
        (b"content-type", kind),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="specialist-mesh"'),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": 401, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


# -- the app -----------------------------------------------------------------------------------
def build_blocks(client: MeshClient) -> Any:
    """The three tabs on one page, talking to the gateway through `client`."""
    import gradio as gr

    from ui.chat import build_chat_tab, specialist_choices
    from ui.mesh_tab import build_mesh_tab
    from ui.store_tab import build_store_tab

    with gr.Blocks(title="specialist-mesh") as demo:
        gr.Markdown("# specialist-mesh\nOne front door, many specialists.")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat") as chat_tab:
                picker = build_chat_tab(client)
            with gr.Tab("Store", id="store") as store_tab:
                store = build_store_tab(client, lambda path: path in demo.upload_file_set)
            with gr.Tab("Mesh", id="mesh") as mesh_tab:
                mesh = build_mesh_tab(client)
        # poll the mesh only while someone looks at it
        mesh_tab.select(lambda: gr.Timer(active=True), outputs=mesh.timer, api_visibility="private")
        for other in (chat_tab, store_tab):
            other.select(
                lambda: gr.Timer(active=False), outputs=mesh.timer, api_visibility="private"
            )

        def prefill(request: gr.Request) -> tuple[Any, Any]:
            """`/ui/?token=...` fills this browser's token boxes; the server keeps nothing."""
            token = token_from_query(request.query_params)

            def fill() -> Any:
                return gr.update(value=token) if token else gr.update()

            return fill(), fill()  # a fresh dict for each box: Gradio edits them in place

        demo.load(lambda: specialist_choices(client), outputs=picker, api_visibility="private")
        demo.load(store.refresh, outputs=store.outputs, api_visibility="private")
        filled = demo.load(prefill, outputs=[store.token, mesh.token], api_visibility="private")
        filled.then(None, js=STRIP_TOKEN_JS)
    return demo


def build_ui_asgi(config: UiConfig) -> Any:
    """The UI as an ASGI app (FastAPI), with every check of the module docstring in place."""
    import gradio as gr
    from fastapi import FastAPI

    from mesh.http_guard import GuardPolicy, HttpGuard
    from ui.store_tab import CSS

    client = MeshClient(config.gateway_url, api_key=config.gateway_key, timeout_s=600)
    blocks = build_blocks(client)
    app = gr.mount_gradio_app(
        FastAPI(),
        blocks,
        path="",
        css=CSS,
        show_error=False,  # Gradio would show str(exception): paths, internals
        max_file_size=MANIFEST_MAX_BYTES,
        run_history=False,  # it would keep the typed store token in the browser's storage
    )
    # Gradio refuses input files that no user uploaded (a FileData naming /etc/passwd) only
    # for apps it launched itself; a mounted app would copy any server file into its cache.
    blocks.has_launched = True
    policy = GuardPolicy(
        host=config.host,
        allowed_hosts=list(config.allowed_hosts),
        max_body_bytes=max(config.max_body_bytes, MANIFEST_MAX_BYTES + 64 * 2**10),
        api_prefixes=(),  # Gradio posts multipart uploads and its own JSON: no type rule
    )
    app.add_middleware(KeyGate, api_keys=list(config.api_keys))
    app.add_middleware(HttpGuard, policy=lambda: policy)  # outermost: Host and size first
    return app


def build_ui_app(settings: MeshSettings) -> Any:
    """A Serve application serving the UI; `mesh up` mounts it at /ui."""
    from ray import serve

    from specialists.serve_options import keep_replica_on_loopback

    @serve.ingress()
    class ChatUI:
        def __init__(self, config: UiConfig) -> None:
            keep_replica_on_loopback()
            self.config = config

        def __serve_build_asgi_app__(self) -> Any:
            return build_ui_asgi(self.config)

    deployment = serve.deployment(
        ChatUI, name="ui", ray_actor_options=head_actor_options(0.1), max_ongoing_requests=100
    )
    return deployment.bind(UiConfig.from_settings(settings))  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - manual use
    """`python -m ui.app --url ...`: the same app as under `mesh up`, served by uvicorn."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="Run the mesh UI against a running gateway.")
    parser.add_argument("--url", default=None, help="gateway URL (default: from MESH_* env)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    # the gateway from --url or MESH_HOST/MESH_PORT; the Host check for where this listens
    config = replace(UiConfig.from_settings(MeshSettings(), args.url), host=args.host)
    uvicorn.run(build_ui_asgi(config), host=args.host, port=args.port)


if __name__ == "__main__":  # pragma: no cover - manual use
    main()
