"""The UI's own checks without a mesh: API keys and the key cookie, Host and body size, reading
uploads, errors without server paths, and the whole Gradio app refusing what it must."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

from mesh.settings import MeshSettings
from registry.errors import MeshError, NotFoundError
from ui.app import (
    COOKIE_NAME,
    GENERIC_ERROR,
    KeyGate,
    UiConfig,
    build_ui_asgi,
    cookie_value,
    public_message,
    redact_paths,
    token_from_query,
)
from ui.mesh_tab import replica_summary
from ui.store_tab import UploadRefused, impact_markdown, read_upload

KEY = "k1-secret-key"
HTML = {"accept": "text/html,application/xhtml+xml"}


def gated(keys: list[str]) -> TestClient:
    app = FastAPI()

    @app.get("/{rest:path}")
    def anything(rest: str) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.add_middleware(KeyGate, api_keys=keys)
    return TestClient(app, base_url="http://127.0.0.1")


# -- KeyGate ----------------------------------------------------------------------------------
def test_without_api_keys_the_ui_is_open() -> None:
    assert gated([]).get("/anything").text == "ok"


def test_without_a_key_a_page_gets_a_401_page_and_an_api_call_json() -> None:
    client = gated([KEY])
    page = client.get("/", headers=HTML)
    assert page.status_code == 401 and "text/html" in page.headers["content-type"]
    assert "?key=" in page.text and KEY not in page.text
    api = client.get("/gradio_api/info")
    assert api.status_code == 401 and api.json()["error"]["type"] == "authentication_error"
    assert api.headers["www-authenticate"].startswith("Bearer")


def test_a_bearer_key_passes_and_a_wrong_one_does_not() -> None:
    client = gated([KEY, "other"])
    assert client.get("/x", headers={"Authorization": f"Bearer {KEY}"}).text == "ok"
    assert client.get("/x", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/x", headers={"Authorization": KEY}).status_code == 401


def test_the_key_url_sets_a_strict_httponly_cookie_and_drops_the_key() -> None:
    client = gated([KEY])
    first = client.get(f"/?key={KEY}&token=abc", follow_redirects=False)
    assert first.status_code == 303
    assert first.headers["location"] == "/?token=abc", "key gone, other parameters kept"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert KEY not in cookie, "the cookie is derived from the key, not the key itself"
    assert client.get("/?token=abc").text == "ok", "the cookie now opens every route"
    assert client.get("/gradio_api/config").text == "ok"


def test_the_key_url_keeps_the_root_path_serve_mounts_the_ui_under() -> None:
    app = KeyGate(PlainTextResponse("ok"), [KEY])
    client = TestClient(app, base_url="http://127.0.0.1", root_path="/ui")
    first = client.get(f"/ui/?key={KEY}", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/ui/"
    assert "Path=/ui" in first.headers["set-cookie"]


def test_a_wrong_key_url_or_a_forged_cookie_opens_nothing() -> None:
    client = gated([KEY])
    wrong = client.get("/?key=guess", follow_redirects=False)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    client.cookies.set(COOKIE_NAME, KEY)
    assert client.get("/").status_code == 401
    client.cookies.set(COOKIE_NAME, cookie_value("guess"))
    assert client.get("/").status_code == 401


# -- what the UI server is given ----------------------------------------------------------------
def test_the_ui_config_carries_no_store_credential() -> None:
    settings = MeshSettings(
        admin_token="adm-secret", token="owner-secret", api_keys=["k1", "k2"], port=8123
    )
    config = UiConfig.from_settings(settings)
    assert "adm-secret" not in repr(config) and "owner-secret" not in repr(config)
    assert config.gateway_url == "http://127.0.0.1:8123"
    assert config.gateway_key == "k1"


def test_the_token_url_parameter_fills_the_token_box() -> None:
    assert token_from_query({"token": " msh_abc "}) == "msh_abc"
    assert token_from_query({}) == ""


# -- reading uploads --------------------------------------------------------------------------
@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    root = tmp_path / "gradio"
    (root / "abc").mkdir(parents=True)
    return root


def test_an_uploaded_manifest_is_read(uploads: Path) -> None:
    manifest = uploads / "abc" / "m.yaml"
    manifest.write_text("name: demo\n")
    assert read_upload(str(manifest), uploads) == "name: demo\n"


def test_a_file_gradio_did_not_receive_by_upload_is_refused(uploads: Path) -> None:
    uploaded, copied = uploads / "abc" / "m.yaml", uploads / "abc" / "hostname.yaml"
    uploaded.write_text("name: demo\n")
    copied.write_text("SECRET")  # what Gradio makes of a server path named in an API call
    record = {str(uploaded)}
    assert read_upload(str(uploaded), uploads, was_uploaded=record.__contains__)
    with pytest.raises(UploadRefused):
        read_upload(str(copied), uploads, was_uploaded=record.__contains__)


def test_a_file_outside_the_upload_folder_is_refused(uploads: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("SECRET")
    for path in (str(secret), str(uploads / "abc" / ".." / ".." / "secret.yaml"), "/etc/hostname"):
        with pytest.raises(UploadRefused) as refused:
            read_upload(path, uploads)
        assert "SECRET" not in str(refused.value) and path not in str(refused.value)


def test_symlinks_directories_and_missing_files_are_refused(uploads: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.yaml"
    outside.write_text("SECRET")
    inside = uploads / "abc" / "real.yaml"
    inside.write_text("name: demo\n")
    (uploads / "abc" / "out.yaml").symlink_to(outside)
    (uploads / "abc" / "in.yaml").symlink_to(inside)
    for name in ("out.yaml", "in.yaml", "missing.yaml", ""):
        with pytest.raises(UploadRefused):
            read_upload(str(uploads / "abc" / name), uploads)
    with pytest.raises(UploadRefused):
        read_upload(None, uploads)


def test_large_or_binary_uploads_are_refused(uploads: Path) -> None:
    big = uploads / "abc" / "big.yaml"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(UploadRefused, match="larger than 1 KiB"):
        read_upload(str(big), uploads, max_bytes=1024)
    binary = uploads / "abc" / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UploadRefused, match="UTF-8"):
        read_upload(str(binary), uploads)


# -- errors as shown --------------------------------------------------------------------------
def test_errors_show_no_server_paths_or_tracebacks() -> None:
    shown = public_message(MeshError("cannot read /home/alice/.mesh/artifacts/x.bin: denied"))
    assert "/home/alice" not in shown and "<server path>" in shown
    assert "cannot read" in shown
    kept = public_message(NotFoundError("POST /v1/specialists/x/install: no such specialist"))
    assert "/v1/specialists/x/install" in kept, "URL paths are not server paths"
    url = redact_paths("no mesh answers at http://127.0.0.1:8000/v1 (refused)")
    assert "http://127.0.0.1:8000/v1" in url
    traceback = MeshError('Traceback (most recent call last):\n  File "/x.py"')
    assert public_message(traceback) == GENERIC_ERROR
    assert public_message(KeyError("/etc/shadow")) == GENERIC_ERROR


def test_the_mesh_table_reads_public_and_operator_health() -> None:
    assert replica_summary(2) == (2, "")
    listed = [{"node_id": "abcdef0123"}, {"node_id": "abcdef0123"}]
    assert replica_summary(listed) == (2, "abcdef01")
    assert replica_summary(None) == (0, "")


# -- the whole UI app ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ui() -> Iterator[TestClient]:
    """The real UI app, pointed at a gateway that is not there (nothing here needs one)."""
    config = UiConfig("http://127.0.0.1:9", api_keys=(KEY,), max_body_bytes=2 * 2**20)
    with TestClient(build_ui_asgi(config), base_url="http://127.0.0.1") as client:
        yield client


AUTH = {"Authorization": f"Bearer {KEY}"}


def run(ui: TestClient, api_name: str, data: list[Any]) -> Any:
    """Call an event the way any API client can (Gradio's /run route)."""
    return ui.post(f"/gradio_api/run/{api_name}", headers=AUTH, json={"data": data})


def test_every_ui_route_needs_the_key(ui: TestClient) -> None:
    for path in ("/", "/gradio_api/info", "/gradio_api/config", "/assets/index.js", "/theme.css"):
        assert ui.get(path).status_code == 401, path
    assert ui.get("/gradio_api/file=/etc/hostname").status_code == 401
    assert ui.post("/gradio_api/upload", files={"files": ("m.yaml", b"x")}).status_code == 401
    assert ui.post("/gradio_api/run/publish", json={"data": [None, ""]}).status_code == 401
    assert ui.get("/", headers=AUTH).status_code == 200


def test_the_ui_checks_host_and_body_size(ui: TestClient) -> None:
    rebinding = ui.get("/", headers={**AUTH, "host": "evil.example"})
    assert rebinding.status_code == 421
    huge = ui.post(
        "/gradio_api/upload", headers={**AUTH, "content-length": str(64 * 2**20)}, content=b""
    )
    assert huge.status_code == 413


def test_publish_through_the_api_never_reads_a_server_path(ui: TestClient, tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("name: TOP-SECRET-MARKER\n")
    hostname = Path("/etc/hostname")
    markers = ["TOP-SECRET-MARKER"]
    if hostname.exists() and hostname.read_text().strip():
        markers.append(hostname.read_text().strip())
    for path in (str(secret), str(hostname)):
        file_data = {"path": path, "meta": {"_type": "gradio.FileData"}}
        response = run(ui, "publish", [file_data, "some-token"])
        assert response.status_code >= 400, response.text
        assert path not in response.text
        assert not any(marker in response.text for marker in markers)


def test_publish_without_a_token_is_refused_before_the_gateway(ui: TestClient) -> None:
    uploaded = ui.post(
        "/gradio_api/upload", headers=AUTH, files={"files": ("m.yaml", b"name: demo\n")}
    )
    assert uploaded.status_code == 200, uploaded.text
    path = uploaded.json()[0]
    file_data = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "m.yaml"}
    for token in ("", "   ", None):
        outcome = run(ui, "publish", [file_data, token]).json()["data"][0]
        assert "Not published" in outcome and "token" in outcome
        for event in ("impact", "publish_force"):  # the gate's check and "Publish anyway"
            shown = run(ui, event, [file_data, token]).json()["data"][0]
            assert "token" in shown and "Published" not in shown, event
    assert os.path.exists(path)


def test_the_impact_report_renders_escaped() -> None:
    victim = {"name": "code", "taken": 2, "labelled": 4, "share": 0.5, "samples": ["<b>x</b> | y"]}
    impact = {"summary": "copy@1.0.0 takes 50% of `code`'s labelled queries", "victims": [victim]}
    shown = impact_markdown(impact, "the quality gate refuses it")
    assert "| code | 2 | 4 | 50% | &lt;b&gt;x&lt;/b&gt; &#124; y |" in shown
    assert shown.endswith("the quality gate refuses it")
