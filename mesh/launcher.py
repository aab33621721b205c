"""Run `mesh up` as a child process on a free port: for tests, benchmarks and scripts.

The child is the real thing (embedded Redis, Ray, Serve, the catalog), so what this starts is
exactly what `make run` starts, only on another port and data dir.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY_LINE = "mesh ready"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


BIND_FAILURE = "Failed to bind to address"
BIND_ATTEMPTS = 3


@dataclass
class MeshProcess:
    base_url: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    extra_env: dict[str, str]

    @property
    def env(self) -> dict[str, str]:
        """Environment for a CLI call that should reach this mesh and its store."""
        port = self.base_url.rsplit(":", 1)[1]
        return {"MESH_HOME": str(self.home), "MESH_PORT": port, **self.extra_env}

    @property
    def admin_token(self) -> str:
        """The operator's token: configured in the env, or the one `mesh up` generated."""
        from mesh.admin_token import read_admin_token
        from mesh.settings import MeshSettings

        settings = MeshSettings(home=self.home, admin_token=self.extra_env.get("MESH_ADMIN_TOKEN"))
        token = read_admin_token(settings)
        if token is None:
            raise RuntimeError(f"no admin token under {self.home}")
        return token

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mesh up exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if READY_LINE in self.log.read_text(errors="replace"):
                return
            time.sleep(1.0)
        raise TimeoutError(f"mesh not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 120) -> int:
        """Ctrl-C, as a user would; kill only if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


@contextmanager
def running_mesh(
    home: Path,
    *,
    env: dict[str, str] | None = None,
    ui: bool = True,
    timeout_s: float = 900,
    address: str | None = None,
    redis_url: str | None = None,
) -> Iterator[MeshProcess]:
    """`mesh up` on a free port until ready; stopped (Ctrl-C) on exit. A port taken by another
    process between choosing and binding it (Ray's own workers pick ports too) is retried on
    a new port: it says nothing about the mesh. `address`: join that Ray cluster (`mesh up
    --address`); `redis_url`: use that Redis instead of starting the embedded one."""
    for attempt in range(BIND_ATTEMPTS):
        mesh = _launch(home, env, ui, address, redis_url)
        try:
            mesh.wait_ready(timeout_s)
        except RuntimeError:
            mesh.stop()
            if attempt + 1 < BIND_ATTEMPTS and BIND_FAILURE in mesh.log_tail(200):
                continue
            raise
        break
    try:
        yield mesh
    finally:
        mesh.stop()


def _launch(
    home: Path,
    env: dict[str, str] | None,
    ui: bool,
    address: str | None = None,
    redis_url: str | None = None,
) -> MeshProcess:
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log = home / "mesh-up.log"
    child_env = {
        **os.environ,
        "MESH_HOME": str(home),
        "MESH_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    child_env.pop("MESH_REDIS_URL", None)
    if redis_url:
        child_env["MESH_REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "mesh", "up", *([] if ui else ["--no-ui"])]
    if address:
        command += ["--address", address]
    # The log holds the admin token `mesh up` prints once: readable by this user only.
    log.touch(mode=0o600, exist_ok=True)
    log.chmod(0o600)
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=child_env, stdout=out, stderr=subprocess.STDOUT)
    return MeshProcess(f"http://127.0.0.1:{port}", home, process, log, dict(env or {}))
