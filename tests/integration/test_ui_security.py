"""The UI is no way around the store's rules: Gradio's API, called as any client can, on a mesh.

Store writes through the UI need the caller's own token (an empty, wrong or other owner's token is
refused by the gateway and nothing changes); a publish names no server file; with MESH_API_KEYS
every UI route needs a key, and the UI server's own key opens reads, never writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mesh.launcher import MeshProcess, running_mesh
from tests.conftest import manifest_data, seed_onnx_cache
from tests.integration.conftest import (
    ADMIN_TOKEN,
    STARTUP_TIMEOUT_S,
    RunningMesh,
    get_json,
    owner_token,
)

pytestmark = pytest.mark.slow
BAD_TOKENS = {"empty": "", "wrong": "msh_not_a_token"}  # + another owner's, per test


def tool_manifest(path: Path, name: str, owner: str, version: str = "1.0.0") -> Path:
    data = manifest_data(
        name=name,
        version=version,
        owner=owner,
        description="Adds numbers exactly (a math tool), published through the UI.",
        model={"engine": "tool", "source": "math"},
        resources={"num_cpus": 0.05},
    )
    path.write_text(yaml.safe_dump(data))
    return path


class GradioApi:
    """Gradio's HTTP API as any caller can use it: one session, events by name or index."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.ui = f"{base_url}/ui"
        self.http = httpx.Client(headers=headers or {}, timeout=120)
        self.session = uuid.uuid4().hex
        self.config: dict[str, Any] = self.http.get(f"{self.ui}/config").raise_for_status().json()

    def fn_index(self, trigger: str) -> int:
        """The event fired by `trigger` (e.g. 'tick'), private ones included."""
        for index, dependency in enumerate(self.config["dependencies"]):
            if any(event == trigger for _, event in dependency.get("targets", [])):
                return int(dependency.get("id", index))
        raise AssertionError(f"no event for {trigger}")

    def call(self, api_name: str, *data: Any, fn_index: int | None = None) -> httpx.Response:
        body: dict[str, Any] = {"data": list(data), "session_hash": self.session}
        if fn_index is not None:
            body["fn_index"] = fn_index
        return self.http.post(f"{self.ui}/gradio_api/run/{api_name}", json=body)

    def outcome(self, api_name: str, *data: Any) -> str:
        response = self.call(api_name, *data)
        assert response.status_code == 200, response.text
        return str(response.json()["data"][0])

    def upload(self, path: Path) -> dict[str, Any]:
        files = {"files": (path.name, path.read_bytes(), "application/yaml")}
        response = self.http.post(f"{self.ui}/gradio_api/upload", files=files)
        assert response.status_code == 200, response.text
        meta = {"_type": "gradio.FileData"}
        return {"path": response.json()[0], "orig_name": path.name, "meta": meta}


# -- with MESH_API_KEYS (first, and class-scoped: its mesh stops before the shared one starts) --
KEY = "ui-test-key"


@pytest.fixture(scope="class")
def keyed_mesh(tmp_path_factory: pytest.TempPathFactory, onnx_cache: Path) -> Iterator[MeshProcess]:
    env = {"MESH_API_KEYS": json.dumps([KEY]), "MESH_ADMIN_TOKEN": ADMIN_TOKEN}
    home = tmp_path_factory.mktemp("keyed-mesh-home")
    seed_onnx_cache(onnx_cache, home / "artifacts")
    try:
        with running_mesh(home, env=env, timeout_s=STARTUP_TIMEOUT_S) as process:
            yield process
    except (RuntimeError, TimeoutError) as error:
        pytest.fail(str(error))


