"""One real mesh for the whole session: `mesh up` in a subprocess, on a free port."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mesh.launcher import MeshProcess, free_port, running_mesh
from registry.redis_server import EmbeddedRedis
from specialists.sources import SourceOptions
from tests.conftest import seed_onnx_cache

STARTUP_TIMEOUT_S = 900
ADMIN_TOKEN = "test-admin-token"
REDIS_RESTART_DELAY_S = 8


RunningMesh = MeshProcess


class OtlpReceiver:
    """A real OTLP/HTTP trace endpoint on loopback (what a collector receives), keeping the
    spans the mesh's processes export: (name, trace id, span id, parent id, attributes)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(_span_dict(span) for span in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def named(self, name: str) -> list[dict]:
        return [span for span in list(self.spans) if span["name"] == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _span_dict(span) -> dict:  # type: ignore[no-untyped-def]
    attributes = {}
    for item in span.attributes:
        value = item.value
        attributes[item.key] = (
            getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None
        )
    return {
        "name": span.name,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex() or None,
        "attributes": attributes,
    }


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def mesh(
    tmp_path_factory: pytest.TempPathFactory,
    engine_plugin: Path,
    onnx_cache: Path,
    otlp_receiver: OtlpReceiver,
) -> Iterator[RunningMesh]:
    home: Path = tmp_path_factory.mktemp("mesh-home")
    seed_onnx_cache(onnx_cache, home / "artifacts")
    env = {
        # A third-party engine package installed beside the mesh (see `engine_plugin`).
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(engine_plugin), os.environ.get("PYTHONPATH")])
        ),
        "MESH_ADMIN_TOKEN": ADMIN_TOKEN,
        "MESH_REDIS_RESTART_DELAY_S": str(REDIS_RESTART_DELAY_S),
        # The tests add a dozen small specialists to the catalog's six (and the adapters' pool):
        # more than 2 logical CPUs of replica reservations. Logical CPUs are Ray's scheduling
        # budget, not cores, so the test mesh declares 4 on this 2-core machine.
        "MESH_RAY_NUM_CPUS": "4",
        # Spans of every mesh process (gateway, replicas) go to a real OTLP endpoint.
        "MESH_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.endpoint,
    }
    try:
        with running_mesh(home, env=env, timeout_s=STARTUP_TIMEOUT_S) as process:
            yield process
    except (RuntimeError, TimeoutError) as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SourceOptions]:
    """A real Redis for `artifact:` sources, and a replica's cache folder."""
    root = tmp_path_factory.mktemp("artifacts")
    with EmbeddedRedis(root / "redis", port=free_port()) as server:
        yield SourceOptions(redis_url=server.url, cache_dir=str(root / "cache"))


def upload(options: SourceOptions, folder: Path) -> str:
    """What `mesh register` does with a local path: upload it, name it `artifact:<id>`."""
    return "artifact:" + options.store().upload_dir(folder)


def owner_token(mesh: MeshProcess, owner: str) -> str:
    """A store token for `owner`, issued the way an operator does: `mesh token create`."""
    from typer.testing import CliRunner

    from mesh.cli import app

    result = CliRunner().invoke(
        app, ["token", "create", "--owner", owner, "--json", "--token", ADMIN_TOKEN], env=mesh.env
    )
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["token"])


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 1.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def get_json(url: str) -> dict:
    return dict(httpx.get(url, timeout=30).json())
