"""The operator's engine settings: threads per CPU engine replica, and the console line `mesh up`
shows while a replica converts a model to ONNX."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mesh.controller import source_options
from mesh.runtime import wait_ready
from mesh.settings import MeshSettings
from registry import parse_manifest
from specialists.catalog import SMOLLM2_SOURCE
from specialists.onnx_build import building, conversions_running
from specialists.onnx_engine import OnnxGenAIEngine
from specialists.sources import SourceOptions
from tests.conftest import manifest_data


def _onnx_manifest():  # type: ignore[no-untyped-def]
    model = {"engine": "onnx", "source": SMOLLM2_SOURCE}
    return parse_manifest(manifest_data(name="threads", model=model))


def test_engine_threads_go_from_the_settings_to_the_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray gives a fractional-CPU replica
    options = source_options("redis://store", MeshSettings(engine_threads=2))
    assert options.engine_threads == 2
    assert OnnxGenAIEngine(_onnx_manifest(), options).threads == 2
    assert OnnxGenAIEngine(_onnx_manifest(), SourceOptions()).threads == 1  # Ray's, unset


@pytest.mark.parametrize("threads", [0, -1, 257])
def test_engine_threads_out_of_range_are_refused(threads: int) -> None:
    with pytest.raises(ValueError, match="engine_threads"):
        MeshSettings(engine_threads=threads)


def test_conversions_running_names_the_entries_being_built(tmp_path: Path) -> None:
    assert conversions_running(tmp_path) == []  # no onnx folder yet
    entry = tmp_path / "onnx" / "SmolLM2-abc123"
    entry.parent.mkdir()
    with building(entry):
        assert conversions_running(tmp_path) == ["SmolLM2-abc123"]
    assert conversions_running(tmp_path) == []


class _Health(BaseHTTPRequestHandler):
    """/healthz of a mesh whose `general` is deploying until `ready` is set."""

    ready = threading.Event()

    def do_GET(self) -> None:
        ready = self.ready.is_set()
        status = "RUNNING" if ready else "DEPLOYING"
        body = json.dumps({"status": "ok", "specialists": {"general": {"status": status}}})
        self.send_response(200 if ready else 503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    _Health.ready.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_mesh_up_says_when_a_replica_converts_a_model(health_server: str, tmp_path: Path) -> None:
    lines: list[str] = []
    entry = tmp_path / "onnx" / "SmolLM2-abc123"
    entry.parent.mkdir()

    def progress(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:  # the conversion ended: the specialist comes up
            _Health.ready.set()

    waiting = threading.Thread(
        target=wait_ready,
        args=(health_server, 30, progress, threading.Event()),
        kwargs={"cache_dir": tmp_path},
    )
    with building(entry):
        waiting.start()
        while not lines and waiting.is_alive():
            waiting.join(0.1)
    waiting.join(30)
    assert "converting to ONNX int8 once, cached: SmolLM2-abc123" in lines[0]
    assert "converting" not in lines[1] and "general: DEPLOYING" in lines[1]