class TestWithApiKeys:
    def test_every_ui_route_needs_a_key(self, keyed_mesh: MeshProcess) -> None:
        ui = f"{keyed_mesh.base_url}/ui"
        for path in ("/", "/config", "/gradio_api/info", "/theme.css"):
            assert httpx.get(ui + path, timeout=30).status_code == 401, path
        assert httpx.get(f"{ui}/gradio_api/file=/etc/hostname", timeout=30).status_code == 401
        page = httpx.get(ui + "/", headers={"accept": "text/html"}, timeout=30)
        assert page.status_code == 401 and "?key=" in page.text
        refused = httpx.post(f"{ui}/gradio_api/run/publish", json={"data": [None, ""]}, timeout=30)
        assert refused.status_code == 401
        assert httpx.get(f"{ui}/?key=wrong", timeout=30).status_code == 401

        browser = httpx.Client(timeout=60)
        visit = browser.get(f"{ui}/?key={KEY}&token=abc", follow_redirects=False)
        assert visit.status_code == 303 and visit.headers["location"] == "/ui/?token=abc"
        assert "HttpOnly" in visit.headers["set-cookie"]
        assert browser.get(f"{ui}/?token=abc").status_code == 200, "the cookie opens the UI"
        bearer = httpx.get(f"{ui}/", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert bearer.status_code == 200

    def test_every_gateway_route_needs_a_key_and_a_key_writes_nothing(
        self, keyed_mesh: MeshProcess
    ) -> None:
        base = keyed_mesh.base_url
        key = {"Authorization": f"Bearer {KEY}"}
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        reads = ["/v1/models", "/v1/specialists", "/v1/specialists/code", "/healthz"]
        for path in reads:
            assert httpx.get(base + path, timeout=30).status_code == 401, path
            wrong = httpx.get(base + path, headers={"Authorization": "Bearer nope"}, timeout=30)
            assert wrong.status_code == 401, path
            assert httpx.get(base + path, headers=key, timeout=30).status_code == 200, path
            assert httpx.get(base + path, headers=admin, timeout=30).status_code == 200, path
        chat = {"model": "math", "messages": [{"role": "user", "content": "2+2"}]}
        url = f"{base}/v1/chat/completions"
        assert httpx.post(url, json=chat, timeout=60).status_code == 401
        assert httpx.post(url, json=chat, headers=key, timeout=60).status_code == 200
        route = httpx.post(f"{base}/v1/route", json={"text": "hi"}, timeout=30)
        assert route.status_code == 401
        embeddings, body = f"{base}/v1/embeddings", {"input": "hi"}
        assert httpx.post(embeddings, json=body, timeout=30).status_code == 401
        wrong = httpx.post(
            embeddings, json=body, headers={"Authorization": "Bearer no"}, timeout=30
        )
        assert wrong.status_code == 401
        assert httpx.post(embeddings, json=body, headers=key, timeout=60).status_code == 200
        writes = [
            ("POST", "/v1/specialists", {"name": "x"}),
            ("POST", "/v1/specialists/code/install", {}),
            ("DELETE", "/v1/specialists/code/install", None),
            ("POST", "/v1/specialists/code/scale", {"replicas": 2}),
            ("DELETE", "/v1/specialists/code", None),
        ]
        for method, path, body in writes:
            for headers in ({}, key):  # an API key lets you use the mesh, not change it
                response = httpx.request(
                    method, base + path, json=body, headers=headers, timeout=30
                )
                assert response.status_code == 401, (method, path, headers, response.text)
        listing = httpx.get(f"{base}/v1/specialists/code", headers=key, timeout=30).json()
        assert listing["installed"], "nothing changed"

    def test_the_ui_reads_with_its_key_and_writes_only_with_yours(
        self, keyed_mesh: MeshProcess, tmp_path: Path
    ) -> None:
        api = GradioApi(keyed_mesh.base_url, headers={"Authorization": f"Bearer {KEY}"})
        cards = api.outcome("search", "")
        assert "data-name='code'" in cards, "the UI server reads the store with its own key"
        manifest = tool_manifest(tmp_path / "k.yaml", "ui-keyed-adder", "ui-keyed")
        assert "Not published" in api.outcome("publish", api.upload(manifest), "")
        shown = api.outcome("uninstall", "code", KEY)  # an API key is not a store token
        assert "Uninstall refused" in shown
        code = httpx.get(
            f"{keyed_mesh.base_url}/v1/specialists/code",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        ).json()
        assert code["installed"], "nothing changed"
        shown = api.outcome("publish", api.upload(manifest), ADMIN_TOKEN)
        assert "Published `ui-keyed-adder@1.0.0`" in shown, shown


# -- on the shared mesh -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokens(mesh: RunningMesh) -> dict[str, str]:
    return {owner: owner_token(mesh, owner) for owner in ("ui-alice", "ui-bob")}


def specialist(mesh: RunningMesh, name: str) -> dict[str, Any] | None:
    response = httpx.get(f"{mesh.base_url}/v1/specialists/{name}", timeout=30)
    return dict(response.json()) if response.status_code == 200 else None


def test_publish_through_gradio_needs_the_callers_own_token(
    mesh: RunningMesh, tokens: dict[str, str], tmp_path: Path
) -> None:
    from gradio_client import Client, handle_file

    client = Client(
        f"{mesh.base_url}/ui/", verbose=False, analytics_enabled=False, download_files=False
    )
    alice_v1 = tool_manifest(tmp_path / "a1.yaml", "ui-alice-adder", "ui-alice")
    outcome = client.predict(handle_file(str(alice_v1)), tokens["ui-alice"], api_name="/publish")
    assert "Published `ui-alice-adder@1.0.0`" in outcome[0], outcome[0]
    assert "installed" not in outcome[0], "an owner's publish never installs"

    alice_v2 = tool_manifest(tmp_path / "a2.yaml", "ui-alice-adder", "ui-alice", "1.1.0")
    for label, token in {**BAD_TOKENS, "other owner": tokens["ui-bob"]}.items():
        shown = client.predict(handle_file(str(alice_v2)), token, api_name="/publish")[0]
        assert "refused" in shown.lower() or "not published" in shown.lower(), (label, shown)
        assert "Published" not in shown, label
    detail = specialist(mesh, "ui-alice-adder")
    assert detail is not None and detail["versions"] == ["1.0.0"], "refusals wrote nothing"
    assert not detail.get("installed")

    fresh = tool_manifest(tmp_path / "n.yaml", "ui-nobody-adder", "ui-nobody")
    for token in BAD_TOKENS.values():
        client.predict(handle_file(str(fresh)), token, api_name="/publish")
    assert specialist(mesh, "ui-nobody-adder") is None


def test_install_uninstall_and_scale_through_gradio_need_the_admin_token(
    mesh: RunningMesh, tokens: dict[str, str]
) -> None:
    api = GradioApi(mesh.base_url)
    api.outcome("search", "")  # this session's pickers now list the store, as in a browser
    api.call("tick", "", fn_index=api.fn_index("tick"))  # ... and the mesh tab's
    before = get_json(f"{mesh.base_url}/healthz")["specialists"]
    bad = {**BAD_TOKENS, "owner": tokens["ui-alice"]}
    for label, token in bad.items():
        shown = api.outcome("uninstall", "code", token)
        assert "Uninstall refused" in shown, (label, shown)
        shown = api.outcome("install", "writing", token)
        assert "Install refused" in shown, (label, shown)
        shown = api.outcome("scale", "general", 3, token)
        assert "Scale refused" in shown, (label, shown)
    code = specialist(mesh, "code")
    assert code is not None and code["installed"], "code is still installed"
    after = get_json(f"{mesh.base_url}/healthz")["specialists"]
    assert after["general"]["replicas"] == before["general"]["replicas"]
    assert set(after) == set(before)


def test_publish_through_gradio_reads_no_server_file(mesh: RunningMesh, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text(yaml.safe_dump(manifest_data(name="ui-leaked", description="MARKER-4711")))
    api = GradioApi(mesh.base_url)
    for path in (str(secret), "/etc/hostname", str(mesh.home / "mesh-up.log")):
        file_data = {"path": path, "meta": {"_type": "gradio.FileData"}}
        response = api.call("publish", file_data, ADMIN_TOKEN)
        assert "MARKER-4711" not in response.text and path not in response.text
        assert response.status_code >= 400 or "Not published" in response.text
    assert specialist(mesh, "ui-leaked") is None


def test_the_admin_token_url_prefills_only_that_browsers_token_box(mesh: RunningMesh) -> None:
    page = httpx.get(f"{mesh.base_url}/ui/?token=whatever", timeout=60)
    assert page.status_code == 200
    assert "whatever" not in page.text, "the token is filled in by the page's load event"
