"""One real mesh for the whole session: `mesh up` in a subprocess, on a free port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

STARTUP_TIMEOUT_S = 900
ADMIN_TOKEN = "test-admin-token"
REDIS_RESTART_DELAY_S = 8


@dataclass
class RunningMesh:
    base_url: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """What a CLI call needs to reach this mesh and its store."""
        return {
            "MESH_HOME": str(self.home),
            "MESH_PORT": self.base_url.rsplit(":", 1)[1],
            "MESH_ADMIN_TOKEN": ADMIN_TOKEN,
        }

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    home = tmp_path_factory.mktemp("mesh-home")
    port = free_port()
    log = home / "mesh-up.log"
    env = {
        **os.environ,
        "MESH_HOME": str(home),
        "MESH_PORT": str(port),
        "MESH_ADMIN_TOKEN": ADMIN_TOKEN,
        "MESH_REDIS_RESTART_DELAY_S": str(REDIS_RESTART_DELAY_S),
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("MESH_REDIS_URL", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mesh", "up"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    running = RunningMesh(f"http://127.0.0.1:{port}", home, process, log)
    try:
        _wait_ready(running)
        yield running
    finally:
        _stop(running)


def _wait_ready(running: RunningMesh) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            pytest.fail(f"mesh up exited with {running.process.returncode}:\n{running.log_tail()}")
        if "mesh ready" in running.log.read_text(errors="replace"):
            return
        time.sleep(1.0)
    pytest.fail(f"mesh not ready after {STARTUP_TIMEOUT_S}s:\n{running.log_tail()}")


def _stop(running: RunningMesh) -> None:
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGINT)
        try:
            running.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


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
