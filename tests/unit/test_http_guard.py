"""The HTTP guard, the fair share and the admin token file: pure logic on a tiny ASGI app."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from mesh.admin_token import ensure_admin_token, read_admin_token, with_admin_token
from mesh.errors import install_error_handlers
from mesh.fair_share import FairShare
from mesh.health import health_body
from mesh.http_auth import client_id
from mesh.http_guard import GuardPolicy, HttpGuard, TokenBuckets
from mesh.settings import MeshSettings
from registry.errors import RateLimitedError


def guarded(policy: GuardPolicy) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.post("/v1/upload")
    async def upload(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    @app.get("/v1/ping")
    async def ping() -> dict:
        return {"ok": True}

    app.add_middleware(HttpGuard, policy=lambda: policy)
    return TestClient(app, base_url="http://127.0.0.1:8000")


def test_foreign_host_headers_are_refused_loopback_and_listed_pass() -> None:
    client = guarded(GuardPolicy(allowed_hosts=["mesh.internal"]))
    assert client.get("/v1/ping").status_code == 200
    assert client.get("/v1/ping", headers={"Host": "localhost:8000"}).status_code == 200
    assert client.get("/v1/ping", headers={"Host": "[::1]:8000"}).status_code == 200
    assert client.get("/v1/ping", headers={"Host": "mesh.internal"}).status_code == 200
    rebound = client.get("/v1/ping", headers={"Host": "evil.example:8000"})
    assert rebound.status_code == 421 and rebound.json()["error"]["param"] == "host"


def test_a_wildcard_bind_accepts_this_machines_names_not_any_host() -> None:
    import socket

    from mesh.http_guard import policy_from

    exposed = policy_from(MeshSettings(host="0.0.0.0"))
    client = guarded(exposed)
    assert (
        client.get("/v1/ping", headers={"Host": f"{socket.gethostname()}:8000"}).status_code == 200
    )
    assert client.get("/v1/ping", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/v1/ping", headers={"Host": "evil.example"}).status_code == 421
    assert client.get("/v1/ping", headers={"Host": "LOCALHOST."}).status_code == 200
    listed = guarded(GuardPolicy(host="0.0.0.0", allowed_hosts=["mesh.example"]))
    assert listed.get("/v1/ping", headers={"Host": "10.1.2.3"}).status_code == 421
    anything = guarded(GuardPolicy(host="0.0.0.0", allowed_hosts=["*"]))
    assert anything.get("/v1/ping", headers={"Host": "10.1.2.3"}).status_code == 200


def test_bodies_over_the_limit_are_413_before_the_route_reads_them() -> None:
    client = guarded(GuardPolicy(max_body_bytes=100))
    assert client.post("/v1/echo", json={"x": "a" * 10}).status_code == 200
    big = client.post("/v1/echo", json={"x": "a" * 200})
    assert big.status_code == 413 and "larger than 100 bytes" in big.json()["error"]["message"]

    def chunks():  # no Content-Length: counted while it streams in
        for _ in range(10):
            yield b'{"x": "' + b"a" * 50 + b'"}'

    streamed = client.post(
        "/v1/echo", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413

    def small():  # chunked and under the limit: replayed to the route whole
        yield b'{"x": '
        yield b'"abc"}'

    fine = client.post("/v1/echo", content=small(), headers={"Content-Type": "application/json"})
    assert fine.status_code == 200 and fine.json() == {"bytes": 12}


def test_write_routes_take_json_not_what_a_browser_sends_cross_site() -> None:
    client = guarded(GuardPolicy(uploads={"/v1/upload": (("application/x-tar",), 1000)}))
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        refused = client.post("/v1/echo", content=b'{"a": 1}', headers={"Content-Type": kind})
        assert refused.status_code == 415, kind
    assert client.post("/v1/echo", json={"a": 1}).status_code == 200
    tar = client.post(
        "/v1/upload", content=b"x" * 500, headers={"Content-Type": "application/x-tar"}
    )
    assert tar.status_code == 200, "a route's declared upload type and its own limit"
    assert client.post("/v1/echo", content=b"").status_code == 200, "no body, no type needed"


def test_rate_limit_is_per_client_with_retry_after() -> None:
    client = guarded(GuardPolicy(rate_limit_per_minute=3, api_keys=["alice-key", "bob-key"]))
    alice = {"Authorization": "Bearer alice-key"}
    assert [client.get("/v1/ping", headers=alice).status_code for _ in range(3)] == [200] * 3
    limited = client.get("/v1/ping", headers=alice)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert client.get("/v1/ping", headers={"Authorization": "Bearer bob-key"}).status_code == 200
    made_up = {"Authorization": "Bearer anything-new"}
    assert client.get("/v1/ping", headers=made_up).status_code == 200, "its address's bucket"
    assert client.get("/v1/ping", headers=made_up).status_code == 200
    assert client.get("/v1/ping", headers=made_up).status_code == 200
    assert client.get("/v1/ping", headers=made_up).status_code == 429, "a new token buys nothing"


def test_token_buckets_refill_over_time() -> None:
    buckets = TokenBuckets(per_minute=60)
    for _ in range(60):
        assert buckets.take("c", now=0.0) == 0.0
    assert buckets.take("c", now=0.0) > 0
    assert buckets.take("c", now=1.0) == 0.0, "one request a second comes back"
    assert TokenBuckets(per_minute=0).take("c") == 0.0, "0 turns the limit off"


def test_fair_share_caps_one_client_per_specialist_and_releases_once() -> None:
    share = FairShare(per_client=2)
    first, second = share.acquire("a", "code"), share.acquire("a", "code")
    try:
        share.acquire("a", "code")
        raise AssertionError("a third open request must be refused")
    except RateLimitedError as error:
        assert error.status_code == 429
    share.acquire("b", "code")  # another client still gets in
    share.acquire("a", "writing")  # and the same client on another specialist
    first()
    first()  # idempotent: a double release must not free a slot twice
    share.acquire("a", "code")
    assert share.open[("a", "code")] == 2
    second()


def test_client_ids_never_hold_the_secret() -> None:
    ident = client_id("Bearer super-secret", "1.2.3.4", ["super-secret"])
    assert "super-secret" not in ident and ident.startswith("key:")
    assert client_id(None, "1.2.3.4", []) == "addr:1.2.3.4"
    assert client_id("Bearer not-a-key", "1.2.3.4", ["k"]) == "addr:1.2.3.4"


def test_admin_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = MeshSettings(home=tmp_path)
    assert read_admin_token(settings) is None
    token, created = ensure_admin_token(settings)
    assert created and token.startswith("msh_admin_")
    mode = stat.S_IMODE(os.stat(tmp_path / "admin_token").st_mode)
    assert mode == 0o600
    assert ensure_admin_token(settings) == (token, False)
    assert with_admin_token(settings).admin_token == token
    configured = MeshSettings(home=tmp_path, admin_token="from-env")
    assert ensure_admin_token(configured) == ("from-env", False), "the setting wins"


def test_health_hides_details_from_clients_and_degrades_on_failure() -> None:
    status = {
        "ready": True,
        "generation": 3,
        "registry_error": None,
        "specialists": {
            "code": {
                "status": "RUNNING",
                "version": "1",
                "message": "",
                "pending": None,
                "availability": "running",
                "replicas": [{"replica_id": "r1", "pid": 42, "node_id": "n1"}],
            },
            "broken": {
                "status": "DEPLOY_FAILED",
                "version": "1",
                "message": 'Traceback (most recent call last):\n  File "/srv/mesh/x.py"',
                "pending": None,
                "replicas": [],
            },
        },
    }
    public = health_body(status, detailed=False)
    assert public["status"] == "degraded"
    assert public["specialists"]["code"] == {
        "status": "RUNNING",
        "version": "1",
        "pending": None,
        "availability": "running",
        "replicas": 1,
    }
    assert "Traceback" not in str(public) and "/srv/" not in str(public)
    operator = health_body(status, detailed=True)
    assert operator["specialists"]["broken"]["message"].startswith("Traceback")
    status["specialists"]["broken"]["status"] = "RUNNING"
    assert health_body(status, detailed=False)["status"] == "ok"
    assert health_body({**status, "ready": False}, detailed=False)["status"] == "starting"
